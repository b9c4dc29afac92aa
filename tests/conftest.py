"""Suite-wide settings. One intra-op thread per test process: the tests use small tensors, where two
threads on a 2-core CI machine (or one shared with other jobs) thrash instead of helping."""
import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
