"""jobs.train under the `deepspeed` launcher and under torchrun: two ranks on real shards,
the same run either way; and a 2-rank run refuses to be resumed by one rank or by Ray Train."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from tests.ray_cluster import clean_env, free_port
from tests.trainer.test_loop import exported, weights
from tests.trainer.trainer_helpers import STEPS, summary_of
from trainer.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow
BIN = os.path.dirname(sys.executable)


def test_deepspeed_launcher_runs_the_same_two_ranks_as_torchrun(setup, torchrun_run, tmp_path):
    ckpt, _ = setup
    run = tmp_path / "deepspeed"
    proc = subprocess.run(
        [os.path.join(BIN, "deepspeed"), "--num_gpus=2", f"--master_port={free_port()}",
         "jobs/train.py", "--config", torchrun_run.config, "--set", f"run_dir={run}",
         "--device", "cpu"],
        cwd=REPO, env=clean_env(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu"), capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    by_torchrun, by_deepspeed = torchrun_run.summary, summary_of(proc.stdout)
    for summary in (by_torchrun, by_deepspeed):
        assert (summary["step"], summary["samples"]) == (STEPS, STEPS * 2 * 1)  # 2 ranks x batch 1
    assert by_deepspeed["first_loss"] == pytest.approx(by_torchrun["first_loss"], abs=1e-6)
    assert by_deepspeed["last_loss"] == pytest.approx(by_torchrun["last_loss"], abs=1e-6)
    for run_dir in (torchrun_run.run_dir, run):  # both ranks wrote their data positions
        last = list_checkpoints(str(run_dir))[-1]
        assert sorted(os.listdir(os.path.join(last, "data"))) == ["rank_00000.json",
                                                                  "rank_00001.json"]
    a, b = (weights(exported(run_dir, ckpt)) for run_dir in (torchrun_run.run_dir, run))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resuming_with_another_world_size_or_launcher_exits_2_saying_which(torchrun_run,
                                                                          tmp_path):
    run = tmp_path / "torchrun"
    shutil.copytree(torchrun_run.run_dir, run)  # the jobs below write the run's config.yaml
    args = [sys.executable, "-m", "jobs.train", "--config", torchrun_run.config, "--set",
            f"run_dir={run}", "--device", "cpu"]
    env = clean_env(OMP_NUM_THREADS="1")
    one = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 2, one.stderr[-4000:]
    assert one.stderr.strip().splitlines()[-1] == (
        f"error: {run}/checkpoints/step_{STEPS:08d} was written by a run with world size 2, and "
        "this run has world size 1: resume it with 2 ranks (torchrun --nproc_per_node, or "
        "--num-workers with --launcher ray), or start a new run (another run_dir, or another "
        "--run-name with --launcher ray); checkpoints are not converted between world sizes")
    # nor does Ray Train take over checkpoints it has no record of (before starting Ray)
    ray = subprocess.run([*args, "--launcher", "ray", "--num-workers", "2"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ray.returncode == 2, ray.stderr[-4000:]
    assert ray.stderr.strip().splitlines()[-1].startswith(
        f"error: {run}/checkpoints holds checkpoints that Ray Train has no record of")
