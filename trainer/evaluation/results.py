"""What a benchmark run produces: one row per (sample, method), the metric columns that describe
them, and the images for the gallery.

Row fields: `sample` (id), `method`, `status` (`ok` or `failed:<ErrorClass>: <message>`),
`num_points` (None when the sample could not be read), `seconds` (of the edit), and one float
per metric column (None when the row failed; NaN when the metric has nothing to measure, e.g.
the region outside a mask that covers the whole image).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STATUS_OK = "ok"


@dataclass(frozen=True)
class Column:
    name: str                # field in the rows and results files
    label: str               # header in summary.md, with the better direction
    digits: int              # decimals in summary.md
    per_point: bool = False  # summary: pooled over all points (weighted by num_points)


@dataclass
class GalleryRow:
    images: list[np.ndarray]   # HxWx3 uint8, any sizes
    labels: list[str]


@dataclass
class BenchResult:
    bench: str
    columns: tuple[Column, ...]
    methods: tuple[str, ...]
    rows: list[dict] = field(default_factory=list)
    gallery: list[GalleryRow] = field(default_factory=list)


def failure(exc: BaseException) -> str:
    """The status of a row that failed with `exc`."""
    return f"failed:{type(exc).__name__}: {exc}"


def ok_row(sample: str, method: str, num_points: int, seconds: float, metrics: dict) -> dict:
    return {"sample": sample, "method": method, "status": STATUS_OK, "num_points": num_points,
            "seconds": float(seconds), **{k: float(v) for k, v in metrics.items()}}


def failed_row(sample: str, method: str, status: str, columns, num_points=None) -> dict:
    return {"sample": sample, "method": method, "status": status, "num_points": num_points,
            "seconds": None, **{c.name: None for c in columns}}


def mean_metrics(per_image: list[dict]) -> dict:
    """A sample's metrics: each one's mean over the images of its edit (one per seed)."""
    return {k: float(np.mean([m[k] for m in per_image])) for k in per_image[0]}


def describe(row: dict, columns) -> str:
    """A short progress text for one row."""
    if row["status"] != STATUS_OK:
        return f"{row['method']} {row['status']}"
    values = " ".join(f"{c.name}={row[c.name]:.{c.digits}f}" for c in columns)
    return f"{row['method']} ok {values} {row['seconds']:.2f}s"
