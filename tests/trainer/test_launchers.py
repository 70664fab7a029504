"""jobs.train under the `deepspeed` launcher and under torchrun: two ranks on real shards,
the same run either way; and a 2-rank run refuses to be resumed by one rank or by Ray Train."""
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
from trainer.checkpoint import list_checkpoints

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


@pytest.fixture(scope="module")
def two_rank_runs(setup, tmp_path_factory):
    """The same 2-rank run under torchrun and under the deepspeed launcher:
    (checkpoints, runs root, {launcher: summary})."""
    ckpt, shards = setup
    root = tmp_path_factory.mktemp("launchers")
    summaries = {
        "torchrun": launch([os.path.join(BIN, "torchrun"), "--nproc_per_node=2",
                            f"--master_port={free_port()}", "-m", "jobs.train",
                            *train_args(root / "torchrun", ckpt, shards)], root / "torchrun"),
        "deepspeed": launch([os.path.join(BIN, "deepspeed"), "--num_gpus=2",
                             f"--master_port={free_port()}", "jobs/train.py",
                             *train_args(root / "deepspeed", ckpt, shards)], root / "deepspeed"),
    }
    return ckpt, shards, root, summaries


def test_deepspeed_launcher_runs_the_same_two_ranks_as_torchrun(two_rank_runs):
    ckpt, _, root, summaries = two_rank_runs
    by_torchrun, by_deepspeed = summaries["torchrun"], summaries["deepspeed"]
    for summary in (by_torchrun, by_deepspeed):
        assert (summary["step"], summary["samples"]) == (2, 2 * 2 * 2)  # 2 ranks x batch 2
    assert by_deepspeed["first_loss"] == pytest.approx(by_torchrun["first_loss"], abs=1e-6)
    assert by_deepspeed["last_loss"] == pytest.approx(by_torchrun["last_loss"], abs=1e-6)
    for run in ("torchrun", "deepspeed"):  # both ranks wrote their data positions
        last = list_checkpoints(str(root / run))[-1]
        assert sorted(os.listdir(os.path.join(last, "data"))) == ["rank_00000.json",
                                                                  "rank_00001.json"]
    a, b = (weights(exported(root / run, ckpt)) for run in ("torchrun", "deepspeed"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resuming_with_another_world_size_or_launcher_exits_2_saying_which(two_rank_runs):
    ckpt, shards, root, _ = two_rank_runs
    run = root / "torchrun"
    args = [sys.executable, "-m", "jobs.train", *train_args(run, ckpt, shards)]
    env = clean_env(OMP_NUM_THREADS="1")
    one = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 2, one.stderr[-4000:]
    assert one.stderr.strip().splitlines()[-1] == (
        f"error: {run}/checkpoints/step_00000002 was written by a run with world size 2, and "
        "this run has world size 1: resume it with 2 ranks (torchrun --nproc_per_node, or "
        "--num-workers with --launcher ray), or start a new run (another run_dir, or another "
        "--run-name with --launcher ray); checkpoints are not converted between world sizes")
    # nor does Ray Train take over checkpoints it has no record of (before starting Ray)
    ray = subprocess.run([*args, "--launcher", "ray", "--num-workers", "2"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ray.returncode == 2, ray.stderr[-4000:]
    assert ray.stderr.strip().splitlines()[-1].startswith(
        f"error: {run}/checkpoints holds checkpoints that Ray Train has no record of")
