"""Every job on object storage: a real S3-protocol server on loopback (moto in server mode,
`tests.object_store`), reached by s3fs through AWS_ENDPOINT_URL and a key pair as a user
reaches MinIO or S3, and, in one test, through the config's `storage` section alone.

build_pairs into s3:// (inputs from the bucket too), on a cluster of a head and two worker
nodes, equals the same build into a local directory byte for byte, validates and describes
itself on the URL, resumes (with other execution settings too), grows by a new input and
versions a changed threshold; training from those shards keeps checkpoints, config,
TensorBoard events and validation grids in the bucket, and a killed run rerun ends equal to
an uninterrupted one; evaluation and editing read and write URLs. No credential appears in
any file written or any log line. The builds and training are job processes; the jobs whose
process is not under test here (dataset_info, a build with nothing to do, evaluate, edit) run
their main() in this process, with this process's AWS_* variables."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from jobs import build_pairs, dataset_info, edit, evaluate
from pipeline import synthetic
from schemas import storage
from schemas.validate import main as validate_main
from tests.conftest import REPO, one_torch_thread
from tests.jobs.test_evaluate import metric_flags
from tests.object_store import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from tests.trainer.test_loop import weights
from tests.trainer.trainer_helpers import config
from trainer.checkpoint import EXPORT_DIR, UrlCheckpoints

pytestmark = [pytest.mark.slow, pytest.mark.ray]

CONFIG = ["--set", "output.videos_per_unit=2", "--set", "execution.max_units_in_flight=2",
          "--set", "execution.task_cpus=0.5"]
LOGS: list[str] = []   # every job's output, searched for credentials at the end


def run_main(capsys, caplog, job, *args):
    """`job.main(args)` in this process, for runs whose process is not under test (they read
    and write the bucket through this process's AWS_* variables, as a job process does):
    (exit status, what it printed and logged), kept in LOGS as run_job keeps a job's output."""
    capsys.readouterr()
    logged = len(caplog.text)
    code = job.main([str(a) for a in args])
    out = capsys.readouterr()
    LOGS.append(out.out + out.err + caplog.text[logged:])
    return code, out.out + out.err


def run_job(name, *args, env=None, timeout=600):
    if env is None:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
               "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", f"jobs.{name}", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
    LOGS.append(proc.stdout + proc.stderr)
    return proc.returncode, proc.stdout + proc.stderr


def dataset_objects(s3, version_url) -> dict[str, bytes]:
    """What a consumer reads of a version (the report holds timings, version.json the time)."""
    return {k: v for k, v in s3.files(version_url).items()
            if not k.startswith("report/") and k != "version.json"}


def local_files(version) -> dict[str, bytes]:
    return {rel: (version / rel).read_bytes() for rel in storage.local_files(str(version))
            if not rel.startswith("report/") and rel != "version.json"}


@pytest.fixture(scope="module")
def bucket(s3):
    return s3.new_bucket("dragvid")


@pytest.fixture(scope="module")
def clips(bucket, standard_clips):
    """The synthetic standard set, uploaded to BUCKET/clips/; returns the local paths."""
    for path, _ in standard_clips:
        storage.publish_file(path, f"{bucket}/clips/{os.path.basename(path)}")
    return [p for p, _ in standard_clips]


@pytest.fixture(scope="module")
def build(multinode):
    """`jobs.build_pairs ARGS` on the session's cluster of a head and two worker nodes (its
    nodes reach the S3 server through their environment, as a real cluster's do)."""
    return lambda *args: run_job("build_pairs", *args, *CONFIG, "--ray-address",
                                 multinode.address, env=multinode.driver_env())


@pytest.fixture(scope="module")
def s3_dataset(s3, bucket, clips, build, tmp_path_factory):
    """BUCKET/pairs built from BUCKET/clips; the same build into a local directory."""
    code, log = build("--input", f"{bucket}/clips", "--output", f"{bucket}/pairs")
    assert code == 0, log
    assert f"dataset: {bucket}/pairs/v1 (new dataset)" in log
    assert "output: reachable from all 3 Ray node(s)" in log
    local = tmp_path_factory.mktemp("local") / "pairs"
    code, local_log = build("--input", f"{bucket}/clips", "--output", local)
    assert code == 0, local_log
    return f"{bucket}/pairs", local, log


def test_a_build_into_s3_equals_the_local_build_validates_resumes_grows_and_versions(
        s3, bucket, clips, s3_dataset, build, multinode, tmp_path, capsys, caplog):
    url, local, log = s3_dataset
    objects = dataset_objects(s3, f"{url}/v1")
    assert objects == local_files(local / "v1")             # byte for byte
    assert any(k.endswith(".tar") for k in objects) and "_plan/units.jsonl" in objects
    assert yaml.safe_load(objects["config.yaml"]).keys() == {
        "decode", "filter", "output", "points", "sample", "seed", "track"}  # content only
    report = s3.files(f"{url}/v1/report")
    assert {"report.json", "index.md", "contact_sheet.png", "hist_pair_motion.png",
            "hist_motion_score.png"} <= set(report)
    assert Image.open(io.BytesIO(report["contact_sheet.png"])).size[0] > 64
    assert json.loads(report["report.json"])["totals"]["videos"] == len(clips)
    assert f"report: {url}/v1/report/index.md" in log

    code, out = run_main(capsys, caplog, dataset_info, url, "--json")
    assert code == 0, out
    info = json.loads(out)["versions"][0]
    assert (info["name"], info["videos"], info["incomplete_units"]) == ("v1", len(clips), [])
    local_pairs = [r for f in sorted((local / "v1").glob("*.pairs.parquet"))
                   for r in pq.read_table(f).to_pylist()]
    assert info["pairs"] == len(local_pairs) > 0
    # Resubmitted with more resources and other scheduling: the same version, nothing redone
    # (and so no Ray started: the job's main() runs in this process).
    code, out = run_main(capsys, caplog, build_pairs, "--input", f"{bucket}/clips", "--output",
                         url, *CONFIG, "--ray-address", multinode.address,
                         "--set", "execution.tracker_actors=2",
                         "--set", "execution.tracker_cpus=0.25",
                         "--set", "execution.max_retries=5",
                         "--set", "execution.max_units_in_flight=8")
    assert code == 0, out
    units = len([k for k in objects if k.endswith(".videos.parquet")])
    assert f"dataset: {url}/v1 (same config: resuming)" in out
    assert f"{units} already complete, 0 to do" in out
    assert dataset_objects(s3, f"{url}/v1") == objects      # nothing redone

    # A new input in the bucket: one new unit, the old shards untouched.
    extra = str(tmp_path / "translate-7.mp4")   # standard_set(..., seed=7)'s first clip
    synthetic.make_clip(synthetic.ClipSpec(name="translate-7", kind="translate", seed=7), extra)
    storage.publish_file(extra, f"{bucket}/clips/new-{os.path.basename(extra)}")
    code, out = build("--input", f"{bucket}/clips", "--output", url)
    assert code == 0, out
    assert f"{units} already complete, 1 to do" in out
    grown = dataset_objects(s3, f"{url}/v1")
    assert {k: grown[k] for k in objects if k != "_plan/units.jsonl"} == \
        {k: v for k, v in objects.items() if k != "_plan/units.jsonl"}
    assert len([k for k in grown if k.endswith(".videos.parquet")]) == units + 1

    # A changed filter threshold: v2 beside v1.
    code, out = build("--input", f"{bucket}/clips/{os.path.basename(clips[0])}", "--output",
                      url, "--set", "filter.static_threshold=0.05")
    assert code == 0, out
    assert (f"dataset: {url}/v2 (new version: config differs from v1 in "
            "filter.static_threshold 0.004 -> 0.05)") in out
    code, out = run_main(capsys, caplog, dataset_info, url)
    assert code == 0 and "v2 (latest)" in out, out
    assert validate_main([url]) == 0
    assert f"{url}: dataset of 2 version(s): v1, v2" in capsys.readouterr().out


def test_storage_settings_in_the_config_reach_every_worker_and_are_never_written(
        s3, bucket, clips, tmp_path):
    """No AWS_* credentials or endpoint in the job's environment: the config's storage
    section alone brings them, to the driver and every worker of the local Ray it starts."""
    settings = tmp_path / "pairs.yaml"
    settings.write_text(yaml.safe_dump({"storage": {
        "endpoint_url": s3.endpoint,
        "options": {"s3": {"key": ACCESS_KEY_ID, "secret": SECRET_ACCESS_KEY}}}}))
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    url = f"{bucket}/configured"
    code, log = run_job("build_pairs", "--input", f"{bucket}/clips/{os.path.basename(clips[0])}",
                        "--output", url, "--config", settings, *CONFIG, env=env)
    assert code == 0, log
    written = s3.files(url)
    assert "storage" not in yaml.safe_load(written["v1/config.yaml"])
    assert any(k.endswith(".videos.parquet") for k in written)
    for data in written.values():
        assert SECRET_ACCESS_KEY.encode() not in data and ACCESS_KEY_ID.encode() not in data
    assert SECRET_ACCESS_KEY not in log and ACCESS_KEY_ID not in log


STEPS = 6


def train_config(path, run_dir, checkpoints, shards) -> str:
    cfg = config(run_dir, checkpoints, data={"shards": shards, "batch_size": 1, "val_pairs": 1},
                 train={"steps": STEPS}, checkpoint={"every": 2, "keep_last": 2},
                 log={"every": 1, "val_steps": 2, "tensorboard": True, "sync_every_s": 0.0})
    path.write_text(cfg.to_yaml())
    return str(path)


def exported_weights(run_url, checkpoints) -> dict:
    from model.layout import checkpoint_paths
    from model.pipeline import DragEditPipeline

    paths = checkpoint_paths(str(checkpoints))
    store = UrlCheckpoints(run_url, keep_last=1)
    with store.latest() as last:
        pipe = DragEditPipeline.from_pretrained(os.path.join(last, EXPORT_DIR), paths["base"],
                                                paths["ip_adapter"])
        return weights(pipe)


def test_training_on_s3_shards_with_the_run_in_s3_resumes_after_a_kill(
        s3, bucket, s3_dataset, checkpoints, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer.config import load_config
    from trainer.loop import train

    shards = f"{s3_dataset[0]}/v1"
    steps = 4  # checkpoints at 2 and 4: killed after the first, resumed to the second
    fewer = [f"train.steps={steps}", "checkpoint.every=2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    # The uninterrupted run is only the reference: trained here, on one intra-op thread as
    # the jobs below (OMP_NUM_THREADS=1).
    straight = f"{bucket}/runs/straight"
    with one_torch_thread():
        train(load_config(train_config(tmp_path / "a.yaml", straight, checkpoints, shards),
                          fewer), device="cpu")

    killed = f"{bucket}/runs/killed"
    path = train_config(tmp_path / "b.yaml", killed, checkpoints, shards)
    args = ["--config", path, *(a for x in fewer for a in ("--set", x)), "--device", "cpu"]
    proc = subprocess.Popen([sys.executable, "-m", "jobs.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    store = UrlCheckpoints(killed, keep_last=2)
    deadline = time.time() + 300
    while not store.complete() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = [storage.basename(c) for c in store.complete()]
    assert first and first[-1] < f"step_{steps:08d}", first   # killed midway
    code, log = run_job("train", *args, env=env)
    assert code == 0, log
    assert "resumed from " in log and "run config: same config: resuming" in log
    assert [storage.basename(c) for c in store.complete()] == ["step_00000002", "step_00000004"]

    a, b = exported_weights(straight, checkpoints), exported_weights(killed, checkpoints)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    run = s3.files(killed)
    assert yaml.safe_load(run["config.yaml"])["run_dir"] == killed
    assert "validation/step_00000004.png" in run
    assert any(k.startswith("checkpoints/step_00000004/state/") for k in run)
    # TensorBoard reads the logdir in the bucket, events of both processes included.
    events = EventAccumulator(f"{killed}/tensorboard")
    events.Reload()
    steps_logged = sorted({e.step for e in events.Scalars("train/loss")})
    assert steps_logged == list(range(1, steps + 1))


def test_evaluate_and_edit_read_and_write_urls(s3, bucket, s3_dataset, checkpoints, tmp_path,
                                               capsys, caplog, one_thread):
    from jobs import make_tiny_extractors

    made = tmp_path / "extractors"
    assert make_tiny_extractors.main(["--out", str(made)]) == 0
    flags = metric_flags({"alexnet": made / "alexnet.pth",
                          "lpips": made / "lpips-alex-v0.1.pth"}, dift=False)
    out = f"{bucket}/eval/tiny"
    code, log = run_main(capsys, caplog, evaluate, "--bench", "pairs", "--data",
                         f"{s3_dataset[0]}/v1", "--out", out, "--checkpoints", checkpoints,
                         "--limit", "2", "--steps", "2", "--resolution", "64", "--device", "cpu",
                         *flags)
    assert code == 0, log
    results = s3.files(out)
    assert {"results.parquet", "results.csv", "summary.md", "summary.json",
            "gallery.png"} <= set(results)
    assert json.loads(results["summary.json"])["settings"]["data"] == f"{s3_dataset[0]}/v1"

    image = np.zeros((80, 96, 3), np.uint8)
    image[20:50, 20:60] = (200, 120, 40)
    mask = np.zeros((80, 96), np.uint8)
    mask[10:70, 10:80] = 255
    for name, array in (("photo.png", image), ("mask.png", mask)):
        png = io.BytesIO()
        Image.fromarray(array).save(png, format="PNG")
        storage.publish(f"{bucket}/inputs/{name}", png.getvalue())
    edit_out = f"{bucket}/edits/one"
    code, log = run_main(capsys, caplog, edit, "--checkpoints", checkpoints, "--image",
                         f"{bucket}/inputs/photo.png", "--mask", f"{bucket}/inputs/mask.png",
                         "--drag", "30,30->40,35", "--steps", "2", "--resolution", "64",
                         "--device", "cpu", "--candidates", "2", "--out", edit_out)
    assert code == 0, log
    edited = s3.files(edit_out)
    assert set(edited) == {"edited.png", "edited_1.png", "side_by_side.png", "edit.json"}
    record = json.loads(edited["edit.json"])
    assert record["inputs"]["image"] == f"{bucket}/inputs/photo.png"
    assert Image.open(io.BytesIO(edited["edited.png"])).size == (64, 64)  # the run size
    code, log = run_main(capsys, caplog, edit, "--checkpoints", checkpoints, "--image",
                         f"{bucket}/inputs/nothing.png", "--mask", f"{bucket}/inputs/mask.png",
                         "--drag", "30,30->40,35", "--out", edit_out)
    assert code == 2 and f"error: --image {bucket}/inputs/nothing.png: not found" in log


def test_no_credential_in_any_object_or_log(s3, bucket):
    """Runs last in this module: everything the jobs above wrote and printed."""
    objects = s3.files(bucket)
    assert len(objects) > 20
    for key, data in objects.items():
        assert SECRET_ACCESS_KEY.encode() not in data, key
        assert ACCESS_KEY_ID.encode() not in data, key
    assert LOGS
    for log in LOGS:
        assert SECRET_ACCESS_KEY not in log and ACCESS_KEY_ID not in log
