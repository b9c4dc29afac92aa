"""Suite-wide settings. One intra-op thread per test process: the tests use small tensors, where two
threads on a 2-core CI machine (or one shared with other jobs) thrash instead of helping."""
import os

import pytest
import torch

# Without CUDA, Triton kernels can only run in its interpreter (tests/test_triton_radon.py). Triton reads the
# switch when it is first imported, and torch.compile's tests import it early, so it is set for the whole
# session here; inductor's CPU backend (C++) does not use Triton, so nothing else changes.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
