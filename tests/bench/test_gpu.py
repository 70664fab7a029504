"""bench/gpu.py cannot rot: its --smoke mode runs every section's code path on the CPU with
tiny shapes, and writes every figure the real run prints."""
from __future__ import annotations

import json

import pytest

from tests.conftest import require_cotracker


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_every_section(pair_shards, tmp_path, capsys):
    """In this process (the script is what is tested, not its process), the loader on the
    session's pair shards."""
    require_cotracker()
    from bench import gpu

    out = tmp_path / "gpu.json"
    assert gpu.main(["--smoke", "--shards", str(pair_shards), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
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
        assert title in printed, title
