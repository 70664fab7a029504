"""Shared by the job tests."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def checkpoints(tiny_checkpoints) -> Path:
    """A tiny random checkpoints root in the public layout (model.tiny, seed 0)."""
    return tiny_checkpoints


@pytest.fixture
def one_thread():
    """A job's main() run in this process gets one intra-op torch thread, as the job
    subprocesses get (OMP_NUM_THREADS=1): the models are tiny, and on a busy 2-core machine
    torch's thread pool makes a 0.1 s edit take 15 s (measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
