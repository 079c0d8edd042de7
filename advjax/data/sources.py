"""Dataset sources: each loads a whole dataset into host numpy arrays (uint8 NHWC images, int32 labels).

`config.data.source` picks one of:
  digits        scikit-learn's embedded 8x8 digits (no files), split 80/20 by a seeded permutation.
  idx           MNIST-style IDX files in `<data_dir>/<name>/` (MNIST, Fashion-MNIST).
  image_folder  `<data_dir>/<name>`: a folder, or a tar archive read in place, of `{train,test}/<class>/*.jpg|png`.
  tfds          a TFDS dataset already prepared (array_record) in `data_dir`, read without TensorFlow.

`check` only looks for the files, so bad configs fail before anything is decoded or compiled; `load` reads them.
"""
import dataclasses
import gzip
import io
import math
import os
import posixpath
import struct
import tarfile

import numpy as np
from PIL import Image

SOURCES = ('digits', 'idx', 'image_folder', 'tfds')

_IDX_FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
              'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
_IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')
_ARCHIVE_SUFFIXES = ('.tar.gz', '.tgz', '.tar')
_TFDS_READ_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A whole dataset in host memory: images uint8 (N, H, W, C) with C = 1 or 3, labels int32 (N,)."""
  train_images: np.ndarray = dataclasses.field(repr=False)
  train_labels: np.ndarray = dataclasses.field(repr=False)
  test_images: np.ndarray = dataclasses.field(repr=False)
  test_labels: np.ndarray = dataclasses.field(repr=False)
  num_classes: int
  name: str


class DataError(Exception):
  """One-line, user-facing: what was missing/wrong, where it looked, how to get it."""


def check(cfg) -> None:
  """Fast pre-flight check (no decoding, no jax): raises DataError if the source is unknown or its files are missing."""
  if cfg.source not in SOURCES:
    raise DataError(f'Unknown config.data.source {cfg.source!r}; expected one of {", ".join(SOURCES)}.')
  _LOCATORS[cfg.source](cfg)


def load(cfg) -> Dataset:
  """Loads the whole dataset into host numpy arrays, subset to `num_train`/`num_test` examples if those are > 0."""
  check(cfg)
  return _LOADERS[cfg.source](cfg)


def _chosen(cfg, split: str, available: int) -> np.ndarray:
  """Indices of the examples to keep: all, or a seeded random subset in index order.

  Index order, not shuffled order, so that the subset of a class-grouped source keeps its grouping
  (and reads stay sequential); shuffling is the input pipeline's job.
  """
  requested = cfg.num_train if split == 'train' else cfg.num_test
  if requested <= 0 or requested == available:
    return np.arange(available)
  if requested > available:
    raise DataError(f'config.data.num_{split}={requested} exceeds the {available} {split} examples available; '
                    'lower it, or use -1 for all.')
  return np.sort(np.random.RandomState(cfg.seed).choice(available, requested, replace=False))


def _subset(cfg, arrays: dict) -> dict:
  """Applies `_chosen` to in-memory {split: (images, labels)}."""
  return {split: tuple(a[_chosen(cfg, split, len(y))] for a in (x, y)) for split, (x, y) in arrays.items()}


def _dataset_path(cfg) -> str:
  if not cfg.data_dir:
    raise DataError(f'config.data.data_dir is empty; set it to the folder holding {cfg.name!r} '
                    '(its default comes from $ADVJAX_DATA_DIR).')
  return os.path.join(os.path.expanduser(cfg.data_dir), cfg.name)


# --- digits ---------------------------------------------------------------------------------------------------------
def _load_digits(cfg) -> Dataset:
  from sklearn import datasets  # Imported here: sklearn is slow to import and only this source needs it.
  digits = datasets.load_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  # No official split: a fixed permutation, first 80% train (1437), the rest test (360).
  order = np.random.RandomState(cfg.seed).permutation(len(labels))
  num_train = int(0.8 * len(labels))
  arrays = _subset(cfg, {'train': (images[order[:num_train]], labels[order[:num_train]]),
                         'test': (images[order[num_train:]], labels[order[num_train:]])})
  return Dataset(*arrays['train'], *arrays['test'], num_classes=10, name='digits')


# --- idx ------------------------------------------------------------------------------------------------------------
def _idx_files(cfg) -> dict[str, tuple[str, str]]:
  """{split: (images path, labels path)}, accepting each file gzipped or plain."""
  folder = _dataset_path(cfg)
  def find(stem):
    for path in (os.path.join(folder, stem + '.gz'), os.path.join(folder, stem)):
      if os.path.isfile(path):
        return path
    raise DataError(f'Expected {stem}.gz (or {stem}) in {folder}; set config.data.data_dir '
                    f'(default $ADVJAX_DATA_DIR) to the folder holding {cfg.name!r}/ with the four IDX files.')
  return {split: (find(images), find(labels)) for split, (images, labels) in _IDX_FILES.items()}


def _read_idx(path: str, ndim: int) -> np.ndarray:
  """Parses an IDX file of unsigned bytes: magic 0x0000 08 <ndim>, then ndim big-endian uint32 sizes, then data."""
  try:
    with (gzip.open if path.endswith('.gz') else open)(path, 'rb') as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise DataError(f'Cannot read {path} ({e}); the file is corrupt, fetch it again.') from e
  header = 4 + 4 * ndim
  if len(data) < header or data[:4] != bytes([0, 0, 0x08, ndim]):
    raise DataError(f'{path} is not an IDX file of {ndim}-D uint8 data (magic {data[:4].hex()}, expected '
                    f'000008{ndim:02x}); fetch it again.')
  shape = struct.unpack(f'>{ndim}I', data[4:header])
  if len(data) - header != math.prod(shape):
    raise DataError(f'{path} holds {len(data) - header} data bytes but its header says {shape}; fetch it again.')
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _load_idx(cfg) -> Dataset:
  arrays = {}
  for split, (images_path, labels_path) in _idx_files(cfg).items():
    images, labels = _read_idx(images_path, 3), _read_idx(labels_path, 1)
    if len(images) != len(labels):
      raise DataError(f'{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels.')
    arrays[split] = images[..., None], labels.astype(np.int32)
  num_classes = max(10, 1 + int(max(y.max(initial=0) for _, y in arrays.values())))  # Before subsetting.
  arrays = _subset(cfg, arrays)
  return Dataset(*arrays['train'], *arrays['test'], num_classes=num_classes, name=cfg.name)


# --- image_folder ---------------------------------------------------------------------------------------------------
def _image_folder_path(cfg) -> str:
  path = _dataset_path(cfg)
  if os.path.isdir(path):
    missing = [split for split in ('train', 'test') if not os.path.isdir(os.path.join(path, split))]
    if not missing:
      return path
    raise DataError(f'{path} has no {"/ or ".join(missing)}/ folder; expected {{train,test}}/<class>/*.jpg|png.')
  if os.path.isfile(path) and path.endswith(_ARCHIVE_SUFFIXES):
    return path
  raise DataError(f'Expected a folder or {"/".join(_ARCHIVE_SUFFIXES)} archive of {{train,test}}/<class>/*.jpg|png at '
                  f'{path}; set config.data.data_dir (default $ADVJAX_DATA_DIR) and config.data.name to point at it.')


def _is_image(class_name: str, file_name: str) -> bool:
  # Skips dot names: macOS tar's '._x.jpg' resource forks, '.ipynb_checkpoints' and the like.
  hidden = class_name.startswith('.') or file_name.startswith('.')
  return not hidden and file_name.lower().endswith(_IMAGE_SUFFIXES)


def _folder_files(path):
  """Yields (split, class name, file name, file path) for every image under a folder."""
  for split in ('train', 'test'):
    for class_name in os.listdir(os.path.join(path, split)):
      class_dir = os.path.join(path, split, class_name)
      if os.path.isdir(class_dir):
        for file_name in os.listdir(class_dir):
          if _is_image(class_name, file_name):
            yield split, class_name, file_name, os.path.join(class_dir, file_name)


def _archive_files(path):
  """Yields (split, class name, file name, bytes) for every image in a tar archive, reading it once, in order."""
  try:
    with tarfile.open(path) as tar:
      for member in tar:
        parts = posixpath.normpath(member.name).split('/')
        if member.isfile() and len(parts) >= 3 and parts[-3] in ('train', 'test') and _is_image(*parts[-2:]):
          yield *parts[-3:], tar.extractfile(member).read()
  except (tarfile.TarError, OSError, EOFError) as e:
    raise DataError(f'Cannot read archive {path} ({e}); it is corrupt or not a tar archive, fetch it again.') from e


def _decode_images(files: list[tuple[str, str | bytes]]) -> list[np.ndarray]:
  """Decodes (name, path or bytes) pairs into (H, W) grey or (H, W, 3) RGB arrays, all of the same size."""
  arrays = []
  for name, content in files:
    try:
      with Image.open(io.BytesIO(content) if isinstance(content, bytes) else content) as image:
        arrays.append(np.asarray(image if image.mode in ('L', 'RGB') else image.convert('RGB')))
    except OSError as e:  # PIL.UnidentifiedImageError is an OSError.
      raise DataError(f'Cannot decode image {name} ({e}).') from e
    if arrays[-1].shape[:2] != arrays[0].shape[:2]:
      raise DataError(f'Image {name} is {arrays[-1].shape[:2]} but {files[0][0]} is {arrays[0].shape[:2]}; '
                      'all images must have the same size.')
  return arrays


def _load_image_folder(cfg) -> Dataset:
  path = _image_folder_path(cfg)
  files = {'train': [], 'test': []}
  for split, class_name, file_name, content in (_folder_files if os.path.isdir(path) else _archive_files)(path):
    files[split].append((class_name, file_name, content))
  class_names = {split: sorted({entry[0] for entry in entries}) for split, entries in files.items()}
  if not class_names['train'] or class_names['train'] != class_names['test']:
    raise DataError(f'{path}: train and test must hold images of the same, non-empty set of classes; found '
                    f'train {class_names["train"]} and test {class_names["test"]}.')
  # Labels from the sorted class names, never listing order (for CIFAR-10 this is the standard airplane..truck).
  label_of = {class_name: label for label, class_name in enumerate(class_names['train'])}
  decoded = {}
  for split, entries in files.items():
    entries.sort(key=lambda entry: entry[:2])
    entries = [entries[i] for i in _chosen(cfg, split, len(entries))]
    images = _decode_images([(f'{path}:{split}/{c}/{f}', content) for c, f, content in entries])
    decoded[split] = images, np.array([label_of[entry[0]] for entry in entries], np.int32)
  # Grey stays 1 channel only if every image of both splits is grey; otherwise all become RGB.
  grey = all(image.ndim == 2 for images, _ in decoded.values() for image in images)
  to_hwc = lambda image: image if image.ndim == 3 else np.repeat(image[..., None], 1 if grey else 3, axis=-1)
  arrays = {split: (np.stack([to_hwc(x) for x in images]), labels) for split, (images, labels) in decoded.items()}
  if arrays['train'][0].shape[1:] != arrays['test'][0].shape[1:]:
    raise DataError(f'{path}: train images are {arrays["train"][0].shape[1:]} but test images are '
                    f'{arrays["test"][0].shape[1:]}; both splits must have the same image size.')
  return Dataset(*arrays['train'], *arrays['test'], num_classes=len(label_of), name=cfg.name)


# --- tfds -----------------------------------------------------------------------------------------------------------
def _tfds_data_dir(cfg) -> str:
  """cfg.data_dir, else TFDS's own default; resolved here so that `check` need not import tfds."""
  default = os.environ.get('TFDS_DATA_DIR', os.path.join('~', 'tensorflow_datasets'))
  data_dir = os.path.expanduser(cfg.data_dir or default)
  dataset_dir = os.path.join(data_dir, cfg.name.split(':')[0])  # 'name[/config][:version]'
  if not os.path.isdir(dataset_dir):
    raise DataError(_tfds_not_prepared(cfg.name, data_dir, f'no folder {dataset_dir}'))
  return data_dir


def _tfds_not_prepared(name: str, data_dir: str, reason: str) -> str:
  base = name.split(':')[0].split('/')[0]
  return (f'TFDS dataset {name!r} is not prepared in {data_dir} ({reason}); nothing is downloaded. Prepare it on a '
          f'machine with TensorFlow (tfds build {base} --data_dir={data_dir} --file_format=array_record) and copy it '
          'there, or set config.data.data_dir to where it is (empty: $TFDS_DATA_DIR or ~/tensorflow_datasets).')


def _read_examples(source, keys: list[int]) -> list[dict]:
  try:
    return source.__getitems__(keys)  # One batched read instead of one read per record.
  except TypeError:  # tfds.testing.mock_data (tfds 4.9) installs a broken __getitems__; read record by record.
    return [source[key] for key in keys]


def _load_tfds(cfg) -> Dataset:
  import tensorflow_datasets as tfds  # Imported here: slow to import and only this source needs it.
  data_dir = _tfds_data_dir(cfg)
  arrays = {}
  for split in ('train', 'test'):
    try:
      source = tfds.data_source(cfg.name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises many types here (not found, wrong file format, no such split...).
      reason = f'{type(e).__name__}: {" ".join(str(e).split())}'[:160]
      raise DataError(_tfds_not_prepared(cfg.name, data_dir, reason)) from e
    features = source.dataset_info.features
    if 'image' not in features or 'label' not in features:
      raise DataError(f'TFDS dataset {cfg.name!r} needs "image" and "label" features; it has {list(features)}.')
    indices = _chosen(cfg, split, len(source)).tolist()
    images, labels = [], []
    for start in range(0, len(indices), _TFDS_READ_BATCH):
      for example in _read_examples(source, indices[start:start + _TFDS_READ_BATCH]):
        images.append(example['image'])
        labels.append(example['label'])
    images = np.stack(images)
    if images.dtype != np.uint8:
      raise DataError(f'TFDS dataset {cfg.name!r} has {images.dtype} images; advjax expects uint8.')
    arrays[split] = images[..., None] if images.ndim == 3 else images, np.asarray(labels, np.int32)
  num_classes = getattr(features['label'], 'num_classes', None)
  if num_classes is None:
    num_classes = int(max(y.max(initial=0) for _, y in arrays.values())) + 1
  return Dataset(*arrays['train'], *arrays['test'], num_classes=num_classes, name=cfg.name)


_LOCATORS = {'digits': lambda cfg: None, 'idx': _idx_files, 'image_folder': _image_folder_path,
             'tfds': _tfds_data_dir}
_LOADERS = {'digits': _load_digits, 'idx': _load_idx, 'image_folder': _load_image_folder, 'tfds': _load_tfds}
