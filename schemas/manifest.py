"""Parquet manifest schemas: one row per pair, one row per input video.

`meta.json` of a sample holds exactly the pair row's fields except `shard`, so a manifest row
and a sample's metadata can always be compared field by field.
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2
# What each version added to the pair row: a reader takes every version listed.
ADDED_PAIR_FIELDS = {1: (), 2: ("target_transform",)}

PAIR_SCHEMA = pa.schema([
    ("schema_version", pa.int32()),
    ("key", pa.string()),                 # <video_id>-<pair_index>, the WebDataset __key__
    ("video_id", pa.string()),
    ("source_uri", pa.string()),
    ("pair_index", pa.int32()),
    ("frame_t0", pa.int64()),             # frame indices in the decoded stream
    ("frame_t1", pa.int64()),
    ("time_t0", pa.float64()),            # seconds
    ("time_t1", pa.float64()),
    ("fps", pa.float64()),
    ("video_width", pa.int32()),          # upright (after rotation) source size
    ("video_height", pa.int32()),
    ("rotation", pa.int32()),             # display rotation applied, degrees clockwise
    ("crop_x", pa.float64()),             # crop box in upright source pixels
    ("crop_y", pa.float64()),
    ("crop_w", pa.float64()),
    ("crop_h", pa.float64()),
    # v2: the 2x3 affine (row-major) from frame t1's upright pixels to frame t0's: the target
    # is aligned to the source's background when the camera moved (identity otherwise), and
    # the crop box is in frame t0's space for both images
    ("target_transform", pa.list_(pa.float64(), 6)),
    ("width", pa.int32()),                # stored image size
    ("height", pa.int32()),
    ("num_points", pa.int32()),
    ("tracker", pa.string()),
    ("tracker_version", pa.string()),
    ("motion_score", pa.float64()),       # video-level: residual (object) motion
    ("camera_score", pa.float64()),       # video-level: global (camera) motion
    ("pair_motion", pa.float64()),        # median handle displacement, stored pixels
    ("visibility", pa.float64()),         # fraction of query points visible throughout
    ("seed", pa.int64()),
])

VIDEO_SCHEMA = pa.schema([
    ("schema_version", pa.int32()),
    ("video_id", pa.string()),
    ("source_uri", pa.string()),
    ("status", pa.string()),              # ok | filtered:<reason> | failed:<ErrorClass>: <message>
    ("shard", pa.string()),
    ("num_pairs", pa.int32()),
    ("duration", pa.float64()),
    ("fps", pa.float64()),
    ("num_frames", pa.int64()),
    ("video_width", pa.int32()),
    ("video_height", pa.int32()),
    ("rotation", pa.int32()),
    ("num_shots", pa.int32()),
    ("cut_score", pa.float64()),          # largest histogram distance inside a pair window
    ("motion_score", pa.float64()),
    ("camera_score", pa.float64()),
    ("decoded_frames", pa.int64()),       # frames the codec decoded for this video
    ("seed", pa.int64()),
])

PAIR_FIELDS = tuple(f.name for f in PAIR_SCHEMA) + ("shard",)
META_FIELDS = tuple(f.name for f in PAIR_SCHEMA)


def meta_fields(version: int) -> tuple[str, ...]:
    """The meta.json fields a sample of schema `version` has."""
    if version not in ADDED_PAIR_FIELDS:
        raise ValueError(f"unknown schema version {version!r}")
    later = [f for v, added in ADDED_PAIR_FIELDS.items() if v > version for f in added]
    return tuple(f for f in META_FIELDS if f not in later)


def pair_table(rows: list[dict], shard: str) -> pa.Table:
    """Pair manifest for one shard; `rows` are meta.json dicts."""
    schema = PAIR_SCHEMA.append(pa.field("shard", pa.string()))
    return pa.Table.from_pylist([{**r, "shard": shard} for r in rows], schema=schema)


def video_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=VIDEO_SCHEMA)


def status_kind(status: str) -> str:
    """'ok', 'filtered' or 'failed'."""
    return status.split(":", 1)[0]
