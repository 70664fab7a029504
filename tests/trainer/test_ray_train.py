"""jobs.train --launcher ray on real local clusters, under `ray job submit` and as a driver
joining with --ray-address: a killed worker is replaced and the run resumes from the latest
checkpoint, an interrupted run resumes by its name to what torchrun trains, another world size
is refused; on two nodes, with the run directory, Ray's checkpoints and TensorBoard in object
storage, it trains what torchrun trains, and a rerun finds the run finished."""
from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from model.layout import checkpoint_paths
from model.pipeline import DragEditPipeline
from tests.conftest import REPO
from tests.ray_cluster import clean_env
from tests.trainer.test_loop import weights
from tests.trainer.trainer_helpers import STEPS, summary_of, two_rank_config
from trainer.checkpoint import EXPORT_DIR
from trainer.ray_train import storage_filesystem


def export_weights(checkpoint, ckpt) -> dict:
    paths = checkpoint_paths(str(ckpt))
    return weights(DragEditPipeline.from_pretrained(os.path.join(checkpoint, EXPORT_DIR),
                                                    paths["base"], paths["ip_adapter"]))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.fixture(scope="module")
def torchrun_weights(setup, torchrun_run) -> dict:
    """The final export's weights of the session's two torchrun ranks (conftest.torchrun_run),
    which trained the config these runs train."""
    return export_weights(torchrun_run.run_dir / "checkpoints" / f"step_{STEPS:08d}", setup[0])


def submit_train(cluster, cfg, *args) -> str:
    return cluster.submit("python", "-m", "jobs.train", "--launcher", "ray", "--config", cfg,
                          "--device", "cpu", *args)


def train_workers(cluster) -> list[int]:
    """This cluster's Ray Train worker processes (Ray titles them `ray::RayTrainWorker`)."""
    found = []
    for pid in cluster.processes():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::RayTrainWorker"):
                    found.append(pid)
        except OSError:
            pass
    return found


def kill_a_worker_after_a_new_checkpoint(cluster, job_id, experiment, seen=None) -> str:
    """SIGKILL one training worker once Ray has registered a checkpoint of the run other than
    `seen` (a path); returns the registered checkpoint's path."""
    from ray.train import Result

    deadline = time.time() + 300
    for tick in itertools.count():
        try:
            latest = Result.from_path(experiment).checkpoint
        except RuntimeError:  # no run, or no checkpoint registered yet
            latest = None
        if latest is not None and latest.path != seen:
            break
        if tick % 10 == 0:
            assert cluster.status(job_id) in ("PENDING", "RUNNING"), cluster.logs(job_id)
        assert time.time() < deadline, cluster.logs(job_id)
        time.sleep(0.1)
    workers = train_workers(cluster)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)
    return latest.path


@pytest.mark.slow
@pytest.mark.ray
def test_a_killed_worker_is_replaced_and_an_interrupted_run_resumes_by_name_with_its_world_size_only(
        cluster, setup, torchrun_run, torchrun_weights, tmp_path):
    """One run, killed twice: with one restart allowed, a killed worker is replaced and the
    workers resume from the latest checkpoint; a worker of the restarted group killed too, the
    run fails, and is resumed by its name (with its world size only) to the end."""
    ckpt, shards = setup
    cfg = two_rank_config(tmp_path / "train.yaml", tmp_path / "run", ckpt, shards)
    storage = ["--storage-path", f"file://{tmp_path / 'storage'}", "--run-name", "exp1"]
    experiment = tmp_path / "storage" / "exp1"
    job = submit_train(cluster, cfg, "--num-workers", "2", "--max-failures", "1", *storage)
    first = kill_a_worker_after_a_new_checkpoint(cluster, job, str(experiment))
    # the workers are replaced, resume, and register a newer checkpoint: no restart is left
    kill_a_worker_after_a_new_checkpoint(cluster, job, str(experiment), seen=first)
    status, log = cluster.wait(job)
    assert status == "FAILED" and "error: training failed" in log, log
    assert "[FailurePolicy] RETRY" in log, log
    assert f"resumed from {experiment}/step_" in log, log  # by the replaced workers

    # another number of workers: refused before any worker starts
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.train", "--launcher", "ray", "--config", cfg,
         "--num-workers", "1", "--ray-address", cluster.address, *storage],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {experiment}/step_") and \
        "was written by a run with world size 2, and this run has world size 1: resume it " \
        "with 2 ranks" in error, error

    # the same name and world size: resumes where Ray's latest checkpoint is, and the run ends
    # as if uninterrupted
    status, log = cluster.wait(submit_train(cluster, cfg, "--num-workers", "2", *storage))
    assert status == "SUCCEEDED", log
    assert f"resumed from {experiment}/step_" in log
    summary = summary_of(log)
    assert (summary["step"], summary["samples"]) == (STEPS, 2 * STEPS)
    assert summary["last_loss"] == pytest.approx(torchrun_run.summary["last_loss"], abs=1e-6)
    assert_same_weights(export_weights(experiment / f"step_{STEPS:08d}", ckpt), torchrun_weights)


@pytest.mark.slow
@pytest.mark.ray
def test_two_workers_on_two_nodes_with_the_run_in_s3_train_what_torchrun_trains_and_a_rerun_finds_it_finished(
        multinode, s3, setup, torchrun_run, torchrun_weights, tmp_path):
    """A driver joining a cluster with --ray-address, the run directory in object storage and
    Ray's checkpoints in it by default (`<run_dir>/checkpoints`), a worker on each node."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from schemas import storage

    ckpt, shards = setup
    bucket = s3.new_bucket("raytrain")
    cfg = two_rank_config(tmp_path / "train.yaml", f"{bucket}/run", ckpt, shards,
                          tensorboard=True)
    env = {k: v for k, v in clean_env().items() if k != "RAY_AUTH_MODE"}  # no auth on it
    # One CPU per worker, one CPU per worker node, none on the head: a worker on each node.
    command = [sys.executable, "-m", "jobs.train", "--launcher", "ray", "--config", cfg,
               "--num-workers", "2", "--cpus-per-worker", "1", "--ray-address",
               multinode.address, "--device", "cpu"]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f"ray: joined {multinode.address}" in proc.stderr
    summary, reference = summary_of(proc.stdout), torchrun_run.summary
    assert (summary["step"], summary["samples"], summary["world_size"]) == (STEPS, 2 * STEPS, 2)
    assert summary["first_loss"] == pytest.approx(reference["first_loss"], abs=1e-6)
    assert summary["last_loss"] == pytest.approx(reference["last_loss"], abs=1e-6)
    # Ray kept the newest one, in the plain launcher's layout; every rank's files merged in
    kept = s3.files(f"{bucket}/run/checkpoints")
    last = f"step_{STEPS:08d}"
    assert {p.split("/")[0] for p in kept if p.startswith("step_")} == {last}
    assert sorted(p for p in kept if p.startswith(f"{last}/data/")) == \
        [f"{last}/data/rank_00000.json", f"{last}/data/rank_00001.json"]
    assert sorted(p for p in kept if "optim_states" in p) == \
        [f"{last}/state/zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)]
    assert json.loads(kept[f"{last}/trainer.json"])["world_size"] == 2
    local = tmp_path / "kept"
    storage.download_tree(f"{bucket}/run/checkpoints/{last}", str(local))
    assert_same_weights(export_weights(local, ckpt), torchrun_weights)
    run = s3.files(f"{bucket}/run")
    assert {"config.yaml", f"validation/{last}.png"} <= set(run)
    events = EventAccumulator(f"{bucket}/run/tensorboard")
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")][-1] == STEPS

    # again: Ray hands back the final checkpoint, nothing is left to do
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    output = proc.stdout + proc.stderr
    assert f"resumes from {bucket.removeprefix('s3://')}/run/checkpoints/{last} at step " \
        f"{STEPS}" in output, output[-4000:]
    assert re.search(rf"resumed from \S+ at step {STEPS}\b", output), output[-4000:]  # a worker
    again = summary_of(proc.stdout)
    assert (again["step"], again["first_loss"]) == (STEPS, None)
    assert {p.split("/")[0] for p in s3.files(f"{bucket}/run/checkpoints")
            if p.startswith("step_")} == {last}


def test_storage_paths_and_urls_become_pyarrow_filesystems(tmp_path, monkeypatch):
    import pyarrow.fs

    monkeypatch.chdir(tmp_path)
    fs, path = storage_filesystem("runs")
    assert isinstance(fs, pyarrow.fs.LocalFileSystem) and path == str(tmp_path / "runs")
    fs, path = storage_filesystem(f"file://{tmp_path}/runs")
    assert isinstance(fs, pyarrow.fs.LocalFileSystem) and path == f"{tmp_path}/runs"
    fs, path = storage_filesystem("memory://bucket/runs")  # a URL only fsspec knows
    assert isinstance(fs, pyarrow.fs.PyFileSystem)
    with fs.open_output_stream(f"{path}/x.txt") as f:
        f.write(b"kept")
    with fs.open_input_stream(f"{path}/x.txt") as f:
        assert f.read() == b"kept"
