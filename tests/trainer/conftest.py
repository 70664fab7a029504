from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.ray_cluster import clean_env, free_port
from tests.trainer.trainer_helpers import summary_of, two_rank_config


@pytest.fixture(scope="session")
def setup(tiny_checkpoints, pair_shards):
    """(tiny checkpoints, pair shards) that the job-level training tests only read."""
    return tiny_checkpoints, pair_shards


@pytest.fixture(scope="session")
def ckpt(tiny_checkpoints):
    """The tiny checkpoints the in-process training tests start from (read only)."""
    return tiny_checkpoints


@dataclass
class TorchrunRun:
    config: str        # trainer_helpers.two_rank_config
    run_dir: Path
    summary: dict      # what jobs.train printed


@pytest.fixture(scope="session")
def torchrun_run(setup, tmp_path_factory) -> TorchrunRun:
    """The two-rank config trained by two torchrun ranks, once per session: what the deepspeed
    launcher and every Ray Train run are compared with. Read only: copy its run directory
    before running anything in it."""
    ckpt, shards = setup
    root = tmp_path_factory.mktemp("torchrun")
    cfg = two_rank_config(root / "train.yaml", root / "run", ckpt, shards)
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node=2",
         f"--master_port={free_port()}", "-m", "jobs.train", "--config", cfg, "--device", "cpu"],
        cwd=REPO, env=clean_env(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu"), capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return TorchrunRun(cfg, root / "run", summary_of(proc.stdout))
