from __future__ import annotations

import pytest

from model.tiny import save_tiny_checkpoints
from tests.trainer.trainer_helpers import build_pair_shards


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    """(tiny checkpoints, pair shards) that the job-level training tests only read: built once
    for test_train_job, test_launchers and test_ray_train."""
    ckpt = tmp_path_factory.mktemp("ckpt")
    save_tiny_checkpoints(str(ckpt))
    shards = build_pair_shards(tmp_path_factory.mktemp("videos"), tmp_path_factory.mktemp("pairs"))
    return ckpt, shards
