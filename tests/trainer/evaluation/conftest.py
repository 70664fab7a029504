"""Tiny random extractors built once per session, and one torch thread for these small models
(on a busy 2-core machine torch's thread pool makes them many times slower)."""
from __future__ import annotations

import pytest

from tests.conftest import one_torch_thread
from trainer.evaluation.tiny import save_tiny_extractors


@pytest.fixture(autouse=True, scope="module")
def one_thread_per_module():
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def extractors(tmp_path_factory) -> dict[str, str]:
    return save_tiny_extractors(str(tmp_path_factory.mktemp("extractors")), seed=0)
