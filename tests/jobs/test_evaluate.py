"""`python -m jobs.evaluate` end to end on tiny random checkpoints and extractors: DragBench
(two real samples and broken copies: a missing file, an odd number of points, a point outside
the image, a pickle that would run code), as a real subprocess, and pairs from the project's
own data engine (with an unreadable shard), through the job's main() in this process (the same
code without a process start); then usage errors and `jobs.make_tiny_extractors`.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import evaluate as evaluate_job
from jobs import make_tiny_extractors as extractors_job
from schemas.sample import decode_sample
from tests.conftest import REPO
from schemas.shard import list_shards, raw_samples

DRAGBENCH = REPO / "tests" / "fixtures" / "dragbench"
ANIMAL = DRAGBENCH / "animals" / "JH_2023-09-14-1823-59"
LAND = "land_scape/PJC_2023-09-14-1925-41"
FAST = ["--steps", "2", "--resolution", "64", "--device", "cpu"]


def run_job(name, *args, timeout=300):
    # One intra-op thread: tiny models on a busy 2-core machine (see tests/jobs/test_edit.py).
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", f"jobs.{name}", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def extractors(tmp_path_factory) -> dict[str, str]:
    """What `python -m jobs.make_tiny_extractors` writes (its main runs here, in process)."""
    out = tmp_path_factory.mktemp("made") / "extractors"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert extractors_job.main(["--out", str(out)]) == 0
    return dict(line.split(": ", 1) for line in printed.getvalue().strip().splitlines())


def metric_flags(extractors, dift=True) -> list:
    flags = ["--alexnet", extractors["alexnet"], "--lpips", extractors["lpips"]]
    return flags + (["--dift-model", extractors["dift_model"]] if dift else [])


class Exploit:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def broken_copy(root: Path, name: str, meta=None) -> Path:
    """A copy of the animals sample under root/broken/name, its meta_data.pkl replaced."""
    folder = root / "broken" / name
    shutil.copytree(ANIMAL, folder)
    if meta is not None:
        with open(folder / "meta_data.pkl", "wb") as f:
            pickle.dump(meta, f)
    return folder


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, Path]:
    """Two real samples and four broken ones; returns (root, marker the exploit would touch)."""
    root = tmp_path_factory.mktemp("bench") / "dragbench"
    shutil.copytree(DRAGBENCH, root)
    mask = np.zeros((512, 512), np.uint8)
    mask[100:300, 100:300] = 1
    os.remove(broken_copy(root, "missing_file") / "original_image.png")
    broken_copy(root, "odd_points", {"prompt": "", "mask": mask,
                                     "points": [[150, 150], [200, 200], [160, 160]]})
    broken_copy(root, "outside", {"prompt": "", "mask": mask,
                                  "points": [[150, 150], [600, 20]]})
    marker = root.parent / "pwned"
    broken_copy(root, "malicious", Exploit(str(marker)))
    return root, marker


@pytest.fixture(scope="module")
def dragbench_run(bench, checkpoints, extractors, tmp_path_factory):
    root, _ = bench
    out = tmp_path_factory.mktemp("eval") / "out"
    code, stdout, stderr = run_job("evaluate", "--bench", "dragbench", "--data", root,
                                   "--out", out, "--checkpoints", checkpoints, *FAST,
                                   *metric_flags(extractors), "--dift-size", "64",
                                   "--dift-ensemble", "2")
    return code, stdout, stderr, out


def test_dragbench_rows_and_statuses(bench, dragbench_run):
    root, marker = bench
    code, stdout, stderr, out = dragbench_run
    assert code == 0, stderr
    assert not marker.exists()                      # the pickle never ran
    rows = pq.read_table(out / "results.parquet").to_pylist()
    status = {(r["sample"], r["method"]): r["status"] for r in rows}
    broken = {
        "broken/malicious": "failed:DragBenchError: meta_data.pkl: forbidden global posix.system",
        "broken/missing_file": ("failed:DragBenchError: missing original_image.png in "
                                f"{root / 'broken' / 'missing_file'}"),
        "broken/odd_points": ("failed:DragBenchError: meta_data.pkl: 3 points; handles and "
                              "targets must alternate, so the count must be even"),
        "broken/outside": ("failed:DragBenchError: meta_data.pkl: point 1 (target of pair 0) at "
                           "x=600, y=20 lies outside the 512x512 image"),
    }
    expected = {}
    for sample in ["animals/JH_2023-09-14-1823-59", *sorted(broken), LAND]:
        for method in ("model", "identity"):
            expected[sample, method] = broken.get(sample, "ok")
    assert status == expected
    assert [(r["sample"], r["method"]) for r in rows] == list(expected)   # sorted, model first
    by_key = {(r["sample"], r["method"]): r for r in rows}
    identity = by_key[LAND, "identity"]
    assert identity["md"] == pytest.approx((np.hypot(45, 30) + np.hypot(33, 37)) / 2)
    assert identity["image_fidelity"] == 1.0 and identity["seconds"] == 0.0
    model = by_key[LAND, "model"]
    assert model["num_points"] == 2 and model["seconds"] > 0 and model["image_fidelity"] < 1.0
    assert by_key["broken/outside", "model"]["md"] is None
    csv_rows = pa_csv.read_csv(out / "results.csv").to_pylist()
    assert [(r["sample"], r["method"], r["status"]) for r in csv_rows] == \
        [(r["sample"], r["method"], r["status"]) for r in rows]
    assert "[1/6] animals/JH_2023-09-14-1823-59: model ok md=" in stderr
    assert f"[6/6] {LAND}: model ok md=" in stderr


def test_dragbench_summary_and_gallery(dragbench_run):
    code, stdout, stderr, out = dragbench_run
    assert code == 0, stderr
    markdown = (out / "summary.md").read_text()
    assert stdout == markdown
    lines = markdown.splitlines()
    assert lines[0] == "| method | MD ↓ | IF ↑ | time (s) | samples |"
    assert lines[2].startswith("| model | ") and lines[2].endswith(" | 2/6 |")
    animal_md = np.hypot(74, 10)                  # (239, 170) -> (165, 180)
    pooled = (animal_md + np.hypot(45, 30) + np.hypot(33, 37)) / 3
    assert lines[3] == f"| identity | {pooled:.2f} | 1.000 | 0.00 | 2/6 |"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bench"] == "dragbench" and summary["samples"] == 6
    assert summary["methods"]["identity"]["md"] == pytest.approx(pooled)
    assert (summary["methods"]["model"]["ok"], summary["methods"]["model"]["failed"]) == (2, 4)
    assert summary["settings"]["dift_ensemble"] == 2 and summary["settings"]["dift_size"] == 64
    gallery = np.asarray(Image.open(out / "gallery.png"))
    assert gallery.shape[0] > 2 * 192 and gallery.shape[1] >= 2 * 192   # 2 rows, 2 images


def test_every_sample_failing_exits_1(bench, checkpoints, extractors, tmp_path, capsys,
                                      one_thread):
    root, marker = bench
    out = tmp_path / "out"
    argv = ["--bench", "dragbench", "--data", root / "broken", "--out", out, "--checkpoints",
            checkpoints, *FAST, *metric_flags(extractors), "--baselines", "none"]
    assert evaluate_job.main([str(a) for a in argv]) == 1
    stdout = capsys.readouterr().out
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 4 and all(r["status"].startswith("failed:DragBenchError: ") for r in rows)
    assert {r["method"] for r in rows} == {"model"}
    assert stdout.splitlines()[2] == "| model | n/a | n/a | n/a | 0/4 |"
    assert not (out / "gallery.png").exists() and not marker.exists()


# --- pairs ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shards(pair_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pairs") / "pairs"
    shutil.copytree(pair_shards, out)
    (out / "pairs-000003.tar").write_bytes(b"this is not a tar archive" * 40)
    return out


def run_main(capsys, *args):
    """`jobs.evaluate` main(args) in this process: (exit status, stdout, stderr), as run_job
    returns them. Use with the `one_thread` fixture."""
    capsys.readouterr()
    code = evaluate_job.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_pairs_identity_md_is_the_drag_length(shards, checkpoints, extractors, tmp_path, capsys,
                                              one_thread):
    out = tmp_path / "out"
    code, stdout, stderr = run_main(capsys, "--bench", "pairs", "--data", shards, "--out", out,
                                    "--checkpoints", checkpoints, *FAST,
                                    *metric_flags(extractors, dift=False), "--tracker", "builtin",
                                    "--compare", f"again={checkpoints}")
    assert code == 0, stderr
    drag_length = {}
    for shard in list_shards(str(shards)):
        for raw in raw_samples(shard, []):
            s = decode_sample(raw)
            drag_length[s.key] = np.linalg.norm(s.target_points - s.handle, axis=1)
    rows = pq.read_table(out / "results.parquet").to_pylist()
    identity = [r for r in rows if r["method"] == "identity" and r["status"] == "ok"]
    assert sorted(r["sample"] for r in identity) == sorted(drag_length) and len(identity) >= 10
    for r in identity:   # tracking the source onto itself returns the handles exactly
        assert r["md"] == pytest.approx(drag_length[r["sample"]].mean(), abs=1e-4)
        assert r["tracked"] == 1.0 and r["num_points"] == len(drag_length[r["sample"]])
    model = [r for r in rows if r["method"] == "model"]
    assert sum(r["status"] == "ok" for r in model) == len(drag_length)
    # --compare with the same checkpoints and settings: the same edits, so the same metrics
    again = [r for r in rows if r["method"] == "again"]
    metrics = ("status", "md", "psnr_in", "psnr_out", "lpips_in", "lpips_out", "tracked")
    assert [[r[k] for k in metrics] for r in again] == [[r[k] for k in metrics] for r in model]
    unreadable = [r for r in rows if r["sample"] == str(shards / "pairs-000003.tar")]
    assert [r["method"] for r in unreadable] == ["model", "again", "identity"]
    assert all(r["status"].startswith("failed:ShardError: shard_unreadable: ") for r in unreadable)
    lines = stdout.splitlines()
    assert lines[0] == ("| method | MD ↓ | PSNR in ↑ | PSNR out ↑ | LPIPS in ↓ | LPIPS out ↓ | "
                        "tracked ↑ | time (s) | samples |")
    pooled = np.concatenate(list(drag_length.values())).mean()
    # the same cells but the time column (cells: "", method, 6 metrics, time, samples, "")
    model_cells, again_cells = lines[2].split("|"), lines[3].split("|")
    assert again_cells[2:8] + again_cells[9:] == model_cells[2:8] + model_cells[9:]
    assert lines[4].startswith(f"| identity | {pooled:.2f} | ")
    n = len(drag_length) + 1
    assert all(line.endswith(f" | {n - 1}/{n} |") for line in lines[2:5])
    gallery = np.asarray(Image.open(out / "gallery.png"))
    assert gallery.shape[1] >= 5 * 192              # drag | model | again | identity | target


def test_pairs_md_by_patch_matching(shards, checkpoints, extractors, tmp_path, capsys,
                                    one_thread):
    out = tmp_path / "out"
    code, _, stderr = run_main(capsys, "--bench", "pairs", "--data", shards, "--out", out,
                               "--checkpoints", checkpoints, *FAST, "--limit", "4",
                               *metric_flags(extractors, dift=False), "--tracker", "patch",
                               "--patch-size", "9")
    assert code == 0, stderr
    samples = {}
    for shard in list_shards(str(shards)):
        for raw in raw_samples(shard, []):
            s = decode_sample(raw)
            samples[s.key] = s
    rows = pq.read_table(out / "results.parquet").to_pylist()
    identity = [r for r in rows if r["method"] == "identity"]
    assert len(identity) == 4 and all(r["status"] == "ok" for r in identity)
    for r in identity:   # the source matched onto itself: each handle's own pixel
        s = samples[r["sample"]]
        pixels = np.floor(s.handle + 0.5)
        assert r["md"] == pytest.approx(np.linalg.norm(pixels - s.target_points, axis=1).mean())
        assert r["tracked"] == 1.0
    assert json.loads((out / "summary.json").read_text())["settings"]["patch_size"] == 9


def test_seeds_average_each_samples_metrics_over_the_seeds(shards, checkpoints, extractors,
                                                           tmp_path, one_thread):
    """--seeds 2 --seed 5: every sample is edited with seeds 5 and 6, and its metrics are the
    mean of what --seed 5 and --seed 6 score alone (in process: main() writes the same files)."""
    def evaluate(out, *flags):
        argv = ["--bench", "pairs", "--data", str(shards), "--out", str(out), "--checkpoints",
                str(checkpoints), *FAST, "--limit", "3", *metric_flags(extractors, dift=False),
                "--tracker", "patch", "--baselines", "none", *flags]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert evaluate_job.main(argv) == 0
        return pq.read_table(out / "results.parquet").to_pylist()

    both = evaluate(tmp_path / "both", "--seeds", "2", "--seed", "5")
    five = evaluate(tmp_path / "five", "--seed", "5")
    six = evaluate(tmp_path / "six", "--seed", "6")
    assert len(both) == 3 and all(r["status"] == "ok" for r in both)
    for r, a, b in zip(both, five, six):
        assert r["sample"] == a["sample"] == b["sample"]
        # batched candidates equal separate calls to within one level (test_pipeline.py)
        assert r["psnr_in"] == pytest.approx((a["psnr_in"] + b["psnr_in"]) / 2, abs=0.05)
        assert r["lpips_in"] == pytest.approx((a["lpips_in"] + b["lpips_in"]) / 2, abs=2e-3)
    assert [r["psnr_in"] for r in five] != [r["psnr_in"] for r in six]
    settings = json.loads((tmp_path / "both" / "summary.json").read_text())["settings"]
    assert (settings["seed"], settings["seeds"]) == (5, 2)


# --- usage ------------------------------------------------------------------------------------

@pytest.mark.parametrize("case, message", [
    ("no-dift", "error: --bench dragbench needs --dift-model"),
    ("no-lpips", "error: --bench pairs needs --alexnet, --lpips"),
    ("data-not-a-dir", "error: --data {tmp}/nowhere: not a directory"),
    ("no-samples", "error: --data {tmp}: no DragBench sample folders (with meta_data.pkl) found"),
    ("no-shards", "error: --data: no shards found for '{tmp}': expected a directory holding "
                  "*.tar files, a glob, or a list of shard paths/URLs"),
    ("missing-alexnet", "error: --alexnet {tmp}/alexnet.pth: file not found"),
    ("cotracker-without-weights", "error: --tracker cotracker needs --tracker-checkpoint FILE"),
    ("even-patch", "error: --patch-size must be odd and at least 3, got 4"),
    ("sample-prompt-with-embeds", "error: --dift-prompt-embeds holds the empty prompt only: "
                                  "pass --dift-prompt empty with it (sample, the default, needs "
                                  "the DIFT model's text encoder)"),
    ("out-is-a-file", "error: --out {tmp}/file exists and is not a directory"),
    ("compare-as-model", "error: --compare: method name model is taken (model, the baseline, "
                         "and every --compare need their own names)"),
    ("compare-missing", "error: --compare old={tmp}/nowhere: not a directory"),
])
def test_usage_errors(case, message, checkpoints, extractors, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    ck = ["--checkpoints", str(checkpoints)]
    lp = metric_flags(extractors, dift=False)
    dragbench = ["--bench", "dragbench", "--data", str(DRAGBENCH), "--out", str(tmp_path / "o")]
    pairs = ["--bench", "pairs", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    argv = {
        "no-dift": [*dragbench, *ck, *lp],
        "no-lpips": [*pairs, *ck],
        "data-not-a-dir": ["--bench", "dragbench", "--data", str(tmp_path / "nowhere"),
                           "--out", str(tmp_path / "o"), *ck, *metric_flags(extractors)],
        "no-samples": ["--bench", "dragbench", "--data", str(tmp_path), "--out",
                       str(tmp_path / "o"), *ck, *metric_flags(extractors)],
        "no-shards": [*pairs, *ck, *lp],
        "missing-alexnet": [*pairs, *ck, "--alexnet", str(tmp_path / "alexnet.pth"),
                            "--lpips", extractors["lpips"]],
        "cotracker-without-weights": [*pairs, *ck, *lp, "--tracker", "cotracker"],
        "even-patch": [*pairs, *ck, *lp, "--tracker", "patch", "--patch-size", "4"],
        "sample-prompt-with-embeds": [*dragbench, *ck, *metric_flags(extractors),
                                      "--dift-prompt", "sample", "--dift-prompt-embeds",
                                      str(tmp_path / "file")],
        "out-is-a-file": [*dragbench, *ck, *metric_flags(extractors), "--out",
                          str(tmp_path / "file")],
        "compare-as-model": [*pairs, *ck, *lp, "--compare", f"model={checkpoints}"],
        "compare-missing": [*pairs, *ck, *lp, "--compare", f"old={tmp_path / 'nowhere'}"],
    }[case]
    assert evaluate_job.main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message.format(tmp=tmp_path)
    assert not (tmp_path / "o").exists()


def test_a_bad_weights_file_is_a_usage_error(checkpoints, extractors, tmp_path, capsys):
    import torch
    bad = tmp_path / "alexnet.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    argv = ["--bench", "pairs", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
            "--checkpoints", str(checkpoints), "--alexnet", str(bad), "--lpips",
            extractors["lpips"]]
    (tmp_path / "pairs-000000.tar").write_bytes(b"")
    assert evaluate_job.main(argv) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: AlexNet weights {bad}: missing keys: features.0.bias, ")
    assert line.endswith("; wrong shapes: features.0.weight (1,) (expected (64, 3, 11, 11))")


def test_flag_choices_agree_with_the_library():
    """jobs.evaluate spells its choices out so that usage errors need no torch import."""
    from pipeline.config import TrackConfig
    from pipeline.tracking import make_tracker
    from trainer.evaluation.bench_dragbench import DIFT_PROMPTS
    from trainer.evaluation.editors import BASELINES

    assert evaluate_job.DIFT_PROMPTS == DIFT_PROMPTS
    assert evaluate_job.BASELINES == (*BASELINES, "none")
    from trainer.evaluation.matching import PatchMatcher

    assert make_tracker(TrackConfig(backend="builtin")).name == "builtin-lk"
    # make_tracker's backends, then the evaluation's own patch matcher
    assert evaluate_job.TRACKERS == ("builtin", "cotracker", PatchMatcher.name)


def test_make_tiny_extractors_layout_and_refusals(extractors, tmp_path, capsys):
    assert set(extractors) == {"dift_model", "alexnet", "lpips"}
    for sub in ("unet", "vae", "scheduler", "text_encoder", "tokenizer"):
        assert os.path.isdir(os.path.join(extractors["dift_model"], sub)), sub
    assert os.path.isfile(os.path.join(extractors["dift_model"], "model_index.json"))
    (tmp_path / "keep.txt").write_text("mine")
    assert extractors_job.main(["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --out {tmp_path} exists and is not "
                                               "empty; pass --force to write into it")
    assert os.listdir(tmp_path) == ["keep.txt"]
