"""Writing a benchmark run: results.parquet and results.csv (one row per sample and method),
summary.md (the table papers print: one row per method), summary.json and gallery.png.

Summary values are means over a method's `ok` rows: a per-point column (Mean Distance) pools
all points of all samples, as DragBench's evaluation script does; the other columns average
over samples (NaN values, i.e. empty regions, left out). `time (s)` is the mean seconds per
edit. `samples` counts the method's ok rows out of all samples.
"""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from PIL import Image

from model.drawing import side_by_side
from schemas import storage
from schemas.coords import crop_resize
from trainer.evaluation.results import STATUS_OK, BenchResult

GALLERY_HEIGHT = 192   # every gallery image is scaled to this height
GALLERY_GAP = 8        # px of white between gallery rows


def results_table(result: BenchResult) -> pa.Table:
    fields = [("sample", pa.string()), ("method", pa.string()), ("status", pa.string()),
              ("num_points", pa.int64()), ("seconds", pa.float64())]
    fields += [(c.name, pa.float64()) for c in result.columns]
    schema = pa.schema(fields)
    return pa.table({name: [row[name] for row in result.rows] for name, _ in fields},
                    schema=schema)


def summarize(result: BenchResult) -> dict:
    """{"bench", "samples", "methods": {method: {column: mean, "seconds", "ok", "failed"}}}."""
    samples = len({row["sample"] for row in result.rows})
    methods = {}
    for method in result.methods:
        rows = [r for r in result.rows if r["method"] == method]
        ok = [r for r in rows if r["status"] == STATUS_OK]
        entry = {}
        for c in result.columns:
            kept = [r for r in ok if not math.isnan(r[c.name])]
            values = np.array([r[c.name] for r in kept], dtype=np.float64)
            weights = np.array([r["num_points"] if c.per_point else 1 for r in kept], np.float64)
            entry[c.name] = float(values @ weights / weights.sum()) if kept else None
        entry["seconds"] = float(np.mean([r["seconds"] for r in ok])) if ok else None
        entry["ok"], entry["failed"] = len(ok), len(rows) - len(ok)
        methods[method] = entry
    return {"bench": result.bench, "samples": samples, "methods": methods}


def summary_markdown(result: BenchResult, summary: dict) -> str:
    header = ["method"] + [c.label for c in result.columns] + ["time (s)", "samples"]
    lines = ["| " + " | ".join(header) + " |",
             "| --- |" + " ---: |" * (len(header) - 1)]
    for method, entry in summary["methods"].items():
        cells = [method]
        cells += [_number(entry[c.name], c.digits) for c in result.columns]
        cells += [_number(entry["seconds"], 2), f"{entry['ok']}/{summary['samples']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def gallery_image(result: BenchResult) -> np.ndarray | None:
    """The gallery rows stacked top to bottom, each image scaled to GALLERY_HEIGHT; None when
    there is nothing to show."""
    if not result.gallery:
        return None
    strips = []
    for row in result.gallery:
        scaled = [crop_resize(im, (0, 0, im.shape[1], im.shape[0]),
                              (max(1, round(im.shape[1] * GALLERY_HEIGHT / im.shape[0])),
                               GALLERY_HEIGHT)) for im in row.images]
        strips.append(side_by_side(scaled, row.labels))
    width = max(s.shape[1] for s in strips)
    parts = []
    for i, strip in enumerate(strips):
        if i:
            parts.append(np.full((GALLERY_GAP, width, 3), 255, np.uint8))
        pad = np.full((strip.shape[0], width - strip.shape[1], 3), 255, np.uint8)
        parts.append(np.concatenate([strip, pad], axis=1))
    return np.concatenate(parts, axis=0)


def write_report(out_dir: str, result: BenchResult, settings: dict) -> str:
    """Write every output file into out_dir (a local directory, created, or a URL), each
    published atomically; return the summary table (markdown)."""
    table = results_table(result)
    parquet, csv = io.BytesIO(), io.BytesIO()
    pq.write_table(table, parquet)
    pa_csv.write_csv(table, csv)
    storage.publish(storage.join(out_dir, "results.parquet"), parquet.getvalue())
    storage.publish(storage.join(out_dir, "results.csv"), csv.getvalue())
    summary = summarize(result)
    markdown = summary_markdown(result, summary)
    storage.publish_text(storage.join(out_dir, "summary.md"), markdown)
    storage.publish_text(storage.join(out_dir, "summary.json"),
                         json.dumps({**summary, "settings": settings}, indent=2) + "\n")
    gallery = gallery_image(result)
    gallery_path = storage.join(out_dir, "gallery.png")
    if gallery is not None:
        png = io.BytesIO()
        Image.fromarray(gallery).save(png, format="PNG")
        storage.publish(gallery_path, png.getvalue())
    elif storage.exists(gallery_path):  # a previous run's gallery would not match these results
        storage.remove(gallery_path)
    return markdown
