"""Held-out video pairs: every pair has the real second frame, so an edit can be compared with
what the scene actually did.

Per pair (a sample from the pair shards; points in the stored images' pixels) and method:
  MD        mean over handles of |tracked - target|, where `tracked` is where the point tracker
            follows the handle on the 2-frame clip [source, edited];
  PSNR in / out   PSNR (dB) of the edit against the real target frame over the mask's pixels /
            over the rest; a perfect region scores PSNR_CAP_DB (so means stay finite);
  LPIPS in / out  the LPIPS distance map (224x224) against the target, averaged inside / outside
            the mask.
  tracked   the fraction of handles the tracker still sees in the edit. A point it loses keeps
            its last position (the Tracker contract), i.e. counts as not moved: read MD with it.
The identity edit tracks onto itself, so its MD is the mean |target - handle| of the pairs.

The tracker is passed in (the `pipeline.tracking` Tracker protocol: `track(clips, queries)`),
so this module does not depend on the data engine. A sample that breaks the contract, a method
that fails, and a missing or damaged shard become failed rows; the run goes on.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from model.drawing import draw_drag
from schemas.sample import decode_sample
from schemas.shard import raw_samples
from trainer.evaluation.editors import Editor
from trainer.evaluation.lpips import LPIPS, region_distances
from trainer.evaluation.matching import point_distances
from trainer.evaluation.results import (BenchResult, Column, GalleryRow, describe, failed_row,
                                        failure, mean_metrics, ok_row)

COLUMNS = (Column("md", "MD ↓", 2, per_point=True), Column("psnr_in", "PSNR in ↑", 2),
           Column("psnr_out", "PSNR out ↑", 2), Column("lpips_in", "LPIPS in ↓", 3),
           Column("lpips_out", "LPIPS out ↓", 3),
           Column("tracked", "tracked ↑", 2, per_point=True))
PSNR_CAP_DB = 100.0


class ShardError(RuntimeError):
    """A shard that is missing, unreadable or truncated (its readable samples still count)."""


def region_psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """PSNR in dB of two uint8 images over the pixels where `region` (HxW bool) is set (all
    channels); NaN for an empty region, PSNR_CAP_DB for identical pixels."""
    if not region.any():
        return float("nan")
    diff = a[region].astype(np.float64) - b[region].astype(np.float64)
    mse = float(np.mean(diff ** 2))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * np.log10(255.0 ** 2 / mse))


def track_handles(tracker, source: np.ndarray, edited: np.ndarray,
                  handles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the tracker follows the handles from `source` into `edited`: (N, 2) positions and
    (N,) visibility."""
    clip = np.stack([source, edited])[None]
    tracks, visible = tracker.track(clip, np.asarray(handles, np.float32)[None])
    return tracks[0, 1].astype(np.float64), visible[0, 1].astype(bool)


def evaluate_pairs(shards: list[str], editors: dict[str, Editor], tracker, lpips: LPIPS,
                   limit: int | None = None, gallery_rows: int = 8,
                   progress: Callable[[str], None] = print) -> BenchResult:
    result = BenchResult("pairs", COLUMNS, tuple(editors))
    seen = 0
    for shard in shards:
        problems: list = []
        for raw in raw_samples(shard, problems):
            if limit is not None and seen >= limit:
                return result
            seen += 1
            key = raw.get("__key__")
            rows = _evaluate_pair(key, raw, editors, tracker, lpips, result, gallery_rows)
            result.rows.extend(rows)
            progress(f"[{seen}] {key}: " + "; ".join(describe(r, COLUMNS) for r in rows))
        for reason, message in problems:
            status = failure(ShardError(f"{reason}: {message}"))
            result.rows.extend(failed_row(shard, m, status, COLUMNS) for m in editors)
            progress(f"shard {shard}: {status}")
    return result


def _evaluate_pair(key, raw, editors, tracker, lpips, result, gallery_rows) -> list[dict]:
    try:
        sample = decode_sample(raw)
    except Exception as e:  # noqa: BLE001 - SampleError, or undecodable bytes in any member
        return [failed_row(key, m, failure(e), COLUMNS) for m in editors]
    n = len(sample.handle)
    rows, edits = [], {}
    for method, editor in editors.items():
        try:
            edit = editor(sample.source, sample.mask, sample.handle, sample.target_points, "")
            metrics = mean_metrics([_pair_metrics(sample, image, tracker, lpips)
                                    for image in edit.images])
        except Exception as e:  # noqa: BLE001 - one method failing leaves the others
            rows.append(failed_row(key, method, failure(e), COLUMNS, num_points=n))
            continue
        rows.append(ok_row(key, method, n, edit.seconds, metrics))
        edits[method] = edit.images[0]
    # A gallery row: the drag, every method that edited this pair (side by side), the truth.
    if result.methods[0] in edits and len(result.gallery) < gallery_rows:
        result.gallery.append(GalleryRow(
            [draw_drag(sample.source, sample.handle, sample.target_points, sample.mask),
             *edits.values(), sample.target], [key, *edits, "real target"]))
    return rows


def _pair_metrics(sample, image, tracker, lpips) -> dict:
    inside = sample.mask > 0
    tracked, visible = track_handles(tracker, sample.source, image, sample.handle)
    lpips_in, lpips_out = region_distances(lpips, image, sample.target, sample.mask)
    return {"md": point_distances(tracked, sample.target_points).mean(),
            "psnr_in": region_psnr(image, sample.target, inside),
            "psnr_out": region_psnr(image, sample.target, ~inside),
            "lpips_in": lpips_in, "lpips_out": lpips_out, "tracked": visible.mean()}
