"""Fixtures shared by the tests of tools/."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Runs in-process tools on one thread, like the subprocesses the tests start (see test_train_test.run_tool)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
