"""Tiny random extractors built once per session, and one torch thread for these small models
(on a busy 2-core machine torch's thread pool makes them many times slower)."""
from __future__ import annotations

import pytest
import torch

from trainer.evaluation.tiny import save_tiny_extractors


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def extractors(tmp_path_factory) -> dict[str, str]:
    return save_tiny_extractors(str(tmp_path_factory.mktemp("extractors")), seed=0)
