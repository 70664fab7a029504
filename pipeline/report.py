"""Dataset report: what is in an output directory, and whether it looks right.

    write_report(output_dir, run_stats=None) -> dict      # writes <output_dir>/report/
    format_counts(report) -> str                          # short console summary

The report covers the WHOLE dataset in `output_dir` (every `*.pairs.parquet` and
`*.videos.parquet`, including units written by earlier runs), not only the last run.
`<output_dir>/report/` receives:

| file                  | content                                                           |
| report.json           | totals, status counts, failed inputs, column stats, run_stats     |
| index.md              | the same for a person, with the PNGs embedded                     |
| hist_<column>.png     | pair_motion, num_points, visibility, gap_s (pairs);               |
|                       | motion_score, camera_score (videos; filter thresholds drawn)      |
| contact_sheet.png     | the first pairs in sorted shard order: source | target, mask      |
|                       | overlay on the source, handle (red) -> target (blue) arrows       |

Only as many shards as the contact sheet needs are read. Rendering uses matplotlib's Agg canvas
directly (no pyplot, so the process-wide backend is left alone) and OpenCV for the sheet.
`output_dir` is a local path or an fsspec URL; every file is published atomically.
"""
from __future__ import annotations

import io
import json
import math
import os
import tarfile

import cv2
import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from schemas import storage
from schemas.manifest import status_kind
from schemas.sample import SampleError
from schemas.shard import read_shard

REPORT_VERSION = 1
REPORT_DIR = "report"

# Pair columns summarised (gap_s is derived: time_t1 - time_t0) and video columns.
PAIR_STAT_COLUMNS = ("pair_motion", "num_points", "visibility", "gap_s")
VIDEO_STAT_COLUMNS = ("motion_score", "camera_score", "cut_score", "decoded_frames")
PAIR_HIST_COLUMNS = ("pair_motion", "num_points", "visibility", "gap_s")
VIDEO_HIST_COLUMNS = ("motion_score", "camera_score")
STATUS_KINDS = ("ok", "filtered", "failed")

_PAIR_READ = ("key", "video_id", "shard", "pair_motion", "num_points", "visibility",
              "time_t0", "time_t1")
_VIDEO_READ = ("video_id", "source_uri", "status", "shard", "num_pairs", "motion_score",
               "camera_score", "cut_score", "decoded_frames")

# Contact sheet layout (pixels). A cell is [source | GAP | target] over a caption strip.
CELL_MAX_SIDE = 256          # images larger than this are downscaled to fit
SHEET_COLS = 4               # cells per row (fewer when there are fewer pairs)
SHEET_PAD = 8                # margin around / between cells
SHEET_GAP = 4                # between source and target in a cell
CAPTION_H = 16
BACKGROUND = (40, 40, 40)
HANDLE_RGB = (255, 0, 0)
TARGET_RGB = (0, 0, 255)
ARROW_RGB = (255, 255, 0)
MASK_RGB = (0, 255, 0)
MASK_ALPHA = 0.35
DOT_RADIUS = 3


# ----------------------------------------------------------------------------- helpers

def _summary(values) -> dict:
    """count/mean/median/p10/p90/min/max of the finite values (None where there are none)."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"count": 0, "mean": None, "median": None, "p10": None, "p90": None,
                "min": None, "max": None}
    p10, med, p90 = np.percentile(a, [10, 50, 90])
    return {"count": int(a.size), "mean": float(a.mean()), "median": float(med),
            "p10": float(p10), "p90": float(p90), "min": float(a.min()), "max": float(a.max())}


def _finite(values) -> np.ndarray:
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return a[np.isfinite(a)]


def status_reason(status: str | None) -> str:
    """'ok', 'filtered:<reason>' or 'failed:<ErrorClass>' (the text before the second colon)."""
    if not status:
        return "unknown"
    return ":".join(part.strip() for part in status.split(":", 2)[:2])


def _split_failure(status: str) -> tuple[str, str]:
    parts = status.split(":", 2)
    error_class = parts[1].strip() if len(parts) > 1 else ""
    message = parts[2].strip() if len(parts) > 2 else ""
    return error_class, message


def _jsonable(obj):
    """JSON-safe copy: numpy scalars/arrays to Python, tuples to lists, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def _read_columns(path: str, wanted: tuple) -> dict:
    manifest = pq.ParquetFile(io.BytesIO(storage.read_bytes(path)))
    names = set(manifest.schema_arrow.names)
    cols = [c for c in wanted if c in names]
    table = manifest.read(columns=cols)
    out = table.to_pydict()
    for c in wanted:
        out.setdefault(c, [None] * table.num_rows)
    return out


def _load_thresholds(output_dir: str, warnings: list) -> dict:
    """Filter thresholds from <out>/config.yaml; {} when it is missing or unreadable."""
    path = storage.join(output_dir, "config.yaml")
    if not storage.exists(path):
        return {}
    try:
        import yaml  # pyyaml: the config format of the pipeline
        cfg = yaml.safe_load(storage.read_text(path)) or {}
    except Exception as e:  # noqa: BLE001 - the report must not die on a bad config
        warnings.append(f"config.yaml unreadable ({type(e).__name__}: {e}); no thresholds drawn")
        return {}
    if not isinstance(cfg, dict):
        return {}
    out = {}
    filt = cfg.get("filter") if isinstance(cfg.get("filter"), dict) else {}
    for key in ("static_threshold", "camera_threshold"):
        if isinstance(filt.get(key), (int, float)):
            out[f"filter.{key}"] = float(filt[key])
    sample = cfg.get("sample") if isinstance(cfg.get("sample"), dict) else {}
    gap = sample.get("gap_s")
    if isinstance(gap, (list, tuple)) and len(gap) == 2 and all(isinstance(g, (int, float))
                                                                 for g in gap):
        out["sample.gap_s"] = [float(gap[0]), float(gap[1])]
    return out


# ----------------------------------------------------------------------------- histograms

def _histogram(path: str, title: str, xlabel: str, series: list, lines: list,
               integer: bool = False) -> None:
    """series: [(label, values, color)]; lines: [(label, x)] drawn as vertical lines; the PNG
    is published to `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = [(lab, v, c) for lab, v, c in series if len(v)]
    allv = np.concatenate([v for _, v, _ in series])
    lo, hi = float(allv.min()), float(allv.max())
    note = ""
    if integer:
        bins = np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.5, 1.0)
        if len(bins) > 101:
            bins = 50
    else:
        # A few huge outliers would squash the bulk into one bin: clip the range at the p99
        # (but keep every threshold visible) and say how many values were folded in.
        p99 = float(np.percentile(allv, 99))
        top = max([p99] + [x * 1.25 for _, x in lines])
        if hi > top and (hi - lo) > 4 * (top - lo) and top > lo:
            n_out = int((allv > top).sum())
            note = f" ({n_out} values > {top:.4g} shown in the last bin)"
            hi = top
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        lo = min([lo] + [x for _, x in lines])
        hi = max([hi] + [x for _, x in lines])
        bins = np.linspace(lo, hi, int(min(50, max(10, math.sqrt(allv.size)))) + 1)
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    data = [np.clip(v, lo, hi) if not integer else v for _, v, _ in series]
    ax.hist(data, bins=bins, stacked=True, label=[lab for lab, _, _ in series],
            color=[c for _, _, c in series], edgecolor="white", linewidth=0.4)
    for i, (label, x) in enumerate(lines):
        ax.axvline(x, color=("red", "darkred", "purple")[i % 3], linestyle="--", linewidth=1.5,
                   label=f"{label} = {x:.4g}")
    ax.set_title(f"{title}  (n={allv.size}){note}", fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    if len(series) > 1 or lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    storage.publish(path, buf.getvalue())


# ----------------------------------------------------------------------------- contact sheet

def _scaled(image: np.ndarray, scale: float, interpolation) -> np.ndarray:
    if scale >= 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=interpolation)


def _to_cell(points: np.ndarray, scale: float) -> np.ndarray:
    """Stored-pixel points (pixel centres at integers) -> points in the scaled image."""
    return (points + 0.5) * scale - 0.5 if scale < 1.0 else points.astype(np.float64)


def _draw_drags(img: np.ndarray, handle: np.ndarray, target: np.ndarray) -> None:
    sh = 4  # cv2 fixed-point shift: sub-pixel positions
    f = 1 << sh
    for (hx, hy), (tx, ty) in zip(handle, target):
        p0 = (int(round(hx * f)), int(round(hy * f)))
        p1 = (int(round(tx * f)), int(round(ty * f)))
        length = math.hypot(tx - hx, ty - hy)
        if length > 0.5:
            cv2.arrowedLine(img, p0, p1, ARROW_RGB, 1, cv2.LINE_AA, sh,
                            tipLength=min(0.5, 9.0 / length))
    for pts, color in ((handle, HANDLE_RGB), (target, TARGET_RGB)):
        for x, y in pts:
            c = (int(round(x * f)), int(round(y * f)))
            cv2.circle(img, c, (DOT_RADIUS + 1) * f, (0, 0, 0), -1, cv2.LINE_8, sh)
            cv2.circle(img, c, DOT_RADIUS * f, color, -1, cv2.LINE_8, sh)


def _render_pair(sample, scale: float) -> tuple[np.ndarray, np.ndarray]:
    src = np.ascontiguousarray(_scaled(sample.source, scale, cv2.INTER_AREA)).copy()
    tgt = np.ascontiguousarray(_scaled(sample.target, scale, cv2.INTER_AREA)).copy()
    mask = _scaled(sample.mask, scale, cv2.INTER_NEAREST) > 127
    tint = np.array(MASK_RGB, dtype=np.float32)
    src_f = src.astype(np.float32)
    src_f[mask] = src_f[mask] * (1 - MASK_ALPHA) + tint * MASK_ALPHA
    src = np.clip(src_f + 0.5, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(src, contours, -1, MASK_RGB, 1)
    h = _to_cell(np.asarray(sample.handle, dtype=np.float64), scale)
    t = _to_cell(np.asarray(sample.target_points, dtype=np.float64), scale)
    _draw_drags(src, h, t)
    _draw_drags(tgt, h, t)
    return src, tgt


def _collect_samples(output_dir: str, shards: list[str], limit: int,
                     warnings: list) -> tuple[list, list]:
    """The first `limit` samples of `shards` (names in `output_dir`, in order); only the
    shards needed are read."""
    samples, shards_read = [], []
    if limit <= 0:
        return samples, shards_read
    for shard in shards:
        try:
            got = read_shard(storage.join(output_dir, shard))
        except (SampleError, OSError, tarfile.TarError) as e:
            warnings.append(f"contact sheet: skipped unreadable shard "
                            f"{shard} ({type(e).__name__}: {e})")
            continue
        shards_read.append(shard)
        samples.extend((shard, s) for s in got[: limit - len(samples)])
        if len(samples) >= limit:
            break
    return samples, shards_read


def _make_contact_sheet(path: str, samples: list) -> dict:
    """Render `samples` [(shard, DragSample)] into one PNG; return its layout."""
    font = ImageFont.load_default()
    scales, slot_w, slot_h = [], 1, 1
    for _, s in samples:
        h, w = s.source.shape[:2]
        scale = min(1.0, CELL_MAX_SIDE / max(h, w))
        scales.append(scale)
        slot_w = max(slot_w, max(1, round(w * scale)) if scale < 1 else w)
        slot_h = max(slot_h, max(1, round(h * scale)) if scale < 1 else h)
    captions = [f"{s.key}  n={len(s.handle)}" for _, s in samples]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(probe.textlength(c, font=font) for c in captions)
    cell_w = max(2 * slot_w + SHEET_GAP, int(math.ceil(text_w)) + 2)
    cell_h = slot_h + CAPTION_H
    n = len(samples)
    cols = min(SHEET_COLS, n)
    rows = int(math.ceil(n / cols))
    width = cols * cell_w + (cols + 1) * SHEET_PAD
    height = rows * cell_h + (rows + 1) * SHEET_PAD
    sheet = np.empty((height, width, 3), np.uint8)
    sheet[:] = BACKGROUND
    cells = []
    for i, ((shard, s), scale) in enumerate(zip(samples, scales)):
        r, c = divmod(i, cols)
        x0 = SHEET_PAD + c * (cell_w + SHEET_PAD)
        y0 = SHEET_PAD + r * (cell_h + SHEET_PAD)
        src, tgt = _render_pair(s, scale)
        ih, iw = src.shape[:2]
        sheet[y0:y0 + ih, x0:x0 + iw] = src
        tx0 = x0 + slot_w + SHEET_GAP
        sheet[y0:y0 + ih, tx0:tx0 + iw] = tgt
        cells.append({"key": s.key, "shard": shard, "scale": scale,
                      "source_box": [x0, y0, iw, ih], "target_box": [tx0, y0, iw, ih],
                      "caption_xy": [x0, y0 + slot_h + 2]})
    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    for cell, caption in zip(cells, captions):
        draw.text(tuple(cell["caption_xy"]), caption, fill=(255, 255, 255), font=font)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    storage.publish(path, buf.getvalue())
    return {"file": storage.basename(path), "pairs": n, "cols": cols, "rows": rows,
            "cell_width": cell_w, "cell_height": cell_h, "width": width, "height": height,
            "cells": cells}


# ----------------------------------------------------------------------------- index.md

def _md_escape(text, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return _md_escape(v)


def _stats_table(stats: dict) -> list[str]:
    lines = ["| column | n | mean | median | p10 | p90 | min | max |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for col, s in stats.items():
        lines.append(f"| {col} | {s['count']} | " + " | ".join(
            _fmt(s[k]) for k in ("mean", "median", "p10", "p90", "min", "max")) + " |")
    return lines


def _index_md(report: dict) -> str:
    t = report["totals"]
    out = ["# Dataset report", "", f"Output directory: `{report['output_dir']}`", "",
           "## Totals", "", "| | count |", "|---|---:|",
           f"| videos | {t['videos']} |", f"| pairs | {t['pairs']} |",
           f"| shards (tar files) | {t['shards']} |",
           f"| units (video manifests) | {t['units']} |", ""]
    nv = max(1, t["videos"])
    out += ["## Videos by status", "", "| status | videos | share |", "|---|---:|---:|"]
    for kind, n in report["status_kinds"].items():
        out.append(f"| {kind} | {n} | {100.0 * n / nv:.1f}% |")
    out += ["", "| reason | videos |", "|---|---:|"]
    for reason, n in report["status_reasons"].items():
        out.append(f"| `{_md_escape(reason)}` | {n} |")
    out += ["", "## Run throughput", ""]
    rs = report.get("run_stats")
    if isinstance(rs, dict) and rs:
        out += ["| metric | value |", "|---|---:|"]
        out += [f"| {_md_escape(k)} | {_fmt(v)} |" for k, v in rs.items()]
    elif rs is not None:
        out.append(f"`{_md_escape(rs)}`")
    else:
        out.append("No run statistics were passed (report written outside a run).")
    failed = report["failed"]
    out += ["", f"## Failed inputs ({len(failed)})", ""]
    if failed:
        out += ["| video_id | source_uri | error | message |", "|---|---|---|---|"]
        shown = failed[:500]
        out += [f"| {_md_escape(f['video_id'])} | {_md_escape(f['source_uri'])} | "
                f"{_md_escape(f['error_class'])} | {_md_escape(f['message'])} |" for f in shown]
        if len(failed) > len(shown):
            out.append(f"\n… and {len(failed) - len(shown)} more (see report.json).")
    else:
        out.append("None.")
    out += ["", "## Pair columns", ""] + _stats_table(report["pair_stats"])
    out += ["", "gap_s = time_t1 - time_t0 (seconds).", "",
            "## Video columns", ""] + _stats_table(report["video_stats"])
    out += ["", "## Histograms", ""]
    th = report["thresholds"]
    if th:
        out.append("Thresholds from config.yaml: " + ", ".join(
            f"`{k}` = {v}" for k, v in th.items()) + ".")
    else:
        out.append("No config.yaml thresholds available: histograms have no threshold lines.")
    out.append("")
    for col, fname in report["histograms"].items():
        if fname:
            out += [f"### {col}", "", f"![{col}]({fname})", ""]
    for col, why in report["skipped_histograms"].items():
        out.append(f"- `hist_{col}.png` skipped: {why}.")
    out += ["", "## Contact sheet", ""]
    cs = report["contact_sheet"]
    if cs:
        shards = ", ".join(cs["shards_read"])
        out += [f"First {cs['pairs']} pairs in sorted shard order ({shards}). "
                "Each cell: source (mask as green overlay) | target; red dot = handle, "
                "blue dot = target, yellow arrow = drag.", "",
                f"![contact sheet]({cs['file']})"]
    else:
        out.append(report["contact_sheet_note"])
    if report["warnings"]:
        out += ["", "## Warnings", ""] + [f"- {_md_escape(w, 1000)}" for w in report["warnings"]]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- public API

def write_report(output_dir: str, run_stats: dict | None = None,
                 contact_sheet_pairs: int = 24) -> dict:
    """Summarise every manifest in `output_dir` into `<output_dir>/report/`; return report.json.

    Raises FileNotFoundError if `output_dir` does not exist or holds no manifests.
    """
    if not storage.is_url(output_dir):
        output_dir = os.path.abspath(output_dir)
    if not storage.isdir(output_dir):
        raise FileNotFoundError(f"output directory {output_dir} does not exist")
    listing = storage.list_files(output_dir)
    pair_files = sorted(n for n in listing if n.endswith(".pairs.parquet"))
    video_files = sorted(n for n in listing if n.endswith(".videos.parquet"))
    if not pair_files and not video_files:
        raise FileNotFoundError(f"no manifests (*.pairs.parquet / *.videos.parquet) in "
                                f"{output_dir}: nothing to report")
    shard_files = sorted(n for n in listing if n.endswith(".tar"))
    warnings: list[str] = []

    pairs = {c: [] for c in _PAIR_READ}
    videos = {c: [] for c in _VIDEO_READ + ("manifest",)}
    units_read = 0
    for name, wanted, acc in [(p, _PAIR_READ, pairs) for p in pair_files] + \
                             [(p, _VIDEO_READ, videos) for p in video_files]:
        try:
            cols = _read_columns(storage.join(output_dir, name), wanted)
        except Exception as e:  # noqa: BLE001 - one bad manifest must not hide the rest
            warnings.append(f"unreadable manifest {name} ({type(e).__name__}: {e}); "
                            "not counted")
            continue
        for c in wanted:
            acc[c].extend(cols[c])
        if acc is videos:
            units_read += 1
            videos["manifest"].extend([name] * len(cols[wanted[0]]))
        elif cols["key"] and name[: -len(".pairs.parquet")] + ".tar" not in listing:
            warnings.append(f"{name} lists {len(cols['key'])} pairs "
                            "but its .tar shard is missing")

    n_pairs, n_videos = len(pairs["key"]), len(videos["status"])
    kinds = {k: 0 for k in STATUS_KINDS}
    reasons: dict[str, int] = {}
    failed = []
    for i, status in enumerate(videos["status"]):
        kind = status_kind(status) if status else "unknown"
        kinds[kind] = kinds.get(kind, 0) + 1
        reason = status_reason(status)
        reasons[reason] = reasons.get(reason, 0) + 1
        if kind == "failed":
            error_class, message = _split_failure(status)
            failed.append({"video_id": videos["video_id"][i],
                           "source_uri": videos["source_uri"][i], "error_class": error_class,
                           "message": message, "status": status,
                           "manifest": videos["manifest"][i]})
    order = {k: i for i, k in enumerate(STATUS_KINDS)}
    reasons = dict(sorted(reasons.items(),
                          key=lambda kv: (order.get(kv[0].split(":")[0], 9), kv[0])))

    # Consistency checks that catch reruns gone wrong.
    dup_keys = n_pairs - len(set(pairs["key"]))
    if dup_keys:
        warnings.append(f"{dup_keys} duplicate pair keys across pair manifests")
    dup_videos = n_videos - len(set(videos["video_id"]))
    if dup_videos:
        warnings.append(f"{dup_videos} duplicate video_ids across video manifests")
    listed = sum(n for n in videos["num_pairs"] if n is not None)
    if video_files and listed != n_pairs:
        warnings.append(f"video manifests list {listed} pairs (num_pairs) but pair manifests "
                        f"hold {n_pairs}")

    gap = [None if a is None or b is None else b - a
           for a, b in zip(pairs["time_t0"], pairs["time_t1"])]
    pair_values = {"pair_motion": pairs["pair_motion"], "num_points": pairs["num_points"],
                   "visibility": pairs["visibility"], "gap_s": gap}
    pair_stats = {c: _summary(pair_values[c]) for c in PAIR_STAT_COLUMNS}
    video_stats = {c: _summary(videos[c]) for c in VIDEO_STAT_COLUMNS}

    report_dir = storage.join(output_dir, REPORT_DIR)
    earlier = storage.list_files(report_dir)
    thresholds = _load_thresholds(output_dir, warnings)

    # Histograms (stale ones from an earlier report are removed when a column is now empty).
    histograms, skipped = {}, {}
    lines_for = {"motion_score": [("filter.static_threshold",
                                   thresholds.get("filter.static_threshold"))],
                 "camera_score": [("filter.camera_threshold",
                                   thresholds.get("filter.camera_threshold"))],
                 "gap_s": [(f"sample.gap_s {w}", v) for w, v in
                           zip(("min", "max"), thresholds.get("sample.gap_s", []))]}
    jobs = [(c, "pairs", [("pairs", _finite(pair_values[c]), "tab:blue")])
            for c in PAIR_HIST_COLUMNS]
    kinds_col = [status_kind(s) if s else "unknown" for s in videos["status"]]
    for c in VIDEO_HIST_COLUMNS:
        series = []
        for kind, color in (("ok", "tab:green"), ("filtered", "tab:orange"),
                            ("failed", "tab:gray"), ("unknown", "tab:purple")):
            series.append((kind, _finite([v for v, k in zip(videos[c], kinds_col)
                                          if k == kind]), color))
        jobs.append((c, "videos", series))
    for col, table, series in jobs:
        fname = f"hist_{col}.png"
        fpath = storage.join(report_dir, fname)
        if not any(len(v) for _, v, _ in series):
            skipped[col] = f"no {table} with a finite {col}"
            histograms[col] = None
            if fname in earlier:
                storage.remove(fpath)
            continue
        lines = [(label, x) for label, x in lines_for.get(col, []) if x is not None]
        _histogram(fpath, f"{col} ({table})", "seconds" if col == "gap_s" else col, series,
                   lines, integer=(col == "num_points"))
        histograms[col] = fname

    # Contact sheet.
    sheet_path = storage.join(report_dir, "contact_sheet.png")
    contact, note = None, ""
    if "contact_sheet.png" in earlier:
        storage.remove(sheet_path)
    if contact_sheet_pairs <= 0:
        note = "Contact sheet disabled (contact_sheet_pairs <= 0)."
    elif not shard_files:
        note = "No shards (no pairs) in the dataset: no contact sheet."
    else:
        samples, shards_read = _collect_samples(output_dir, shard_files, contact_sheet_pairs,
                                                warnings)
        if samples:
            contact = _make_contact_sheet(sheet_path, samples)
            contact["shards_read"] = shards_read
        else:
            note = "No readable pairs in the shards: no contact sheet."

    report = {
        "report_version": REPORT_VERSION,
        "output_dir": output_dir,
        "totals": {"videos": n_videos, "pairs": n_pairs, "shards": len(shard_files),
                   "units": units_read, "pair_manifests": len(pair_files),
                   "video_manifests": len(video_files)},
        "status_kinds": kinds,
        "status_reasons": reasons,
        "failed": failed,
        "pair_stats": pair_stats,
        "video_stats": video_stats,
        "thresholds": thresholds,
        "histograms": histograms,
        "skipped_histograms": skipped,
        "contact_sheet": contact,
        "contact_sheet_note": note,
        "warnings": warnings,
        "run_stats": run_stats,
    }
    report = _jsonable(report)
    storage.publish(storage.join(report_dir, "report.json"),
                    json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False).encode())
    storage.publish(storage.join(report_dir, "index.md"), _index_md(report).encode())
    return report


def format_counts(report: dict) -> str:
    """A short multi-line plain-text summary of a write_report() result, for the console."""
    t = report["totals"]
    k = report["status_kinds"]
    kinds = ", ".join(f"{name} {n}" for name, n in k.items())
    lines = [f"videos: {t['videos']} ({kinds})",
             f"pairs: {t['pairs']} in {t['shards']} shard(s), {t['units']} unit(s)"]
    other = {r: n for r, n in report["status_reasons"].items() if r != "ok"}
    if other:
        width = max(len(r) for r in other)
        lines += [f"  {r.ljust(width)}  {n}" for r, n in other.items()]
    rs = report.get("run_stats")
    if isinstance(rs, dict) and rs:
        lines.append("run: " + ", ".join(
            f"{name}={v:.4g}" if isinstance(v, float) else f"{name}={v}"
            for name, v in rs.items() if not isinstance(v, (dict, list))))
    if report.get("warnings"):
        lines.append(f"warnings: {len(report['warnings'])} (see report/index.md)")
    lines.append(f"report: {storage.join(report['output_dir'], REPORT_DIR, 'index.md')}")
    return "\n".join(lines)
