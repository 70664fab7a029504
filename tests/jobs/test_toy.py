"""`make toy`, the README's main job, shrunk: the same Makefile recipe and configs on 3 clips,
2 held-out clips, 2 training steps and 2 sampling steps in the evaluation; the two pair builds
join the session's running Ray cluster (RAY_ADDRESS, which jobs.build_pairs honours) instead of
each starting one. Checks the wiring (each job feeds the next) and the report's shape, not the
learning (bench/RESULTS.md has the full run's figures)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import REPO
from tests.ray_cluster import clean_env


@pytest.mark.slow
@pytest.mark.ray  # jobs.build_pairs runs on Ray
def test_make_toy_runs_end_to_end_on_a_small_world(cluster, tmp_path):
    toy = tmp_path / "toy"
    args = ["make", "--no-print-directory", "-C", str(REPO), "toy", f"TOY={toy}",
            "TOY_CLIPS=3", "TOY_HELDOUT_CLIPS=2",
            "TOY_TRAIN_ARGS=--set train.steps=2 --set checkpoint.every=2 --set data.batch_size=2",
            "TOY_EVAL_ARGS=--steps 2"]
    done = subprocess.run(args, env=clean_env(RAY_ADDRESS=cluster.address), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((toy / "eval" / "summary.json").read_text())
    assert list(summary["methods"]) == ["model", "untrained", "identity"]
    settings = summary["settings"]
    assert "point_proj_init: random" in (toy / "train" / "config.yaml").read_text()
    assert settings["tracker"] == "patch"
    assert (settings["guidance"], settings["schedule"], settings["keep_unmasked"],
            settings["seeds"]) == (4.0, "inverse-square", True, 2)
    assert settings["checkpoints"]["model_dir"] == \
        f"{toy}/train/checkpoints/step_00000002/lightning-drag-sd15"
    assert settings["compare"]["untrained"]["model_dir"] == \
        f"{toy}/checkpoints/lightning-drag-sd15"
    n = summary["samples"]
    assert n >= 2 and all(m["ok"] == n for m in summary["methods"].values())
    assert done.stderr.count(f"ray: joined {cluster.address}") == 2
    # the table is printed, and the gallery written
    assert "| untrained |" in done.stdout and os.path.isfile(toy / "eval" / "gallery.png")
