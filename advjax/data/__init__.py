"""Datasets for adversarial training: `load(config.data)` gives whole datasets as host numpy arrays."""
from advjax.data.sources import SOURCES, DataError, Dataset, check, load

__all__ = ['SOURCES', 'DataError', 'Dataset', 'check', 'load']
