"""bench/gpu.py cannot rot: its --smoke mode runs every section's code path on the CPU with
tiny shapes, and writes every figure the real run prints."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, require_cotracker
from tests.ray_cluster import clean_env


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_every_section(tmp_path):
    require_cotracker()
    out = tmp_path / "gpu.json"
    env = clean_env(OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / ".cache" / "vendor")])
    done = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["smoke"] is True
    tracker = result["cotracker"]
    assert [r["batch_size"] for r in tracker] == [1, 2]
    assert all(r["clips_per_s"] > 0 for r in tracker)
    edits = {r["row"]: r for r in result["edit"]["rows"]}
    assert set(edits) == {"DDIM-25, point guidance", "DDIM-25, no guidance",
                          "LCM-8, point guidance", "LCM-8, no guidance"}
    assert edits["LCM-8, point guidance"]["unet_samples"] == 16
    assert all(r["appearance_calls"] == 1 for r in edits.values())
    train = result["train"]
    assert train["samples_per_s"] > 0 and train["flops_per_step"] > 0
    assert train["mfu"] is None                          # no GPU peak on a CPU
    assert [r["workers"] for r in result["loader"]] == [0, 1]
    assert all(r["samples_per_s"] > 0 and r["vs_step"] > 0 for r in result["loader"])
    for title in ("### CoTracker3 offline", "| DDIM-25, point guidance |",
                  "### Training step", "### Loader at"):
        assert title in done.stdout, title
