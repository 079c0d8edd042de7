"""Evaluation: protocols, the AutoAttack cascade and the sanity checks, on a small trained model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import attacks, evaluate
from advjax.attacks.auto_attack import standard_stages


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
  settings = dict(steps=20, n_targets=3, square_queries=200)
  out = jax.jit(lambda x, y: attacks.autoattack(fn, x, y, jax.random.key(0), eps=0.1, **settings))(x, y)
  assert float(jnp.abs(out.x_adv - x).max()) <= 0.1 + 1e-6
  assert float(out.x_adv.min()) >= 0 and float(out.x_adv.max()) <= 1
  acc = lambda v: float((fn(v).argmax(-1) == y).mean())
  keys = attacks.parts.example_keys(jax.random.key(0), len(y))
  stages = standard_stages(0.1, **settings)
  parts_acc = [acc(attack(fn, x, y, attacks.parts.fold_in(keys, i)).x_adv) for i, (_, attack) in enumerate(stages)]
  assert acc(out.x_adv) <= min(parts_acc) < acc(x)
  robust = np.asarray(fn(out.x_adv).argmax(-1) == y)
  np.testing.assert_array_equal(np.asarray(out.x_adv)[robust], np.asarray(x)[robust])


def test_sanity_warnings():
  x = jnp.linspace(0, 1, 2 * 16).reshape(2, 4, 4, 1)
  probabilities = lambda params, v: jax.nn.softmax(v.reshape(2, -1)[:, :3])
  assert any('probabilities' in w for w in evaluate.sanity_warnings(probabilities, {}, x, {}))
  calls = iter(range(100))
  randomised = lambda params, v: v.reshape(2, -1)[:, :3] + next(calls)
  assert any('randomised' in w for w in evaluate.sanity_warnings(randomised, {}, x, {}))
  natural = np.ones(1000, bool)
  per_attack = dict(natural=natural, **{'PGD-20': natural.copy()}, Square=np.arange(1000) % 50 != 0)
  logits = lambda params, v: v.reshape(2, -1)[:, :3] * 3
  assert any('gradient masking' in w for w in evaluate.sanity_warnings(logits, {}, x, per_attack))


def test_custom_attack_lists(model_and_data):
  logits_fn, images, labels = model_and_data
  stages = evaluate.custom_attacks('fgsm, pgd-5, cw-5, apgd-ce', eps=0.1, step_size=0.025)
  assert [name for name, _ in stages] == ['FGSM', 'PGD-5', 'CW-5', 'APGD-CE']
  result = evaluate.evaluate(logits_fn, {}, images[:60], labels[:60], stages[:3], eps=0.1, batch_size=60)
  assert [r['attack'] for r in result['rows']] == ['natural', 'FGSM', 'PGD-5', 'CW-5']
  with pytest.raises(ValueError, match="unknown attack 'pgd'"):
    evaluate.custom_attacks('pgd', eps=0.1, step_size=0.025)
