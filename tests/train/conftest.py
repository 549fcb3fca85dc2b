import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The train tests run small models: one intra-op thread is as fast on an idle machine and many
    times faster on a busy one (measured here: tiny ops 70x slower with 2 threads under contention)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
