"""Atomic, deterministic shard writing.

Per unit: `<name>.tar` (only when it holds pairs), `<name>.pairs.parquet` and
`<name>.videos.parquet`, each published atomically (`schemas.storage.publish`). The video
manifest goes last and marks the unit complete, so a reader never sees a partial shard and a
rerun redoes exactly the units that were not finished. Tar members carry fixed metadata
(mtime 0, no owner) so identical samples give identical bytes.
"""
from __future__ import annotations

import io

import pyarrow.parquet as pq
import webdataset as wds

from schemas import storage
from schemas.manifest import pair_table, video_table
from schemas.sample import DragSample, encode_sample

VIDEO_MANIFEST = ".videos.parquet"


def complete_units(output_dir: str) -> set[str]:
    """Names of the units whose shard is complete (their video manifest exists), from one
    listing of the output directory."""
    return {name[:-len(VIDEO_MANIFEST)] for name in storage.list_names(output_dir)
            if name.endswith(VIDEO_MANIFEST)}


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
    base = storage.join(output_dir, name)
    if samples:
        storage.publish(f"{base}.tar", tar_bytes(samples, image_format))
    rows = [s.meta for s in sorted(samples, key=lambda s: s.key)]
    storage.publish(f"{base}.pairs.parquet", _parquet_bytes(pair_table(rows, f"{name}.tar")))
    storage.publish(f"{base}{VIDEO_MANIFEST}", _parquet_bytes(video_table(video_rows)))
