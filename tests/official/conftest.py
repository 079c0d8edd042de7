"""The differential tests' shared set-up."""
import pytest
import torch


@pytest.fixture(autouse=True, scope='package')
def one_torch_thread():
  """Tiny networks: a second PyTorch thread only contends with XLA's for the cores (10x slower seen in test_las_at.py,
  3x in test_awp.py, under load)."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)
