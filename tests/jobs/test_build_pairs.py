"""`python -m jobs.build_pairs` end to end on a real local Ray: own cluster, joined cluster and
`ray job submit`, several nodes (units on both workers, a worker node lost midway, an output
not every node reaches), determinism, kill-and-resume (driver killed, worker killed, submitted
job killed; resumed with other execution settings), incremental inputs (tar shards too),
dataset versions, bad usage.

Every build is a real job process. Only the reference run starts its own Ray (the embedded
default, which it checks); the others join the session's running cluster (tests/conftest.py)
and so skip starting one. Runs that refuse their arguments or find nothing to do (and so never
start Ray) call the job's main() in this process."""
from __future__ import annotations

import filecmp
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import build_pairs
from jobs.dataset_info import main as dataset_info_main
from pipeline import synthetic
from pipeline.plan import member_uri, read_plan, video_id
from pipeline.report import status_reason
from schemas.dataset import read_version_info
from schemas.shard import list_shards
from schemas.validate import main as validate_main
from tests.conftest import REPO
from tests.ray_cluster import clean_env

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CONFIG = ["--set", "output.videos_per_unit=2", "--set", "execution.max_units_in_flight=1"]
# A resubmit with more resources and other scheduling: the same dataset version, same bytes.
OTHER_EXECUTION = ["--set", "execution.max_units_in_flight=3", "--set",
                   "execution.tracker_actors=2", "--set", "execution.tracker_cpus=0.25",
                   "--set", "execution.task_cpus=0.5", "--set", "execution.max_retries=5",
                   "--set", "execution.decode_timeout_s=120"]


def job_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = str(REPO)
    return {**env, **extra}


def run_job(*args, timeout=300, env=None):
    proc = subprocess.run([sys.executable, "-m", "jobs.build_pairs", *args], cwd=REPO,
                          env=env or job_env(), capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def run_main(capsys, monkeypatch, *args):
    """The job's main() in this process, for runs that stop before Ray (bad usage, nothing to
    do): (exit status, everything it printed), as run_job returns them."""
    # main() sets this for a private Ray: this process's environment is left as it was.
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    capsys.readouterr()
    try:
        code = build_pairs.main([str(a) for a in args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out + out.err


def joined(cluster):
    """Arguments and environment of a run that joins the session's cluster."""
    return ["--ray-address", cluster.address], clean_env()


def dataset_files(version):
    """Everything a dataset consumer reads (the report holds timings and version.json the
    creation time, so they are left out)."""
    names = sorted(n for n in os.listdir(version) if n.endswith((".tar", ".parquet", ".yaml")))
    return names + ["_plan/units.jsonl"]


def assert_same_dataset(a, b):
    """Versions `a` and `b` hold the same bytes, made with the same config."""
    files = dataset_files(a)
    assert files == dataset_files(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    assert read_version_info(a)["config_sha256"] == read_version_info(b)["config_sha256"]


def snapshot(directory):
    """{relative path: (bytes, mtime in ns)} of every file under `directory`."""
    files = {}
    for root, _, names in os.walk(directory):
        for n in names:
            path = os.path.join(root, n)
            with open(path, "rb") as f:
                files[os.path.relpath(path, directory)] = (f.read(), os.stat(path).st_mtime_ns)
    return files


def units_written(version) -> int:
    return sum(n.endswith(".videos.parquet") for n in os.listdir(version)) \
        if os.path.isdir(version) else 0


def video_rows(version) -> list[dict]:
    return [r for f in sorted(os.listdir(version)) if f.endswith(".videos.parquet")
            for r in pq.read_table(os.path.join(version, f)).to_pylist()]


def pair_keys(version) -> list[str]:
    return [k for f in sorted(os.listdir(version)) if f.endswith(".pairs.parquet")
            for k in pq.read_table(os.path.join(version, f)).column("key").to_pylist()]


@pytest.fixture(scope="module")
def inputs(standard_clips, bad_inputs):
    """(the directory of the standard set, the bad inputs {path: status prefix})."""
    return Path(standard_clips[0][0]).parent, bad_inputs


def build_args(inputs, out):
    clips, bad = inputs
    return ["--input", str(clips), *map(str, bad), "--output", str(out), *CONFIG]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """One uninterrupted run on the embedded default (a local Ray the job starts): (the
    dataset directory, its one version v1, the log)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    code, log = run_job(*build_args(inputs, out))
    assert code == 0, log
    return out, out / "v1", log


def test_default_run_covers_every_input(reference, inputs):
    out, v1, log = reference
    clips, bad = inputs
    assert f"dataset: {v1} (new dataset)" in log
    assert "ray: started a local cluster" in log
    assert sorted(os.listdir(out)) == ["v1"]
    rows = video_rows(v1)
    statuses = {r["source_uri"]: r["status"] for r in rows}
    assert len(rows) == len(statuses) == 6 + len(bad)
    for path, prefix in bad.items():
        assert statuses[str(path)].startswith(prefix)
    assert statuses[str(clips / "pan-0.mp4")] == "filtered:camera-motion"
    assert statuses[str(clips / "translate-0.mp4")] == "ok"
    assert validate_main([str(out)]) == 0
    for name in ("report.json", "index.md", "contact_sheet.png", "hist_pair_motion.png"):
        assert (v1 / "report" / name).is_file()
    assert "[" in log and "units] pairs-" in log  # progress lines


def test_killed_run_resumes_to_the_same_output_and_a_killed_worker_is_retried(
        reference, inputs, cluster, tmp_path):
    """The job is killed (SIGKILL) after its first unit. The rerun, with other execution
    settings, resumes; a prepare worker killed during it is retried, and the output is exact.
    Both join the session's cluster."""
    out = tmp_path / "out"
    address, env = joined(cluster)
    proc = subprocess.Popen([sys.executable, "-m", "jobs.build_pairs", *build_args(inputs, out),
                             *address], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    total = units_written(reference[1])
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and proc.poll() is None:
        done = units_written(out / "v1")
        if done >= 1:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= done < total, f"kill did not land midway ({done} of {total} units)"
    # Whatever is visible is complete: every shard reads back and validates.
    assert validate_main([str(out)]) == 0 or not list(out.glob("v1/*.tar"))

    proc = subprocess.Popen([sys.executable, "-m", "jobs.build_pairs", *build_args(inputs, out),
                             *OTHER_EXECUTION, *address], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
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
    assert f"dataset: {out}/v1 (same config: resuming)" in log
    assert "already complete" in log
    assert sorted(os.listdir(out)) == ["v1"]
    assert_same_dataset(reference[1], out / "v1")
    assert not [n for n in os.listdir(out / "v1") if ".tmp-" in n]


def test_incremental_run_on_a_joined_cluster_adds_only_new_inputs_including_tar_shards(
        reference, inputs, cluster, tmp_path):
    """The run joins the session's running cluster (`ray start`), as on a real one."""
    clips, bad = inputs
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    v1 = out / "v1"
    before = {n: (v1 / n).stat().st_mtime_ns for n in os.listdir(v1) if n.startswith("pairs-")}
    (tmp_path / "new").mkdir()
    new = []
    for kind in synthetic.STANDARD_KINDS[:3]:   # the first 3 clips of standard_set(..., seed=5)
        new.append(tmp_path / "new" / f"{kind}-5.mp4")
        synthetic.make_clip(synthetic.ClipSpec(name=f"{kind}-5", kind=kind, seed=5), new[-1])
    shard = tmp_path / "shard-0.tar"
    with tarfile.open(shard, "w") as tar:
        for path in new:
            tar.add(path, arcname=os.path.basename(path))
    address, env = joined(cluster)
    code, log = run_job("--input", str(clips), *map(str, bad), str(shard),
                        "--output", str(out), *CONFIG, *address, env=env)
    assert code == 0, log
    assert f"ray: joined {cluster.address}" in log
    # The cluster itself lists this run's driver (asked as another client of the cluster).
    listing = subprocess.run(
        [sys.executable, "-c", "from ray.job_submission import JobSubmissionClient as C; "
         f"print([j.entrypoint for j in C('{cluster.dashboard}').list_jobs()])"],
        env=clean_env(), capture_output=True, text=True, timeout=60)
    assert re.search(rf"jobs\.build_pairs [^']*--output {re.escape(str(out))} ",
                     listing.stdout), listing.stdout + listing.stderr
    assert f"dataset: {v1} (same config: resuming)" in log
    units_before = sum(n.endswith(".videos.parquet") for n in before)
    assert f"{units_before} already complete, 1 to do" in log
    after = {n: (v1 / n).stat().st_mtime_ns for n in os.listdir(v1) if n.startswith("pairs-")}
    assert {n: after[n] for n in before} == before  # old shards untouched
    added = sorted(set(after) - set(before))
    videos = [n for n in added if n.endswith(".videos.parquet")]
    assert len(videos) == 1
    rows = pq.read_table(v1 / videos[0]).to_pylist()
    assert sorted(r["source_uri"] for r in rows) == sorted(
        member_uri(str(shard), os.path.basename(p)) for p in new)
    assert all(r["status"] == "ok" and r["num_pairs"] > 0 for r in rows)
    assert validate_main([str(out)]) == 0


def test_changed_config_makes_a_new_version_beside_the_old(reference, inputs, cluster, tmp_path,
                                                           capsys, caplog, monkeypatch):
    clips, _ = inputs
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    v1, v2 = out / "v1", out / "v2"
    before = snapshot(v1)
    address, env = joined(cluster)
    code, log = run_job(*build_args(inputs, out), "--set", "filter.static_threshold=0.05",
                        *address, env=env)
    assert code == 0, log
    assert (f"dataset: {v2} (new version: config differs from v1 in filter.static_threshold "
            "0.004 -> 0.05)") in log
    assert sorted(os.listdir(out)) == ["v1", "v2"]
    assert snapshot(v1) == before                      # every byte and mtime, report included
    # Known outcome: rotate-0 and scale-0 (object motion about 0.03 of the diagonal per second)
    # are static under the new threshold; every other input keeps its status, and a unit
    # without either of them makes the same bytes as in v1.
    moved = {str(clips / "rotate-0.mp4"), str(clips / "scale-0.mp4")}
    old = {r["source_uri"]: r["status"] for r in video_rows(v1)}
    new = {r["source_uri"]: r["status"] for r in video_rows(v2)}
    assert {u: old[u] for u in moved} == {u: "ok" for u in moved}
    assert new == {u: "filtered:static" if u in moved else status for u, status in old.items()}
    assert read_plan(str(v2)) == read_plan(str(v1))
    moved_ids = {video_id(u) for u in moved}
    assert pair_keys(v2) == [k for k in pair_keys(v1) if k.rsplit("-", 1)[0] not in moved_ids]
    for unit in read_plan(str(v1)):
        if not moved & set(unit.inputs):
            names = [f"{unit.name}.pairs.parquet"] + (
                [f"{unit.name}.tar"] if (v1 / f"{unit.name}.tar").exists() else [])
            assert filecmp.cmpfiles(v1, v2, names, shallow=False)[0] == names, unit.name

    # The original config again: v1, complete, is resumed; no new version.
    code, log = run_main(capsys, monkeypatch, *build_args(inputs, out))
    assert code == 0, log
    total = units_written(v1)
    assert f"dataset: {v1} (same config: resuming)" in log
    assert f"{total} already complete, 0 to do" in log
    assert sorted(os.listdir(out)) == ["v1", "v2"]
    after = snapshot(v1)
    assert {n: after[n] for n in after if not n.startswith("report/")} == \
        {n: before[n] for n in before if not n.startswith("report/")}
    assert_same_dataset(reference[1], v1)

    # jobs.dataset_info tells both versions apart, with the manifests' counts.
    assert dataset_info_main([str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["latest"] == "v2" and [v["name"] for v in info["versions"]] == ["v1", "v2"]
    for v, version in zip(info["versions"], (v1, v2)):
        rows = video_rows(version)
        reasons = Counter(status_reason(r["status"]) for r in rows)
        shards = sorted(version.glob("*.tar"))
        assert (v["videos"], v["pairs"], v["shards"], v["units"], v["incomplete_units"]) == (
            len(rows), len(pair_keys(version)), len(shards), total, [])
        assert v["status_reasons"] == dict(sorted(reasons.items()))
        assert v["shard_bytes"] == sum(p.stat().st_size for p in shards)
    assert info["versions"][0]["config_changes"] is None
    assert info["versions"][1]["config_changes"] == [
        {"key": "filter.static_threshold", "old": 0.004, "new": 0.05}]
    assert info["versions"][1]["status_reasons"]["filtered:static"] == \
        info["versions"][0]["status_reasons"]["filtered:static"] + 2

    # The validator checks every version; the trainer, given the dataset, reads the latest.
    assert validate_main([str(out)]) == 0
    assert f"{out}: dataset of 2 version(s): v1, v2" in capsys.readouterr().out
    with caplog.at_level(logging.INFO, logger="schemas.shard"):
        assert list_shards(str(out)) == sorted(str(p) for p in v2.glob("*.tar"))
    assert f"data: {out} is a dataset directory; using its latest version {v2}" in caplog.text


def test_bad_usage_exits_2(tmp_path, inputs, capsys, monkeypatch):
    clips, _ = inputs
    code, log = run_main(capsys, monkeypatch, "--input", clips, "--output", tmp_path / "o",
                         "--set", "output.resolutoin=3")
    assert code == 2 and "unknown config key(s) output.resolutoin" in log
    code, log = run_main(capsys, monkeypatch, "--input", tmp_path / "nothing" / "*.mp4",
                         "--output", tmp_path / "o2")
    assert code == 2 and "no inputs found" in log
    assert not (tmp_path / "o2").exists()              # no version made for nothing
    code, log = run_main(capsys, monkeypatch, "--output", tmp_path / "o4")
    assert code == 2 and "--input" in log


def test_flat_dataset_of_earlier_builds_is_refused(reference, inputs, tmp_path, capsys,
                                                    monkeypatch):
    flat = tmp_path / "flat"
    shutil.copytree(reference[1], flat)                # the layout before versions
    before = snapshot(flat)
    code, log = run_main(capsys, monkeypatch, *build_args(inputs, flat))
    assert code == 2, log
    assert (f"error: {flat} holds a dataset in the flat layout of earlier builds (config.yaml "
            f"at its top level); datasets are now versioned ({flat}/v1, {flat}/v2, ...). Move "
            f"its files into {flat}/v1 (locally: mv {flat} {flat}.flat && mkdir {flat} && mv "
            f"{flat}.flat {flat}/v1) and rerun") in log
    assert snapshot(flat) == before
    # The way out the message gives works: the moved dataset is v1 and resumes.
    os.rename(flat, f"{flat}.flat")
    flat.mkdir()
    os.rename(f"{flat}.flat", flat / "v1")
    code, log = run_main(capsys, monkeypatch, *build_args(inputs, flat))
    assert code == 0, log
    assert f"dataset: {flat}/v1 (same config: resuming)" in log
    assert f"{units_written(flat / 'v1')} already complete, 0 to do" in log


def worker_pids(task_name):
    """PIDs of Ray workers currently running `task_name` (Ray sets the process title)."""
    return processes_with(f"ray::{task_name}")


def processes_with(*texts):
    """PIDs of the processes whose command line contains every one of `texts`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if all(t.encode() in cmdline for t in texts):
                pids.append(int(entry))
    return pids


# --- `ray job submit` to the session's running cluster (`ray start`), as on a real one -------


def test_ray_job_submit_killed_and_resubmitted_ends_with_the_same_dataset(cluster, reference,
                                                                           inputs, tmp_path):
    """The job runs in a copy of the repository (--working-dir), so paths are absolute."""
    out = tmp_path / "out"
    entrypoint = ["python", "-m", "jobs.build_pairs", *build_args(inputs, out)]
    job = cluster.submit(*entrypoint)
    total = units_written(reference[1])
    deadline = time.time() + 240
    while units_written(out / "v1") < 1 and time.time() < deadline:
        time.sleep(0.05)
    # The driver dies as in a crash or a lost head-node process: SIGKILL, no clean-up.
    driver = processes_with("jobs.build_pairs", str(out))
    for pid in driver:
        os.kill(pid, signal.SIGKILL)
    assert driver, "the job's driver was not found"
    status, logs = cluster.wait(job)
    assert status == "FAILED", logs
    assert f"dataset: {out}/v1 (new dataset)" in logs and "ray: joined" in logs
    done = units_written(out / "v1")
    assert 1 <= done < total, f"kill did not land midway ({done} of {total} units)"
    status, logs = cluster.run(*entrypoint, *OTHER_EXECUTION)
    assert status == "SUCCEEDED", logs
    assert f"dataset: {out}/v1 (same config: resuming)" in logs
    resumed = re.search(rf"in {total} units; (\d+) already complete", logs)
    assert resumed and done <= int(resumed.group(1)) < total, logs
    assert sorted(os.listdir(out)) == ["v1"]
    assert_same_dataset(reference[1], out / "v1")


# --- several nodes: a head and two worker nodes on loopback, one cluster per session --------

MULTINODE = ["--set", "execution.task_cpus=0.5", "--set", "execution.max_units_in_flight=2"]


def multinode_args(inputs, out, multinode):
    return [*build_args(inputs, out), *MULTINODE, "--ray-address", multinode.address]


def test_units_run_on_both_worker_nodes_and_the_report_counts_them(multinode, reference,
                                                                     inputs, tmp_path):
    out = tmp_path / "out"
    code, log = run_job(*multinode_args(inputs, out, multinode), env=multinode.driver_env())
    assert code == 0, log
    assert f"ray: joined {multinode.address}" in log
    assert "output: reachable from all 3 Ray node(s)" in log
    assert_same_dataset(reference[1], out / "v1")
    run_stats = json.loads((out / "v1" / "report" / "report.json").read_text())["run_stats"]
    by_node = run_stats["units_by_node"]
    workers = {multinode.node_id(name) for name in multinode.WORKERS}
    assert set(by_node) == workers, by_node        # both workers; the head has no CPUs
    assert sum(by_node.values()) == units_written(out / "v1")
    assert run_stats["execution"]["task_cpus"] == 0.5
    assert "units_by_node" in (out / "v1" / "report" / "index.md").read_text()


def test_a_worker_node_lost_midway_the_build_ends_identical_on_the_other(multinode, reference,
                                                                          inputs, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "jobs.build_pairs",
                             *multinode_args(inputs, out, multinode)],
                            cwd=REPO, env=multinode.driver_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "units] pairs-" in line:            # one unit written: the build is underway
                break
        total = units_written(reference[1])
        assert units_written(out / "v1") < total, "".join(seen)
        multinode.kill("node_b")
        log = "".join(seen) + proc.stdout.read()
        assert proc.wait(timeout=600) == 0, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if "node_b" not in multinode.nodes:
            multinode.add("node_b")
    assert_same_dataset(reference[1], out / "v1")
    assert validate_main([str(out)]) == 0


def test_an_output_some_node_cannot_read_is_refused_before_any_unit(multinode, inputs):
    root, _ = inputs
    code, log = run_job("--input", str(root / "clips"), "--output", "memory://dragvid/ds",
                        *MULTINODE, "--ray-address", multinode.address,
                        env=multinode.driver_env())
    assert code == 2, log
    refused = re.search(r"error: --output memory://dragvid/ds is not reachable from every Ray "
                        r"node: node ([0-9a-f]+) \(127\.0\.0\.1\) could not read the probe "
                        r"file the driver wrote there \(memory:// lives inside one process\): "
                        r"FileNotFoundError", log)
    assert refused, log
    nodes = {multinode.cluster.head_node.node_id, *(multinode.node_id(n)
                                                     for n in multinode.WORKERS)}
    assert refused.group(1) in nodes
    assert "an object store URL (s3://bucket/pairs, gs://...) or a filesystem mounted at the " \
           "same path on every node" in log
    assert "units] pairs-" not in log
