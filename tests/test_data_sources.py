"""Tests for advjax.data.sources: synthetic files for every source, plus the real data when $ADVJAX_DATA_DIR is set."""
import gzip
import io
import os
import struct
import tarfile
import time

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn import datasets as sklearn_datasets

from advjax import data

DATA_DIR = os.environ.get('ADVJAX_DATA_DIR')
needs_real_data = pytest.mark.skipif(not DATA_DIR, reason='set ADVJAX_DATA_DIR to the shared data folder to run')


def make_config(**overrides):
  cfg = dict(source='digits', name='', data_dir='', num_train=-1, num_test=-1, seed=0)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def rows(images, labels):
  """Each example as one hashable row, for comparing datasets as multisets."""
  return sorted(image.tobytes() + bytes([label]) for image, label in zip(images, labels))


def test_check_rejects_unknown_source():
  with pytest.raises(data.DataError, match='digits, idx, image_folder, tfds'):
    data.check(make_config(source='cifar'))


# --- digits ---------------------------------------------------------------------------------------------------------

def test_digits_split_is_a_deterministic_partition():
  ds = data.load(make_config())
  assert ds.train_images.shape == (1437, 8, 8, 1) and ds.test_images.shape == (360, 8, 8, 1)
  assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
  assert ds.train_images.max() == 255 and ds.train_images.min() == 0
  assert set(np.unique(ds.train_labels)) == set(range(10)) and ds.num_classes == 10
  # Train + test is exactly the whole of sklearn's digits, each example once.
  digits = sklearn_datasets.load_digits()
  full = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]
  assert rows(np.concatenate([ds.train_images, ds.test_images]), np.concatenate([ds.train_labels, ds.test_labels])) \
      == rows(full, digits.target)
  again = data.load(make_config())
  np.testing.assert_array_equal(again.train_images, ds.train_images)
  np.testing.assert_array_equal(again.test_labels, ds.test_labels)
  other = data.load(make_config(seed=1))
  assert not np.array_equal(other.test_labels, ds.test_labels)


def test_digits_subset_and_too_many():
  ds = data.load(make_config(num_train=100, num_test=50))
  assert ds.train_images.shape == (100, 8, 8, 1) and len(ds.test_labels) == 50
  with pytest.raises(data.DataError, match='num_train=2000 exceeds the 1437'):
    data.load(make_config(num_train=2000))


# --- idx ------------------------------------------------------------------------------------------------------------

def write_idx(path, array, compress):
  content = bytes([0, 0, 8, array.ndim]) + struct.pack(f'>{array.ndim}I', *array.shape) + array.tobytes()
  with (gzip.open if compress else open)(str(path) + ('.gz' if compress else ''), 'wb') as f:
    f.write(content)


def make_idx_dataset(folder, compress):
  rng = np.random.RandomState(0)
  arrays = {'train': (rng.randint(0, 256, (5, 28, 28), np.uint8), np.array([3, 1, 4, 1, 5], np.uint8)),
            'test': (rng.randint(0, 256, (2, 28, 28), np.uint8), np.array([9, 2], np.uint8))}
  folder.mkdir()
  for split, prefix in (('train', 'train'), ('test', 't10k')):
    write_idx(folder / f'{prefix}-images-idx3-ubyte', arrays[split][0], compress)
    write_idx(folder / f'{prefix}-labels-idx1-ubyte', arrays[split][1], compress)
  return arrays


@pytest.mark.parametrize('compress', [True, False])
def test_idx_reads_files_exactly(tmp_path, compress):
  arrays = make_idx_dataset(tmp_path / 'toy', compress)
  ds = data.load(make_config(source='idx', name='toy', data_dir=str(tmp_path)))
  np.testing.assert_array_equal(ds.train_images, arrays['train'][0][..., None])
  np.testing.assert_array_equal(ds.train_labels, arrays['train'][1])
  np.testing.assert_array_equal(ds.test_images, arrays['test'][0][..., None])
  np.testing.assert_array_equal(ds.test_labels, arrays['test'][1])
  assert ds.train_labels.dtype == np.int32 and ds.num_classes == 10 and ds.name == 'toy'
  # A subset keeps dataset order: its images are a subsequence of the full set's.
  subset = data.load(make_config(source='idx', name='toy', data_dir=str(tmp_path), num_train=3, seed=7))
  positions = [next(i for i, full in enumerate(arrays['train'][0]) if np.array_equal(full, image[..., 0]))
               for image in subset.train_images]
  assert len(positions) == 3 and positions == sorted(set(positions))
  np.testing.assert_array_equal(subset.train_labels, arrays['train'][1][positions])


def test_idx_rejects_bad_magic_and_truncation(tmp_path):
  make_idx_dataset(tmp_path / 'toy', compress=False)
  labels_path = tmp_path / 'toy' / 'train-labels-idx1-ubyte'
  good = labels_path.read_bytes()
  cfg = make_config(source='idx', name='toy', data_dir=str(tmp_path))
  labels_path.write_bytes(b'\x00\x00\x08\x03' + good[4:])
  with pytest.raises(data.DataError, match='magic 00000803, expected 00000801'):
    data.load(cfg)
  labels_path.write_bytes(good[:-1])
  with pytest.raises(data.DataError, match='header says'):
    data.load(cfg)


def test_idx_missing_folder_names_the_path(tmp_path):
  cfg = make_config(source='idx', name='mnist', data_dir=str(tmp_path))
  with pytest.raises(data.DataError, match=f'train-images-idx3-ubyte.gz.*in {tmp_path / "mnist"}.*ADVJAX_DATA_DIR'):
    data.check(cfg)
  with pytest.raises(data.DataError, match='data_dir is empty'):
    data.check(make_config(source='idx', name='mnist'))


# --- image_folder ---------------------------------------------------------------------------------------------------

def make_image_tree(root, classes=('zebra', 'apple', 'mango'), mode='RGB'):
  """{train,test}/<class>/NN.png with distinct random pixels; returns the expected (images, class name) per split."""
  rng = np.random.RandomState(0)
  expected = {'train': [], 'test': []}
  for split, count in (('train', 2), ('test', 1)):
    for class_name in classes:
      (root / split / class_name).mkdir(parents=True)
      for i in range(count):
        pixels = rng.randint(0, 256, (5, 4, 3) if mode == 'RGB' else (5, 4), np.uint8)
        Image.fromarray(pixels, mode).save(root / split / class_name / f'{i:02d}.png')
        expected[split].append((pixels, class_name))
  return expected


def make_tar(root, archive):
  with tarfile.open(archive, 'w:gz') as tar:
    for split in ('train', 'test'):
      tar.add(root / split, arcname=split)


def assert_matches(ds, expected, channels):
  names = sorted({class_name for _, class_name in expected['train']})
  assert ds.num_classes == len(names)
  for split, images, labels in (('train', ds.train_images, ds.train_labels), ('test', ds.test_images, ds.test_labels)):
    assert images.dtype == np.uint8 and images.shape[1:] == (5, 4, channels) and labels.dtype == np.int32
    want = [(pixels.reshape(5, 4, channels), names.index(class_name)) for pixels, class_name in expected[split]]
    assert rows(images, labels) == rows(*zip(*want))
    assert list(labels) == sorted(labels)  # Grouped by sorted class name.


def test_image_folder_from_folder_and_archive(tmp_path):
  expected = make_image_tree(tmp_path / 'toy')
  make_tar(tmp_path / 'toy', tmp_path / 'toy.tar.gz')
  for name in ('toy', 'toy.tar.gz'):
    ds = data.load(make_config(source='image_folder', name=name, data_dir=str(tmp_path)))
    assert_matches(ds, expected, channels=3)
    assert list(ds.train_labels) == [0, 0, 1, 1, 2, 2]  # apple, mango, zebra: alphabetical, not creation order.


def test_image_folder_keeps_grey_as_one_channel(tmp_path):
  expected = make_image_tree(tmp_path / 'grey', mode='L')
  assert_matches(data.load(make_config(source='image_folder', name='grey', data_dir=str(tmp_path))), expected, 1)


def test_image_folder_mixed_grey_and_colour_becomes_rgb(tmp_path):
  expected = make_image_tree(tmp_path / 'mixed', mode='L')
  colour = np.random.RandomState(1).randint(0, 256, (5, 4, 3), np.uint8)
  Image.fromarray(colour).save(tmp_path / 'mixed' / 'train' / 'apple' / '00.png')
  ds = data.load(make_config(source='image_folder', name='mixed', data_dir=str(tmp_path)))
  assert ds.train_images.shape == (6, 5, 4, 3) and ds.test_images.shape == (3, 5, 4, 3)
  np.testing.assert_array_equal(ds.train_images[0], colour)  # apple/00.png
  grey_apple_01 = expected['train'][3][0]
  np.testing.assert_array_equal(ds.train_images[1], np.repeat(grey_apple_01[..., None], 3, axis=-1))


def test_image_folder_errors(tmp_path):
  make_image_tree(tmp_path / 'toy')
  (tmp_path / 'toy' / 'test' / 'apple').rename(tmp_path / 'toy' / 'test' / 'banana')
  with pytest.raises(data.DataError, match='same, non-empty set of classes'):
    data.load(make_config(source='image_folder', name='toy', data_dir=str(tmp_path)))
  with pytest.raises(data.DataError, match=f'at {tmp_path / "nothing"}'):
    data.check(make_config(source='image_folder', name='nothing', data_dir=str(tmp_path)))
  (tmp_path / 'broken.tar.gz').write_bytes(b'not an archive')
  with pytest.raises(data.DataError, match='Cannot read archive'):
    data.load(make_config(source='image_folder', name='broken.tar.gz', data_dir=str(tmp_path)))


# --- tfds -----------------------------------------------------------------------------------------------------------

def tiny_tfds_image(i):
  image = np.random.RandomState(i).randint(0, 256, (6, 6, 3), np.uint8)
  image[0, 0, 0] = i  # The example's id, since the prepared files are shuffled.
  return image


class AdvjaxTinyTfds(tfds.core.GeneratorBasedBuilder):
  """A real (not mocked) prepared dataset, built without TensorFlow by feeding PNG bytes."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(6, 6, 3)), 'label': tfds.features.ClassLabel(num_classes=4)}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(range(7)), 'test': self._generate_examples(range(7, 10))}

  def _generate_examples(self, ids):
    for i in ids:
      png = io.BytesIO()
      Image.fromarray(tiny_tfds_image(i)).save(png, 'PNG')
      yield i, {'image': png.getvalue(), 'label': i % 3}


def test_tfds_reads_a_prepared_dataset(tmp_path):
  AdvjaxTinyTfds(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  ds = data.load(make_config(source='tfds', name='advjax_tiny_tfds', data_dir=str(tmp_path)))
  assert ds.train_images.shape == (7, 6, 6, 3) and ds.test_images.shape == (3, 6, 6, 3)
  assert ds.num_classes == 4  # From the dataset info, not max label + 1.
  for images, labels in ((ds.train_images, ds.train_labels), (ds.test_images, ds.test_labels)):
    assert labels.dtype == np.int32
    for image, label in zip(images, labels):
      np.testing.assert_array_equal(image, tiny_tfds_image(image[0, 0, 0]))
      assert label == image[0, 0, 0] % 3
  subset = data.load(make_config(source='tfds', name='advjax_tiny_tfds', data_dir=str(tmp_path), num_train=4))
  assert subset.train_images.shape == (4, 6, 6, 3)


def test_tfds_mock_mnist(tmp_path):
  (tmp_path / 'mnist').mkdir()  # `check` looks for the folder; the mock serves the examples.
  with tfds.testing.mock_data(num_examples=20):
    ds = data.load(make_config(source='tfds', name='mnist', data_dir=str(tmp_path)))
  for images, labels in ((ds.train_images, ds.train_labels), (ds.test_images, ds.test_labels)):
    assert images.shape == (20, 28, 28, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < 10
  assert ds.num_classes == 10


def test_tfds_missing_dataset_fails_fast_without_download(tmp_path, monkeypatch):
  start = time.monotonic()
  cfg = make_config(source='tfds', name='mnist', data_dir=str(tmp_path / 'nowhere'))
  for step in (data.check, data.load):
    with pytest.raises(data.DataError, match=f'not prepared in {tmp_path / "nowhere"}.*tfds build mnist'):
      step(cfg)
  (tmp_path / 'mnist').mkdir()  # The folder alone, nothing prepared in it.
  with pytest.raises(data.DataError, match='not prepared'):
    data.load(make_config(source='tfds', name='mnist', data_dir=str(tmp_path)))
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'default'))  # Empty data_dir means TFDS's default.
  with pytest.raises(data.DataError, match=f'not prepared in {tmp_path / "default"}'):
    data.check(make_config(source='tfds', name='mnist'))
  assert time.monotonic() - start < 5


# --- real data ($ADVJAX_DATA_DIR) -----------------------------------------------------------------------------------

@needs_real_data
def test_real_mnist():
  full = data.load(make_config(source='idx', name='mnist', data_dir=DATA_DIR))
  assert full.train_images.shape == (60000, 28, 28, 1) and full.test_images.shape == (10000, 28, 28, 1)
  assert list(full.train_labels[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
  assert list(full.test_labels[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
  assert list(np.bincount(full.train_labels)) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
  assert round(full.train_images.mean() / 255, 4) == 0.1307
  subset = data.load(make_config(source='idx', name='mnist', data_dir=DATA_DIR, num_train=1000, num_test=100))
  assert subset.train_images.shape == (1000, 28, 28, 1) and subset.test_labels.shape == (100,)
  index_of = {image.tobytes(): i for i, image in enumerate(full.train_images)}  # MNIST has no duplicate images.
  positions = [index_of[image.tobytes()] for image in subset.train_images]
  assert positions == sorted(positions)
  np.testing.assert_array_equal(subset.train_labels, full.train_labels[positions])


@needs_real_data
def test_real_cifar10_archive():
  ds = data.load(make_config(source='image_folder', name='cifar10-jpg.tar.gz', data_dir=DATA_DIR))
  assert ds.train_images.shape == (50000, 32, 32, 3) and ds.test_images.shape == (10000, 32, 32, 3)
  assert ds.num_classes == 10
  # Sorted folder names give the standard order; examples come grouped by class.
  np.testing.assert_array_equal(ds.train_labels, np.repeat(np.arange(10), 5000))
  np.testing.assert_array_equal(ds.test_labels, np.repeat(np.arange(10), 1000))
  mean = ds.train_images.reshape(-1, 3).mean(0) / 255
  np.testing.assert_allclose(mean, (0.4913, 0.4821, 0.4465), atol=2e-4)  # README, to its 4 decimals.
