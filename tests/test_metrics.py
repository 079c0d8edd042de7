"""The metrics file is append-only and survives a kill mid-write; TensorBoard keeps one entry per epoch."""
import json

import pytest

from advjax import metrics
from helpers import tensorboard_scalars


def _record(epoch):
  return dict(epoch=epoch, train_loss=1.0 / epoch, natural_acc=0.1 * epoch)


def test_a_cut_last_line_is_dropped_and_a_redone_epoch_is_written_once(tmp_path, capsys):
  writer = metrics.Writer(tmp_path)
  for epoch in (1, 2, 3):
    writer.write(_record(epoch))
  writer.close()
  path = tmp_path / 'metrics.jsonl'
  whole = path.read_text()
  path.write_text(whole + json.dumps(_record(4))[:17])   # killed while appending epoch 4

  assert metrics.read_records(tmp_path) == ([_record(1), _record(2), _record(3)], True)
  writer = metrics.Writer(tmp_path, last_epoch=2)   # the checkpoint is of epoch 2: epochs 3 and 4 are redone
  assert 'the last line of' in capsys.readouterr().err
  assert path.read_text() == ''.join(json.dumps(_record(e)) + '\n' for e in (1, 2))
  for epoch in (3, 4):
    writer.write(_record(epoch))
  writer.close()
  assert metrics.read_records(tmp_path) == ([_record(e) for e in (1, 2, 3, 4)], False)
  scalars = tensorboard_scalars(tmp_path / 'tensorboard')
  assert [step for step, _ in scalars['train_loss']] == [1, 2, 3, 4]
  assert [value for _, value in scalars['natural_acc']] == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_a_whole_last_line_without_its_newline_is_kept(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text(json.dumps(_record(1)) + '\n' + json.dumps(_record(2)))
  writer = metrics.Writer(tmp_path)
  writer.write(_record(3))
  writer.close()
  assert metrics.read_records(tmp_path) == ([_record(e) for e in (1, 2, 3)], False)
