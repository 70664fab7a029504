"""jobs.train end to end on real shards from the pipeline: runs, resumes exactly, exports."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jobs import train as train_job
from tests.conftest import REPO
from tests.trainer.trainer_helpers import config
from trainer.checkpoint import EXPORT_DIR, data_position_file, list_checkpoints
from trainer.loop import train

pytestmark = pytest.mark.slow


def test_train_job_runs_on_shards_and_exports(setup, tmp_path, capsys):
    ckpt, shards = setup
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "jobs.train", "--config", str(REPO / "configs/train-tiny.yaml"),
            "--set", f"run_dir={run}", "--set", f"data.shards={shards}",
            "--set", f"model.checkpoints={ckpt}", "--set", "train.steps=3",
            "--set", "checkpoint.every=2", "--set", "log.every=1", "--device", "cpu"]
    # in-process runs of other tests left this process's rendezvous settings in os.environ
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1].removeprefix("train: "))
    assert summary["step"] == 3 and summary["batches"] == 3
    assert [os.path.basename(p) for p in list_checkpoints(str(run))] == ["step_00000002",
                                                                         "step_00000003"]
    last = list_checkpoints(str(run))[-1]
    assert os.path.isfile(os.path.join(last, EXPORT_DIR, "lightning-drag-sd15-attn.bin"))
    assert os.path.isfile(data_position_file(last, 0))
    assert os.path.isfile(run / "validation" / "step_00000003.png")
    # the same command again, in this process (the job's process is tested above): already
    # finished, nothing to do
    capsys.readouterr()
    assert train_job.main(argv[3:]) == 0
    assert '"step": 3' in capsys.readouterr().out


def test_resume_on_shards_equals_uninterrupted(setup, tmp_path):
    ckpt, shards = setup
    kw = dict(data={"shards": shards, "augment": True}, train={"steps": 4, "point_dropout": 0.2},
              checkpoint={"every": 2})
    straight = train(config(tmp_path / "a", ckpt, **kw))
    cfg = config(tmp_path / "b", ckpt, **kw)
    train(cfg, stop_after=3)
    resumed = train(cfg)
    assert resumed["step"] == 4
    assert np.allclose(straight["losses"][2:], resumed["losses"], atol=1e-6)


def test_bad_config_exits_2(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {shards: x}\nmodel: {checkpoints: y}\noptim: {lr: fast}\n")
    proc = subprocess.run([sys.executable, "-m", "jobs.train", "--config", str(path)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: optim.lr: expected float, got 'fast'"
    proc = subprocess.run([sys.executable, "-m", "jobs.train", "--config", str(path), "--set",
                           "optim.lr=0.1"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: model.checkpoints y: not a directory"
    proc = subprocess.run([sys.executable, "-m", "jobs.train", "--config", str(path),
                           "--num-workers", "2", "--max-failures", "1"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "python -m jobs.train: error: --num-workers, --max-failures only applies with "
        "--launcher ray")
