"""pipeline.report on a small hand-built output directory (2 shards, 8 videos, 6 pairs)."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml
from PIL import Image

from pipeline.report import format_counts, write_report
from schemas.manifest import META_FIELDS, SCHEMA_VERSION, pair_table, video_table
from schemas.sample import DragSample, encode_sample, make_key

GREY = 128

# (status, number of pairs) per video, two units of four videos each.
UNITS = [
    [("ok", 2), ("ok", 2), ("filtered:static", 0), ("failed:DecodeError: bad", 0)],
    [("ok", 2), ("filtered:static", 0), ("filtered:camera-motion", 0),
     ("failed:EmptyFile: 0 bytes", 0)],
]


def video_id(i: int) -> str:
    return f"{0xabc000 + i:016x}"


def points_for(n: int, res: int):
    """Known handle/target points of pair n: well inside the image, far apart."""
    s = res / 64.0
    handle = np.array([[12 + n, 14 + n]], dtype=np.float64) * s
    target = np.array([[44 - n, 40 + n]], dtype=np.float64) * s
    return np.round(handle), np.round(target)


def make_meta(key, vid, pair_index, n_points, res, pair_motion, t0, t1) -> dict:
    meta = {
        "schema_version": SCHEMA_VERSION, "key": key, "video_id": vid,
        "source_uri": f"file:///videos/{vid}.mp4", "pair_index": pair_index,
        "frame_t0": int(t0 * 30), "frame_t1": int(t1 * 30), "time_t0": t0, "time_t1": t1,
        "fps": 30.0, "video_width": 640, "video_height": 480, "rotation": 0,
        "crop_x": 80.0, "crop_y": 0.0, "crop_w": 480.0, "crop_h": 480.0,
        "target_transform": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        "width": res, "height": res, "num_points": n_points, "tracker": "lk",
        "tracker_version": "1", "motion_score": 0.02, "camera_score": 0.001,
        "pair_motion": pair_motion, "visibility": 0.9, "seed": 0,
    }
    assert set(meta) == set(META_FIELDS)
    return meta


def build_dataset(root, res: int = 64, units=UNITS, config: dict | None = None) -> dict:
    """Write shards + manifests like the pipeline does; return what was written."""
    os.makedirs(root, exist_ok=True)
    written = {"pairs": [], "motion": [], "gaps": []}
    vi = 0
    pair_n = 0
    for u, unit in enumerate(units):
        name = f"pairs-{u:06d}"
        tar_path = os.path.join(root, f"{name}.tar")
        metas, videos = [], []
        samples = []
        for status, n_pairs in unit:
            vid = video_id(vi)
            for p in range(n_pairs):
                key = make_key(vid, p)
                handle, target = points_for(pair_n, res)
                mask = np.zeros((res, res), np.uint8)
                lo = (np.minimum(handle, target).min(0) - 4 * res / 64).astype(int)
                hi = (np.maximum(handle, target).max(0) + 4 * res / 64).astype(int)
                mask[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = 255
                image = np.full((res, res, 3), GREY, np.uint8)
                t0, t1 = 1.0 + p, 1.5 + p + 0.25 * pair_n
                motion = float(np.linalg.norm(target - handle, axis=1).mean())
                meta = make_meta(key, vid, p, len(handle), res, motion, t0, t1)
                samples.append(DragSample(key=key, source=image, target=image.copy(),
                                          mask=mask, handle=handle, target_points=target,
                                          meta=meta))
                metas.append(meta)
                written["pairs"].append((name + ".tar", key, handle, target, mask))
                written["motion"].append(motion)
                written["gaps"].append(t1 - t0)
                pair_n += 1
            ok = status == "ok"
            videos.append({
                "schema_version": SCHEMA_VERSION, "video_id": vid,
                "source_uri": f"file:///videos/{vid}.mp4", "status": status,
                "shard": name + ".tar" if n_pairs else None, "num_pairs": n_pairs,
                "duration": 10.0, "fps": 30.0, "num_frames": 300,
                "video_width": 640, "video_height": 480, "rotation": 0, "num_shots": 1,
                "cut_score": 0.1 if not status.startswith("failed") else None,
                "motion_score": (0.02 if ok else 0.001) if not status.startswith("failed")
                else None,
                "camera_score": (0.001 if status != "filtered:camera-motion" else 0.05)
                if not status.startswith("failed") else None,
                "decoded_frames": 40 if not status.startswith("failed") else 0, "seed": 0,
            })
            vi += 1
        if samples:
            with wds.TarWriter(tar_path, mtime=0) as sink:
                for s in samples:
                    sink.write(encode_sample(s, "png"))
        pq.write_table(pair_table(metas, name + ".tar"),
                       os.path.join(root, f"{name}.pairs.parquet"))
        pq.write_table(video_table(videos), os.path.join(root, f"{name}.videos.parquet"))
    if config is not None:
        with open(os.path.join(root, "config.yaml"), "w") as f:
            yaml.safe_dump(config, f)
    return written


CONFIG = {"seed": 0, "filter": {"static_threshold": 0.004, "camera_threshold": 0.006},
          "sample": {"gap_s": [0.25, 1.0]}}
RUN_STATS = {"wall_s": 12.5, "videos_per_s": 0.64, "pairs_per_s": 0.48,
             "decoded_frames_per_pair": 40.0, "peak_memory_mb": 812.0}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("out"))
    written = build_dataset(root, config=CONFIG)
    report = write_report(root, run_stats=RUN_STATS)
    return root, written, report


def near(rgb: np.ndarray, x: float, y: float, pred, radius: int = 2) -> bool:
    xi, yi = int(round(x)), int(round(y))
    patch = rgb[yi - radius:yi + radius + 1, xi - radius:xi + radius + 1].reshape(-1, 3)
    return bool(any(pred(p) for p in patch.astype(int)))


def is_red(p):
    return p[0] > 200 and p[1] < 60 and p[2] < 60


def is_blue(p):
    return p[2] > 200 and p[0] < 60 and p[1] < 60


# ----------------------------------------------------------------------------- counts

def test_counts(dataset):
    root, _, report = dataset
    assert report["totals"]["videos"] == 8
    assert report["totals"]["pairs"] == 6
    assert report["totals"]["shards"] == 2
    assert report["totals"]["units"] == 2
    assert report["status_kinds"] == {"ok": 3, "filtered": 3, "failed": 2}
    assert report["status_reasons"] == {
        "ok": 3, "filtered:static": 2, "filtered:camera-motion": 1,
        "failed:DecodeError": 1, "failed:EmptyFile": 1}
    failed = {f["video_id"]: f for f in report["failed"]}
    assert set(failed) == {video_id(3), video_id(7)}
    assert failed[video_id(3)]["error_class"] == "DecodeError"
    assert failed[video_id(3)]["message"] == "bad"
    assert failed[video_id(7)]["error_class"] == "EmptyFile"
    assert failed[video_id(7)]["message"] == "0 bytes"
    assert failed[video_id(7)]["source_uri"] == f"file:///videos/{video_id(7)}.mp4"
    assert report["run_stats"] == RUN_STATS
    assert report["warnings"] == []
    # report.json on disk is exactly the returned dict
    with open(os.path.join(root, "report", "report.json")) as f:
        assert json.load(f) == report


def test_stats(dataset):
    _, written, report = dataset
    ps = report["pair_stats"]
    motion = np.array(written["motion"])
    assert ps["pair_motion"]["count"] == 6
    assert ps["pair_motion"]["mean"] == pytest.approx(motion.mean())
    assert ps["pair_motion"]["median"] == pytest.approx(np.median(motion))
    assert ps["pair_motion"]["p10"] == pytest.approx(np.percentile(motion, 10))
    assert ps["pair_motion"]["p90"] == pytest.approx(np.percentile(motion, 90))
    assert ps["num_points"]["mean"] == 1.0
    assert ps["visibility"]["median"] == pytest.approx(0.9)
    gaps = np.array(written["gaps"])
    assert ps["gap_s"]["mean"] == pytest.approx(gaps.mean())
    assert ps["gap_s"]["p90"] == pytest.approx(np.percentile(gaps, 90))
    vs = report["video_stats"]
    assert vs["motion_score"]["count"] == 6          # failed videos have no scores
    assert vs["camera_score"]["max"] == pytest.approx(0.05)
    assert vs["decoded_frames"]["count"] == 8
    assert vs["decoded_frames"]["mean"] == pytest.approx(40 * 6 / 8)
    assert vs["cut_score"]["median"] == pytest.approx(0.1)
    assert report["thresholds"]["filter.static_threshold"] == 0.004
    assert report["thresholds"]["filter.camera_threshold"] == 0.006


def test_format_counts(dataset):
    _, _, report = dataset
    text = format_counts(report)
    lines = text.splitlines()
    assert lines[0] == "videos: 8 (ok 3, filtered 3, failed 2)"
    assert lines[1] == "pairs: 6 in 2 shard(s), 2 unit(s)"
    assert any(line.split() == ["filtered:static", "2"] for line in lines)
    assert any(line.split() == ["failed:DecodeError", "1"] for line in lines)
    assert any(line.split() == ["failed:EmptyFile", "1"] for line in lines)
    assert "wall_s=12.5" in text and "pairs_per_s=0.48" in text
    assert text.rstrip().endswith(os.path.join("report", "index.md"))


def test_index_md(dataset):
    root, _, _ = dataset
    with open(os.path.join(root, "report", "index.md")) as f:
        md = f.read()
    assert "| ok | 3 |" in md and "| failed | 2 |" in md
    assert "`failed:EmptyFile` | 1 |" in md
    assert "0 bytes" in md and "DecodeError" in md
    assert "| wall_s | 12.5 |" in md
    for name in ("hist_pair_motion.png", "hist_num_points.png", "hist_visibility.png",
                 "hist_gap_s.png", "hist_motion_score.png", "hist_camera_score.png",
                 "contact_sheet.png"):
        assert f"]({name})" in md
    assert "filter.static_threshold" in md


def test_pngs_open(dataset):
    root, _, report = dataset
    rdir = os.path.join(root, "report")
    for col in ("pair_motion", "num_points", "visibility", "gap_s", "motion_score",
                "camera_score"):
        assert report["histograms"][col] == f"hist_{col}.png"
        with Image.open(os.path.join(rdir, f"hist_{col}.png")) as im:
            im.verify()
    assert report["skipped_histograms"] == {}


# ----------------------------------------------------------------------------- contact sheet

def test_contact_sheet_grid(dataset):
    root, written, report = dataset
    cs = report["contact_sheet"]
    assert cs["pairs"] == 6 and cs["cols"] == 4 and cs["rows"] == 2
    assert cs["shards_read"] == ["pairs-000000.tar", "pairs-000001.tar"]
    assert [c["key"] for c in cs["cells"]] == [p[1] for p in written["pairs"]]
    with Image.open(os.path.join(root, "report", "contact_sheet.png")) as im:
        assert im.size == (cs["width"], cs["height"])
    assert cs["cell_width"] >= 2 * 64
    assert cs["width"] == 4 * cs["cell_width"] + 5 * 8
    assert cs["height"] == 2 * cs["cell_height"] + 3 * 8
    for cell in cs["cells"]:            # native resolution (64 <= 256)
        assert cell["source_box"][2:] == [64, 64] and cell["target_box"][2:] == [64, 64]
        assert cell["target_box"][0] > cell["source_box"][0] + 64


def test_contact_sheet_arrows_and_mask(dataset):
    root, written, report = dataset
    with Image.open(os.path.join(root, "report", "contact_sheet.png")) as im:
        rgb = np.asarray(im.convert("RGB"))
    for cell, (_, key, handle, target, mask) in zip(report["contact_sheet"]["cells"],
                                                    written["pairs"]):
        assert cell["key"] == key
        for box in ("source_box", "target_box"):
            x0, y0, _, _ = cell[box]
            (hx, hy), (tx, ty) = handle[0], target[0]
            assert near(rgb, x0 + hx, y0 + hy, is_red), (key, box, "handle")
            assert near(rgb, x0 + tx, y0 + ty, is_blue), (key, box, "target")
            # no dots far from the points (image corner)
            assert not near(rgb, x0 + 2, y0 + 61, lambda p: is_red(p) or is_blue(p))
            # midpoint of the drag carries the (yellow) arrow
            mx, my = (hx + tx) / 2, (hy + ty) / 2
            assert near(rgb, x0 + mx, y0 + my, lambda p: p[0] > 150 and p[1] > 150 and p[2] < 100)
        # mask overlay: tinted green on the source only
        ys, xs = np.nonzero(mask)
        sx, sy = cell["source_box"][:2]
        tx0, ty0 = cell["target_box"][:2]
        py, px = int(ys.min()) + 2, int(xs.max()) - 2   # inside the mask, away from the dots
        src_px = rgb[sy + py, sx + px].astype(int)
        tgt_px = rgb[ty0 + py, tx0 + px].astype(int)
        assert src_px[1] > src_px[0] + 30, src_px
        assert abs(tgt_px[1] - tgt_px[0]) < 5 and abs(tgt_px[0] - GREY) < 5, tgt_px
        assert abs(rgb[sy + 61, sx + 2].astype(int) - GREY).max() < 5   # outside the mask


def test_contact_sheet_reads_only_needed_shards(tmp_path):
    root = str(tmp_path / "out")
    written = build_dataset(root)
    report = write_report(root, contact_sheet_pairs=3)
    cs = report["contact_sheet"]
    assert cs["shards_read"] == ["pairs-000000.tar"]
    assert [c["key"] for c in cs["cells"]] == [p[1] for p in written["pairs"][:3]]
    assert (cs["cols"], cs["rows"]) == (3, 1)
    assert report["run_stats"] is None
    assert "No run statistics" in open(os.path.join(root, "report", "index.md")).read()
    assert report["thresholds"] == {}            # no config.yaml


def test_contact_sheet_downscales_large_images(tmp_path):
    root = str(tmp_path / "out")
    units = [[("ok", 1)]]
    written = build_dataset(root, res=320, units=units)
    report = write_report(root)
    cell = report["contact_sheet"]["cells"][0]
    assert cell["source_box"][2:] == [256, 256]
    assert cell["scale"] == pytest.approx(0.8)
    with Image.open(os.path.join(root, "report", "contact_sheet.png")) as im:
        rgb = np.asarray(im.convert("RGB"))
    _, _, handle, target, _ = written["pairs"][0]
    x0, y0 = cell["source_box"][:2]
    hx, hy = (handle[0] + 0.5) * 0.8 - 0.5
    tx, ty = (target[0] + 0.5) * 0.8 - 0.5
    assert near(rgb, x0 + hx, y0 + hy, is_red)
    assert near(rgb, x0 + tx, y0 + ty, is_blue)


# ----------------------------------------------------------------------------- edge cases

def test_zero_pairs(tmp_path):
    root = str(tmp_path / "out")
    units = [[("filtered:static", 0), ("failed:DecodeError: moov atom not found: x", 0)]]
    build_dataset(root, units=units, config=CONFIG)
    report = write_report(root)
    assert report["totals"] == {"videos": 2, "pairs": 0, "shards": 0, "units": 1,
                                "pair_manifests": 1, "video_manifests": 1}
    assert report["status_reasons"] == {"filtered:static": 1, "failed:DecodeError": 1}
    assert report["failed"][0]["message"] == "moov atom not found: x"
    assert report["contact_sheet"] is None
    assert "no contact sheet" in report["contact_sheet_note"]
    rdir = os.path.join(root, "report")
    assert not os.path.exists(os.path.join(rdir, "contact_sheet.png"))
    for col in ("pair_motion", "num_points", "visibility", "gap_s"):
        assert report["histograms"][col] is None and col in report["skipped_histograms"]
        assert not os.path.exists(os.path.join(rdir, f"hist_{col}.png"))
    assert report["pair_stats"]["pair_motion"]["count"] == 0
    assert report["pair_stats"]["pair_motion"]["mean"] is None
    assert os.path.exists(os.path.join(rdir, "hist_motion_score.png"))   # 1 scored video
    md = open(os.path.join(rdir, "index.md")).read()
    assert "hist_pair_motion.png` skipped" in md and "no contact sheet" in md
    assert format_counts(report).splitlines()[0] == "videos: 2 (ok 0, filtered 1, failed 1)"


def test_rerun_removes_stale_outputs(tmp_path):
    root = str(tmp_path / "out")
    build_dataset(root)
    write_report(root)
    assert os.path.exists(os.path.join(root, "report", "contact_sheet.png"))
    for name in os.listdir(root):
        if name.endswith(".tar"):
            os.remove(os.path.join(root, name))
    report = write_report(root)
    assert report["contact_sheet"] is None
    assert not os.path.exists(os.path.join(root, "report", "contact_sheet.png"))
    assert any("shard is missing" in w for w in report["warnings"])


def test_missing_dir(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        write_report(missing)


def test_no_manifests(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        write_report(str(empty))
    assert not (empty / "report").exists()
