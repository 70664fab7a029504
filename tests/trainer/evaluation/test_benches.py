"""The two benchmarks in process, with editors and trackers whose answers are known, and the
summary arithmetic (pooled Mean Distance, NaN and failed rows left out, the table layout)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from schemas.dragbench import load_sample
from schemas.manifest import META_FIELDS, SCHEMA_VERSION
from schemas.sample import DragSample, decode_sample, encode_sample, make_key
from tests.conftest import REPO
from tests.schemas.test_sample import write_tar
from trainer.evaluation.bench_dragbench import DiftSettings, evaluate_dragbench
from trainer.evaluation.bench_pairs import PSNR_CAP_DB, evaluate_pairs, region_psnr
from trainer.evaluation.dift import DiftFeaturizer
from trainer.evaluation.editors import Edit, identity_edit
from trainer.evaluation.lpips import load_lpips
from trainer.evaluation.report import summarize, summary_markdown
from trainer.evaluation.results import BenchResult, Column, failed_row, ok_row

DRAGBENCH = REPO / "tests" / "fixtures" / "dragbench"


@pytest.fixture(scope="module")
def lpips(extractors):
    return load_lpips(extractors["alexnet"], extractors["lpips"])


@pytest.fixture(scope="module")
def dift(extractors):
    return DiftFeaturizer.from_pretrained(extractors["dift_model"])


def broken_editor(image, mask, handles, targets, prompt) -> Edit:
    raise RuntimeError("boom")


def test_region_psnr_known_values():
    a = np.full((4, 6, 3), 100, np.uint8)
    b = a.copy()
    b[:, :3] += 10                                            # MSE 100 on the left half
    left = np.zeros((4, 6), bool)
    left[:, :3] = True
    assert region_psnr(a, b, left) == pytest.approx(10 * np.log10(255 ** 2 / 100))
    assert region_psnr(a, b, ~left) == PSNR_CAP_DB            # identical pixels
    assert np.isnan(region_psnr(a, b, np.zeros((4, 6), bool)))


def test_summary_pools_points_and_skips_failed_and_nan():
    columns = (Column("md", "MD ↓", 2, per_point=True), Column("psnr", "PSNR ↑", 1))
    result = BenchResult("x", columns, ("model", "identity"), rows=[
        ok_row("a", "model", 1, 2.0, {"md": 10.0, "psnr": 20.0}),
        ok_row("b", "model", 3, 4.0, {"md": 2.0, "psnr": float("nan")}),
        failed_row("c", "model", "failed:RuntimeError: boom", columns, num_points=2),
        ok_row("a", "identity", 1, 0.0, {"md": 5.0, "psnr": 30.0}),
        failed_row("b", "identity", "failed:RuntimeError: boom", columns),
        failed_row("c", "identity", "failed:RuntimeError: boom", columns),
    ])
    summary = summarize(result)
    assert summary["samples"] == 3
    assert summary["methods"]["model"] == {"md": (10 + 3 * 2) / 4, "psnr": 20.0,
                                           "seconds": 3.0, "ok": 2, "failed": 1}
    assert summary["methods"]["identity"] == {"md": 5.0, "psnr": 30.0, "seconds": 0.0,
                                              "ok": 1, "failed": 2}
    assert summary_markdown(result, summary) == (
        "| method | MD ↓ | PSNR ↑ | time (s) | samples |\n"
        "| --- | ---: | ---: | ---: | ---: |\n"
        "| model | 4.00 | 20.0 | 3.00 | 2/3 |\n"
        "| identity | 5.00 | 30.0 | 0.00 | 1/3 |\n")


def test_dragbench_identity_known_answers_and_a_failing_method(dift, lpips, tmp_path):
    root = tmp_path / "bench"
    shutil.copytree(DRAGBENCH, root)
    (root / "animals" / "JH_2023-09-14-1823-59" / "original_image.png").unlink()
    lines = []
    result = evaluate_dragbench(str(root), {"broken": broken_editor, "identity": identity_edit},
                                dift, lpips, DiftSettings(ensemble=2, size=(64, 64)),
                                progress=lines.append)
    missing = root / "animals" / "JH_2023-09-14-1823-59"
    status = f"failed:DragBenchError: missing original_image.png in {missing}"
    rows = {(r["sample"], r["method"]): r for r in result.rows}
    assert len(rows) == 4
    assert rows["animals/JH_2023-09-14-1823-59", "broken"]["status"] == status
    assert rows["animals/JH_2023-09-14-1823-59", "identity"]["status"] == status
    land = "land_scape/PJC_2023-09-14-1925-41"
    assert rows[land, "broken"]["status"] == "failed:RuntimeError: boom"
    assert rows[land, "broken"]["num_points"] == 2
    identity = rows[land, "identity"]
    assert identity["status"] == "ok" and identity["num_points"] == 2
    assert identity["image_fidelity"] == 1.0
    assert identity["md"] == pytest.approx((np.hypot(45, 30) + np.hypot(33, 37)) / 2)
    assert result.gallery == []          # the first method (the gallery's) never succeeded
    assert lines[0].startswith("[1/2] animals/JH_2023-09-14-1823-59: broken failed:")
    assert lines[1].startswith(f"[2/2] {land}: broken failed:RuntimeError: boom; identity ok ")


class ShiftTracker:
    """Moves every query by a fixed (dx, dy) and loses the second one."""
    name, version = "shift", "1"

    def __init__(self, dx: float, dy: float):
        self.shift = np.array([dx, dy], np.float32)

    def track(self, clips, queries):
        tracks = np.stack([queries, queries + self.shift], axis=1)
        visible = np.ones(tracks.shape[:3], bool)
        visible[:, 1, 1:2] = False
        return tracks, visible


def pair_members(key: str, handles, targets) -> dict:
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64), np.uint8)
    mask[8:40, 8:56] = 255
    meta = {f: 0 for f in META_FIELDS}
    meta.update(schema_version=SCHEMA_VERSION, key=key, num_points=len(handles), width=64,
                height=48, target_transform=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    return encode_sample(DragSample(key=key, source=source, target=np.roll(source, 3, axis=1),
                                    mask=mask, handle=np.array(handles, float),
                                    target_points=np.array(targets, float), meta=meta), "png")


def test_pairs_tracked_distance_psnr_and_bad_samples(lpips, tmp_path):
    good = pair_members(make_key("0" * 16, 0), [[20, 20], [30, 25]], [[26, 24], [40, 25]])
    bad = dict(pair_members(make_key("1" * 16, 0), [[20, 20]], [[26, 24]]))
    bad["drag.json"] = b"{not json"
    shard = str(tmp_path / "pairs-000000.tar")
    write_tar(shard, [good, bad])
    missing = str(tmp_path / "pairs-000001.tar")
    result = evaluate_pairs([shard, missing], {"identity": identity_edit}, ShiftTracker(6, 4),
                            lpips, progress=lambda line: None)
    ok, corrupt, lost = result.rows
    # tracked (26, 24) and (36, 29): distances 0 and |(-4, 4)|; one point of two still seen
    assert ok["md"] == pytest.approx(np.hypot(4, 4) / 2) and ok["tracked"] == 0.5
    sample = decode_sample(good)
    inside = sample.mask > 0
    assert ok["psnr_in"] == region_psnr(sample.source, sample.target, inside)
    assert ok["psnr_out"] == region_psnr(sample.source, sample.target, ~inside)
    assert ok["lpips_in"] > 0 and ok["lpips_out"] > 0
    assert corrupt["status"].startswith(f"failed:SampleError: {make_key('1' * 16, 0)}: bad "
                                        "drag.json/meta.json")
    assert lost["sample"] == missing
    assert lost["status"].startswith("failed:ShardError: shard_missing: FileNotFoundError")


def test_pairs_metrics_are_averaged_over_the_images_of_an_edit(lpips, tmp_path):
    """An edit of several images (one per seed) scores the mean of their metrics: here the
    source (as the identity) and the real target frame (a perfect edit)."""
    members = pair_members(make_key("0" * 16, 0), [[20, 20], [30, 25]], [[26, 24], [40, 25]])
    shard = str(tmp_path / "pairs-000000.tar")
    write_tar(shard, [members])
    sample = decode_sample(members)

    def source_then_target(image, mask, handles, targets, prompt) -> Edit:
        return Edit(images=[image.copy(), sample.target.copy()], seconds=0.5)

    editors = {"two": source_then_target, "identity": identity_edit}
    result = evaluate_pairs([shard], editors, ShiftTracker(6, 4), lpips,
                            progress=lambda line: None)
    two, identity = result.rows
    inside = sample.mask > 0
    assert two["md"] == identity["md"]             # the tracker moves points the same in both
    assert two["psnr_in"] == pytest.approx(
        (region_psnr(sample.source, sample.target, inside) + PSNR_CAP_DB) / 2)
    assert two["lpips_in"] == pytest.approx(identity["lpips_in"] / 2)
    assert two["lpips_out"] == pytest.approx(identity["lpips_out"] / 2)
    assert two["seconds"] == 0.5
    assert np.array_equal(result.gallery[0].images[1], sample.source)  # the first image


def test_dragbench_sample_is_read_at_its_own_size(dift, lpips):
    """The edit gets the sample at its own size and MD is in its pixels (512x512)."""
    seen = []

    def recording_identity(image, mask, handles, targets, prompt):
        seen.append((image.shape, mask.shape, np.asarray(handles).tolist(), prompt))
        return identity_edit(image, mask, handles, targets, prompt)

    evaluate_dragbench(str(DRAGBENCH / "animals"), {"identity": recording_identity}, dift,
                       lpips, DiftSettings(ensemble=1, size=(64, 64)), progress=lambda l: None)
    sample = load_sample(DRAGBENCH / "animals" / "JH_2023-09-14-1823-59")
    assert seen == [((512, 512, 3), (512, 512), sample.handles.tolist(), sample.prompt)]
