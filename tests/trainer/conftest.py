from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def setup(tiny_checkpoints, pair_shards):
    """(tiny checkpoints, pair shards) that the job-level training tests only read."""
    return tiny_checkpoints, pair_shards


@pytest.fixture(scope="session")
def ckpt(tiny_checkpoints):
    """The tiny checkpoints the in-process training tests start from (read only)."""
    return tiny_checkpoints
