"""Atomic, deterministic shard writing.

Per unit: `<name>.tar` (only when it holds pairs), `<name>.pairs.parquet` and
`<name>.videos.parquet`, each written under a temporary name and renamed when complete. The
video manifest goes last and marks the unit complete, so a reader never sees a partial shard
and a rerun redoes exactly the units that were not finished. Tar members carry fixed
metadata (mtime 0, no owner) so identical samples give identical bytes.
"""
from __future__ import annotations

import io
import os
import uuid

import fsspec
import pyarrow.parquet as pq
import webdataset as wds

from schemas.manifest import pair_table, video_table
from schemas.sample import DragSample, encode_sample


def _paths(output_dir: str, name: str):
    fs, root = fsspec.core.url_to_fs(output_dir)
    base = f"{root}/{name}"
    return fs, f"{base}.tar", f"{base}.pairs.parquet", f"{base}.videos.parquet"


def unit_complete(output_dir: str, name: str) -> bool:
    fs, _, _, videos = _paths(output_dir, name)
    return fs.exists(videos)


def publish(fs, path: str, data: bytes) -> None:
    """Write `data` to `path` on `fs` under a hidden temporary name, then rename it."""
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)


def _parquet_bytes(table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def tar_bytes(samples: list[DragSample], image_format: str) -> bytes:
    buf = io.BytesIO()
    with wds.TarWriter(buf, user="", group="", mode=0o644, mtime=0) as writer:
        for sample in sorted(samples, key=lambda s: s.key):
            writer.write(encode_sample(sample, image_format))
    return buf.getvalue()


def write_unit(output_dir: str, name: str, samples: list[DragSample], video_rows: list[dict],
               image_format: str) -> None:
    fs, tar, pairs, videos = _paths(output_dir, name)
    fs.makedirs(os.path.dirname(tar), exist_ok=True)
    if samples:
        publish(fs, tar, tar_bytes(samples, image_format))
    rows = [s.meta for s in sorted(samples, key=lambda s: s.key)]
    publish(fs, pairs, _parquet_bytes(pair_table(rows, f"{name}.tar")))
    publish(fs, videos, _parquet_bytes(video_table(video_rows)))
