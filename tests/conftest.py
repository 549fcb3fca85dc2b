import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Every test starts from the same global RNG state, on one intra-op thread.

    The tests run tiny models made of many small ops: one thread is as fast on an idle machine and
    many times faster on a busy one (2 threads measured up to 70x slower under contention).
    """
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
