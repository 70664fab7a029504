"""`python -m jobs.build_pairs` end to end on a real local Ray: own cluster and joined
cluster, determinism, kill-and-resume, incremental inputs (tar shards too), bad usage."""
from __future__ import annotations

import filecmp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time

import pyarrow.parquet as pq
import pytest

from pipeline import synthetic
from pipeline.plan import member_uri
from schemas.validate import main as validate_main
from tests.conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CONFIG = ["--set", "output.videos_per_unit=2", "--set", "ray.max_units_in_flight=1"]


def job_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = str(REPO)
    return {**env, **extra}


# A `ray start` cluster as a user runs one: token authentication on (clients that name an
# address must say so), and kept on loopback (otherwise Ray swaps 127.0.0.1 for the machine's
# routable address).
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}


def run_job(*args, timeout=300, env=None):
    proc = subprocess.run([sys.executable, "-m", "jobs.build_pairs", *args], cwd=REPO,
                          env=env or job_env(), capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def dataset_files(out):
    """Everything a dataset consumer reads (the report holds timings, so it is left out)."""
    names = sorted(n for n in os.listdir(out) if n.endswith((".tar", ".parquet", ".yaml")))
    return names + ["_plan/units.jsonl"]


def assert_same_dataset(a, b):
    files = dataset_files(a)
    assert files == dataset_files(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    synthetic.standard_set(root / "clips", seed=0)
    bad = synthetic.make_bad_inputs(root / "bad")
    return root, bad


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """One uninterrupted run on the embedded default (a local Ray the job starts)."""
    root, bad = inputs
    out = tmp_path_factory.mktemp("reference") / "out"
    code, log = run_job("--input", str(root / "clips"), *map(str, bad), "--output", str(out),
                        *CONFIG)
    assert code == 0, log
    return out, log


def test_default_run_covers_every_input(reference, inputs):
    out, log = reference
    root, bad = inputs
    assert "ray: started a local cluster" in log
    rows = [r for f in sorted(os.listdir(out)) if f.endswith(".videos.parquet")
            for r in pq.read_table(out / f).to_pylist()]
    statuses = {r["source_uri"]: r["status"] for r in rows}
    assert len(rows) == len(statuses) == 6 + len(bad)
    for path, prefix in bad.items():
        assert statuses[str(path)].startswith(prefix)
    assert statuses[str(root / "clips" / "pan-0.mp4")] == "filtered:camera-motion"
    assert statuses[str(root / "clips" / "translate-0.mp4")] == "ok"
    assert validate_main([str(out)]) == 0
    for name in ("report.json", "index.md", "contact_sheet.png", "hist_pair_motion.png"):
        assert (out / "report" / name).is_file()
    assert "[" in log and "units] pairs-" in log  # progress lines


def test_two_runs_are_identical(reference, inputs, tmp_path):
    root, bad = inputs
    code, log = run_job("--input", str(root / "clips"), *map(str, bad), "--output",
                        str(tmp_path / "out"), *CONFIG)
    assert code == 0, log
    assert_same_dataset(reference[0], tmp_path / "out")


def test_killed_run_resumes_to_the_same_output(reference, inputs, tmp_path):
    root, bad = inputs
    out = tmp_path / "out"
    args = [sys.executable, "-m", "jobs.build_pairs", "--input", str(root / "clips"),
            *map(str, bad), "--output", str(out), *CONFIG]
    proc = subprocess.Popen(args, cwd=REPO, env=job_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    total = sum(f.endswith(".videos.parquet") for f in os.listdir(reference[0]))
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and proc.poll() is None:
        done = sum(f.endswith(".videos.parquet") for f in os.listdir(out)) if out.exists() else 0
        if done >= 1:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= done < total, f"kill did not land midway ({done} of {total} units)"
    # Whatever is visible is complete: every shard reads back and validates.
    assert validate_main([str(out)]) == 0 or not list(out.glob("*.tar"))
    code, log = run_job("--input", str(root / "clips"), *map(str, bad), "--output", str(out),
                        *CONFIG)
    assert code == 0, log
    assert "already complete" in log
    assert_same_dataset(reference[0], out)
    assert not [n for n in os.listdir(out) if ".tmp-" in n]


def test_incremental_run_adds_only_new_inputs_including_tar_shards(reference, inputs, tmp_path):
    root, bad = inputs
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    before = {n: (out / n).stat().st_mtime_ns for n in os.listdir(out) if n.startswith("pairs-")}
    new = synthetic.standard_set(tmp_path / "new", seed=5)
    shard = tmp_path / "shard-0.tar"
    with tarfile.open(shard, "w") as tar:
        for path, _ in new[:3]:
            tar.add(path, arcname=os.path.basename(path))
    code, log = run_job("--input", str(root / "clips"), *map(str, bad), str(shard),
                        "--output", str(out), *CONFIG)
    assert code == 0, log
    units_before = sum(n.endswith(".videos.parquet") for n in before)
    assert f"{units_before} already complete, 1 to do" in log
    after = {n: (out / n).stat().st_mtime_ns for n in os.listdir(out) if n.startswith("pairs-")}
    assert {n: after[n] for n in before} == before  # old shards untouched
    added = sorted(set(after) - set(before))
    videos = [n for n in added if n.endswith(".videos.parquet")]
    assert len(videos) == 1
    rows = pq.read_table(out / videos[0]).to_pylist()
    assert sorted(r["source_uri"] for r in rows) == sorted(
        member_uri(str(shard), os.path.basename(p)) for p, _ in new[:3])
    assert all(r["status"] == "ok" and r["num_pairs"] > 0 for r in rows)
    assert validate_main([str(out)]) == 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_joins_an_existing_cluster(inputs, tmp_path):
    root, _ = inputs
    port, dashboard = free_port(), free_port()
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    start = subprocess.run(ray + ["start", "--head", "--node-ip-address=127.0.0.1",
                                  f"--port={port}", "--num-cpus=2", f"--dashboard-port={dashboard}",
                                  "--include-dashboard=true", "--disable-usage-stats"],
                           env=job_env(**LOOPBACK), capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        code, log = run_job("--input", str(root / "clips" / "translate-0.mp4"), "--output",
                            str(tmp_path / "out"), "--ray-address", f"127.0.0.1:{port}", *CONFIG,
                            env=job_env(**LOOPBACK))
        assert code == 0, log
        assert f"ray: joined 127.0.0.1:{port}" in log
        # The cluster itself lists the job's driver (asked as another client of the cluster).
        listing = subprocess.run(
            [sys.executable, "-c", "from ray.job_submission import JobSubmissionClient as C; "
             f"print([j.entrypoint for j in C('http://127.0.0.1:{dashboard}').list_jobs()])"],
            env=job_env(**LOOPBACK), capture_output=True, text=True, timeout=60)
        assert "jobs.build_pairs" in listing.stdout, listing.stdout + listing.stderr
    finally:
        subprocess.run(ray + ["stop", "--force"], env=job_env(**LOOPBACK), capture_output=True,
                       timeout=60)


def test_bad_usage_exits_2(tmp_path, inputs):
    root, _ = inputs
    code, log = run_job("--input", str(root / "clips"), "--output", str(tmp_path / "o"),
                        "--set", "output.resolutoin=3")
    assert code == 2 and "unknown config key(s) output.resolutoin" in log
    code, log = run_job("--input", str(tmp_path / "nothing" / "*.mp4"), "--output",
                        str(tmp_path / "o2"))
    assert code == 2 and "no inputs found" in log
    (tmp_path / "o3").mkdir()
    (tmp_path / "o3" / "config.yaml").write_text("seed: 7\n")
    code, log = run_job("--input", str(root / "clips"), "--output", str(tmp_path / "o3"))
    assert code == 2 and "was built with a different config" in log
    code, log = run_job("--output", str(tmp_path / "o4"))
    assert code == 2 and "--input" in log


def worker_pids(task_name):
    """PIDs of Ray workers currently running `task_name` (Ray sets the process title)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f"ray::{task_name}".encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def test_killed_worker_is_retried_and_output_is_exact(reference, inputs, tmp_path):
    root, bad = inputs
    out = tmp_path / "out"
    args = [sys.executable, "-m", "jobs.build_pairs", "--input", str(root / "clips"),
            *map(str, bad), "--output", str(out), *CONFIG]
    proc = subprocess.Popen(args, cwd=REPO, env=job_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    killed = []
    deadline = time.time() + 240
    while not killed and proc.poll() is None and time.time() < deadline:
        for pid in worker_pids("prepare"):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.02)
    log, _ = proc.communicate(timeout=300)
    assert killed, "no prepare task was seen running"
    assert proc.returncode == 0, log
    assert_same_dataset(reference[0], out)
