"""jobs.train under the `deepspeed` launcher and under torchrun: two ranks on real shards,
the same run either way."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from tests.ray_cluster import clean_env, free_port
from tests.trainer.test_loop import exported, weights
from tests.trainer.test_train_job import setup  # noqa: F401
from trainer.loop import list_checkpoints

pytestmark = pytest.mark.slow
BIN = os.path.dirname(sys.executable)


def train_args(run, ckpt, shards):
    return ["--config", str(REPO / "configs/train-tiny.yaml"), "--set", f"run_dir={run}",
            "--set", f"data.shards={shards}", "--set", f"model.checkpoints={ckpt}",
            "--set", "train.steps=2", "--set", "checkpoint.every=2", "--set", "log.val_every=0",
            "--set", "data.val_pairs=0", "--device", "cpu"]


def launch(command, run):
    env = clean_env(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("train: ")][-1]
    return json.loads(line.removeprefix("train: "))


def test_deepspeed_launcher_runs_the_same_two_ranks_as_torchrun(setup, tmp_path):  # noqa: F811
    ckpt, shards = setup
    by_torchrun = launch([os.path.join(BIN, "torchrun"), "--nproc_per_node=2",
                          f"--master_port={free_port()}", "-m", "jobs.train",
                          *train_args(tmp_path / "torchrun", ckpt, shards)], tmp_path / "torchrun")
    by_deepspeed = launch([os.path.join(BIN, "deepspeed"), "--num_gpus=2",
                           f"--master_port={free_port()}", "jobs/train.py",
                           *train_args(tmp_path / "deepspeed", ckpt, shards)],
                          tmp_path / "deepspeed")
    for summary in (by_torchrun, by_deepspeed):
        assert (summary["step"], summary["samples"]) == (2, 2 * 2 * 2)  # 2 ranks x batch 2
    assert by_deepspeed["first_loss"] == pytest.approx(by_torchrun["first_loss"], abs=1e-6)
    assert by_deepspeed["last_loss"] == pytest.approx(by_torchrun["last_loss"], abs=1e-6)
    for run in ("torchrun", "deepspeed"):  # both ranks wrote their data positions
        last = list_checkpoints(str(tmp_path / run))[-1]
        assert sorted(os.listdir(os.path.join(last, "data"))) == ["rank_00000.json",
                                                                  "rank_00001.json"]
    a, b = (weights(exported(tmp_path / run, ckpt)) for run in ("torchrun", "deepspeed"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
