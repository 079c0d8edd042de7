"""Evaluation: protocols, the AutoAttack cascade and the sanity checks, on a small trained model."""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import attacks, evaluate
from advjax.attacks.auto_attack import rand_stages, standard_stages


@pytest.fixture(scope='module')
def model_and_data(digits_model):
  logits_fn, x, y = digits_model
  images = np.asarray(jnp.round(x * 255), np.uint8).reshape(-1, 8, 8, 1)[:120]
  # evaluate() feeds [0, 1] images; the MLP flattens them itself, and takes its "params" as an unused argument.
  return (lambda params, v: logits_fn(v)), images, np.asarray(y[:120])


def test_protocol_rows_and_worst_case(model_and_data):
  logits_fn, images, labels = model_and_data
  result = evaluate.evaluate(logits_fn, {}, images, labels, 'dat', eps=0.1, batch_size=60)
  rows = {r['attack']: r for r in result['rows']}
  assert list(rows) == ['natural', 'FGSM', 'PGD-20', 'CW-30'] and result['examples'] == 120
  assert rows['natural']['accuracy'] > 90
  assert rows['PGD-20']['accuracy'] < rows['FGSM']['accuracy'] < rows['natural']['accuracy']
  cumulative = [r['cumulative'] for r in result['rows']]
  assert cumulative == sorted(cumulative, reverse=True)
  assert cumulative[-1] <= min(r['accuracy'] for r in result['rows'])
  assert result['warnings'] == []
  with pytest.raises(ValueError, match='unknown protocol'):
    evaluate.protocol_attacks('madry')


def test_autoattack_is_no_weaker_than_its_parts(model_and_data):
  logits_fn, images, labels = model_and_data
  x, y = jnp.asarray(images, jnp.float32) / 255, jnp.asarray(labels)
  fn = lambda v: logits_fn({}, v)
  settings = dict(steps=10, n_targets=3, square_queries=50)
  out = jax.jit(lambda x, y: attacks.autoattack(fn, x, y, jax.random.key(0), eps=0.1, **settings))(x, y)
  assert float(jnp.abs(out.x_adv - x).max()) <= 0.1 + 1e-6
  assert float(out.x_adv.min()) >= 0 and float(out.x_adv.max()) <= 1
  acc = lambda v: float((fn(v).argmax(-1) == y).mean())
  keys = attacks.parts.example_keys(jax.random.key(0), len(y))
  stages = standard_stages(0.1, **settings)
  parts_acc = [acc(jax.jit(lambda x, y, k: attack(fn, x, y, k).x_adv)(x, y, attacks.parts.fold_in(keys, i)))
               for i, (_, attack) in enumerate(stages)]
  assert acc(out.x_adv) <= min(parts_acc) < acc(x)
  robust = np.asarray(fn(out.x_adv).argmax(-1) == y)
  np.testing.assert_array_equal(np.asarray(out.x_adv)[robust], np.asarray(x)[robust])


def test_autoattack_carries_only_the_survivors_when_compacting(model_and_data):
  logits_fn, images, labels = model_and_data
  x, y = jnp.asarray(images[:40], jnp.float32) / 255, jnp.asarray(labels[:40])
  fn = lambda v: logits_fn({}, v)
  run = lambda compact: jax.jit(lambda x, y: attacks.autoattack(
      fn, x, y, jax.random.key(0), eps=0.1, steps=10, n_targets=3, square_queries=50, compact_min_size=compact))(x, y)
  whole, compacted = run(0), run(10)   # sizes 40, 20, 10
  np.testing.assert_array_equal(np.asarray(compacted.x_adv), np.asarray(whole.x_adv))
  np.testing.assert_array_equal(np.asarray(compacted.steps), np.asarray(whole.steps))
  assert 0 < int((fn(whole.x_adv).argmax(-1) == y).sum()) < 20   # the later stages ran on a smaller size


def test_sanity_warnings():
  x, y = jnp.linspace(0, 1, 2 * 16).reshape(2, 4, 4, 1), np.array([0, 1])
  probabilities = lambda params, v: jax.nn.softmax(v.reshape(2, -1)[:, :3])
  assert any('probabilities' in w for w in evaluate.sanity_warnings(probabilities, {}, x, y))
  calls = iter(range(100))
  randomised = lambda params, v: v.reshape(2, -1)[:, :3] + next(calls)   # a hidden counter
  assert any('randomised (5 forwards' in w for w in evaluate.sanity_warnings(randomised, {}, x, y))
  flat = lambda params, v: jnp.round(v.reshape(2, -1)[:, :3])   # round(): zero gradient everywhere
  assert any('2 of 2 sampled points have a zero loss gradient' in w
             for w in evaluate.sanity_warnings(flat, {}, x, y))
  static = lambda params, v: jax.nn.relu(v.reshape(2, -1)[:, :3] * 3 + 1)   # relu: a custom_jvp, not autodiff
  assert evaluate.sanity_warnings(static, {}, x, y) == []
  # A test-time optimising defence: one gradient step on its own loss inside the forward (the official check_dynamic).
  dynamic = lambda params, v: static(params, v - 0.1 * jax.grad(lambda u: static(params, u).sum())(v))
  for model in (dynamic, jax.jit(dynamic)):
    assert any('the forward differentiates' in w for w in evaluate.sanity_warnings(model, {}, x, y))


def test_square_warning_follows_the_official_threshold():
  rows = lambda *cumulative: [dict(attack=a, cumulative=c) for a, c in zip(('natural', 'APGD-CE', 'Square'),
                                                                              cumulative)]
  assert evaluate.square_warning(rows(90.0, 50.0, 49.7))   # 0.3 points: more than the official 0.2
  assert not evaluate.square_warning(rows(90.0, 50.0, 49.9))
  assert not evaluate.square_warning([dict(attack='natural', cumulative=90.0), dict(attack='Square', cumulative=40.0)])


def test_targeted_attacks_check_the_number_of_classes():
  stages = standard_stages(0.1, n_targets=9)
  with pytest.raises(evaluate.ProtocolError, match='APGD-T needs at least 4 classes'):
    evaluate.check_classes(stages, 3)
  assert evaluate.check_classes(stages, 10) == []
  warnings = evaluate.check_classes(stages, 5)
  assert [w.split()[0] for w in warnings] == ['APGD-T', 'FAB-T'] and 'it runs 4' in warnings[0]


SMALL_AA = standard_stages(0.1, steps=10, n_targets=3, square_queries=50)


def test_the_cascade_attacks_only_survivors_and_matches_every_attack_alone(model_and_data):
  """Each example's draws depend on its index, not its batch, so the cascade on the survivors ends with exactly the
  points that no attack run alone on every point breaks, after attacking fewer."""
  logits_fn, images, labels = model_and_data
  run = functools.partial(evaluate.evaluate, logits_fn, {}, images, labels, SMALL_AA, eps=0.1, batch_size=40)
  cascade, alone = run(individual=False), run(individual=True)
  assert cascade['robust'] == alone['robust'] and cascade['mode'] == 'cascade'
  for c, a in zip(cascade['rows'], alone['rows']):
    assert c['cumulative'] == a['cumulative']
  attacked = [r['attacked'] for r in cascade['rows']]
  natural_correct = round(cascade['rows'][0]['cumulative'] * len(labels) / 100)
  assert attacked[:2] == [len(labels), natural_correct] and attacked == sorted(attacked, reverse=True)
  assert attacked[-1] < attacked[1]
  assert [r['attacked'] for r in alone['rows'][1:]] == [natural_correct] * 4
  broken_by = np.asarray(cascade['broken_by'])
  assert [int((broken_by == k).sum()) for k in range(1, 5)] == [a - b for a, b in zip(attacked[1:], attacked[2:] +
                                                                                       [sum(cascade['robust'])])]
  np.testing.assert_array_equal(broken_by == -1, cascade['robust'])
  assert 0 < cascade['max_perturbation'] <= 0.1 + 1e-6 and cascade['invalid_points'] == 0


def test_a_killed_evaluation_goes_on_from_its_saved_batches(model_and_data, tmp_path):
  logits_fn, images, labels = model_and_data
  state = tmp_path / 'state.json'
  run = functools.partial(evaluate.evaluate, logits_fn, {}, images, labels, SMALL_AA[:2], eps=0.1, batch_size=40,
                          individual=False, state_path=str(state))
  straight = run()
  saved = json.loads(state.read_text())
  apgd_ce = saved['stages']['APGD-CE']
  flipped = int(np.flatnonzero(apgd_ce['correct'])[0])   # a point APGD-CE left robust, in its first batch
  assert flipped < 40
  apgd_ce['correct'][flipped] = False   # as if that batch had found it: shows the rerun reads the file
  for name in ('correct', 'delta', 'valid'):
    apgd_ce[name] = apgd_ce[name][:40]   # killed after APGD-CE's first batch
  del saved['stages']['APGD-T']
  state.write_text(json.dumps(saved))
  resumed = run()
  changed = [i for i, (a, b) in enumerate(zip(straight['robust'], resumed['robust'])) if a != b]
  assert len(changed) == 1 and not resumed['robust'][changed[0]]
  attacked = [r['attacked'] for r in straight['rows']]
  assert [r['attacked'] for r in resumed['rows']] == attacked[:2] + [attacked[2] - 1]   # one fewer for APGD-T
  state.write_text(json.dumps(saved))
  other = run(key=jax.random.key(1))   # other settings: the saved batches are not used
  assert len(json.loads(state.read_text())['stages']['APGD-CE']['correct']) == other['rows'][1]['attacked']


def test_custom_attack_lists(model_and_data):
  logits_fn, images, labels = model_and_data
  stages = evaluate.custom_attacks('fgsm, pgd-5, cw-5, apgd-ce', eps=0.1, step_size=0.025)
  assert [name for name, _ in stages] == ['FGSM', 'PGD-5', 'CW-5', 'APGD-CE']
  result = evaluate.evaluate(logits_fn, {}, images[:60], labels[:60], stages[:3], eps=0.1, batch_size=60)
  assert [r['attack'] for r in result['rows']] == ['natural', 'FGSM', 'PGD-5', 'CW-5']
  with pytest.raises(ValueError, match="unknown attack 'pgd'"):
    evaluate.custom_attacks('pgd', eps=0.1, step_size=0.025)


def test_robustbench_entry():
  assert [evaluate.eps_string(e) for e in (8 / 255, 0.5, 0.031, 1.0, 4 / 255)] == ['8/255', '0.5', '0.031', '1',
                                                                                   '4/255']
  result = dict(eps=0.5, norm='l2', examples=10000, rows=[dict(cumulative=90.123), dict(cumulative=70.0)])
  entry = evaluate.robustbench_entry(result, name='run', dataset='cifar10', architecture='wrn-28-10',
                                     version='standard', seed=0)
  assert (entry['threat_model'], entry['eps'], entry['clean_acc'], entry['autoattack_acc']) == ('L2', '0.5', '90.12',
                                                                                                '70.00')
  assert entry['n_examples'] == 10000 and entry['advjax_version']


def test_the_plus_version_runs_the_official_attacks_in_order():
  """`_set_version('plus')`: attacks_to_run apgd-ce, apgd-dlr, fab, square, apgd-t, fab-t; 5 restarts for APGD and
  FAB, 9 targets, 5000 queries; its L2 radius defaults to 0.5."""
  eps, stages = evaluate.protocol_attacks('aa_plus', None, 'l2')
  assert eps == 0.5 and [name for name, _ in stages] == ['APGD-CE', 'APGD-DLR', 'FAB', 'Square', 'APGD-T', 'FAB-T']
  settings = {name: attack.keywords for name, attack in stages}
  assert [settings[n]['restarts'] for n in ('APGD-CE', 'APGD-DLR', 'FAB')] == [5, 5, 5]
  assert settings['APGD-DLR']['loss'] == 'dlr' and settings['Square']['n_queries'] == 5000
  assert settings['APGD-T']['n_targets'] == settings['FAB-T']['n_targets'] == 9
  assert all(attack.keywords['norm'] == 'l2' for _, attack in stages)


def test_the_l1_standard_version_is_the_official():
  """`_set_version('standard')` under L1: APGD-CE with 5 restarts and APGD-T over 5 targets, both with
  `use_largereps`; FAB-T over 9; Square; radius 12 by default. Under L-inf one APGD-CE run and 9 APGD-T targets."""
  eps, stages = evaluate.protocol_attacks('aa_standard', None, 'l1')
  assert eps == 12.0 and [name for name, _ in stages] == ['APGD-CE', 'APGD-T', 'FAB-T', 'Square']
  settings = {name: attack.keywords for name, attack in stages}
  assert (settings['APGD-CE']['restarts'], settings['APGD-CE']['large_eps']) == (5, True)
  assert (settings['APGD-T']['n_targets'], settings['APGD-T']['large_eps']) == (5, True)
  assert settings['FAB-T']['n_targets'] == 9 and settings['Square']['n_queries'] == 5000
  linf = {name: attack.keywords for name, attack in evaluate.protocol_attacks('aa_standard', None, 'linf')[1]}
  assert (linf['APGD-CE']['restarts'], linf['APGD-CE']['large_eps'], linf['APGD-T']['n_targets']) == (1, False, 9)
  with pytest.raises(ValueError, match="unknown attack 'fgsm' under l1"):
    evaluate.custom_attacks('apgd-ce,fgsm', eps=5.0, step_size=1.0, norm='l1')


def test_the_rand_version_on_a_randomised_model(model_and_data):
  """A randomised model, logits_fn(params, x, key) (the MLP on noisy inputs), under the rand version (5 steps, EoT
  over 2 forwards here): each forward, the checks between stages too, draws from the example's own key, so an
  example's draw does not depend on its batch; the official 'rand' settings; the other versions refuse it."""
  logits_fn, images, labels = model_and_data
  noisy = lambda params, v, key: logits_fn(params, v + 0.1 * jax.random.normal(key, v.shape))
  stages = rand_stages(0.1, steps=5, eot_iter=2, randomized=True)
  # Batches of 2 (one per device): one compile per stage.
  result = evaluate.evaluate(noisy, {}, images[:24], labels[:24], stages, eps=0.1, randomized=True, batch_size=2,
                             individual=False)
  assert [r['attack'] for r in result['rows']] == ['natural', 'APGD-CE', 'APGD-DLR']
  attacked = [r['attacked'] for r in result['rows']]
  assert attacked[1] > attacked[2] > sum(result['robust']) > 0   # each stage breaks some, on the survivors
  assert not any('randomised' in w for w in result['warnings'])   # the official skips that check for 'rand'

  x, y = jnp.asarray(images[:32], jnp.float32) / 255, jnp.asarray(labels[:32])
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(0), jnp.arange(32))   # one per example
  one_draw = attacks.parts.one_draw(functools.partial(noisy, {}), keys)
  np.testing.assert_array_equal(attacks.parts.one_draw(functools.partial(noisy, {}), keys[:16])(x[:16]),
                                one_draw(x)[:16])
  assert not np.array_equal(one_draw(x), logits_fn({}, x))
  whole = jax.jit(lambda x, y, k: attacks.autoattack(functools.partial(noisy, {}), x, y, k, eps=0.1, version='rand',
                                                     randomized=True, steps=5, eot_iter=2))(x, y, keys)
  changed = np.asarray(jnp.abs(whole.x_adv - x).max((1, 2, 3)) > 0)
  assert 0 < changed.sum() < 32 and float(jnp.abs(whole.x_adv - x).max()) <= 0.1 + 1e-6
  assert set(np.asarray(whole.steps)[changed]) <= {12, 24}   # (5 + 1) x 2 gradients per stage it reached

  _, stages = evaluate.protocol_attacks('aa_rand', None, 'linf', randomized=True)
  assert [(name, a.keywords['loss'], a.keywords['eot_iter']) for name, a in stages] == [
      ('APGD-CE', 'ce', 20), ('APGD-DLR', 'dlr', 20)]
  assert all(a.keywords.get('restarts', 1) == 1 and a.keywords['randomized'] for _, a in stages)
  assert not any(a.keywords['randomized'] for _, a in evaluate.protocol_attacks('aa_rand')[1])   # key-less models
  with pytest.raises(evaluate.ProtocolError, match="randomised model is evaluated with aa_rand"):
    evaluate.protocol_attacks('aa_standard', None, 'linf', randomized=True)
  with pytest.raises(ValueError, match="randomised model takes version 'rand'"):
    attacks.autoattack(noisy, x, y, jax.random.key(0), eps=0.1, randomized=True)
