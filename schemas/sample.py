"""The WebDataset sample (schema v2; v1 samples are read too): one training pair.

| member        | content                                                               |
| source.<ext>  | first frame, RGB, at the dataset resolution                           |
| target.<ext>  | second frame, same crop/resize (v2: aligned to the first frame's      |
|               | background when the camera moved, meta `target_transform`)            |
| mask.png      | uint8 0/255, editable region covering every handle and target point   |
| drag.json     | {"handle": [[x, y], ...], "target": [[x, y], ...]}, 1..N pairs          |
| meta.json     | the pair manifest row without `shard` (see schemas.manifest)          |

Points are pixel coordinates in the stored images: x right, y down, origin top-left, pixel
centres at integer coordinates (pixel (row i, col j) is the point x=j, y=i).
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from schemas.manifest import ADDED_PAIR_FIELDS, SCHEMA_VERSION, meta_fields

IMAGE_FORMATS = ("jpg", "png")
MEMBERS = ("source", "target", "mask.png", "drag.json", "meta.json")
KEY_RE = re.compile(r"^[0-9a-f]{16}-\d{4}$")
MAX_POINTS = 64


class SampleError(ValueError):
    """A sample that breaks the contract."""


@dataclass
class DragSample:
    key: str
    source: np.ndarray            # (H, W, 3) uint8 RGB
    target: np.ndarray            # (H, W, 3) uint8 RGB
    mask: np.ndarray              # (H, W) uint8, 0 or 255
    handle: np.ndarray            # (N, 2) float, x/y
    target_points: np.ndarray     # (N, 2) float, x/y
    meta: dict = field(default_factory=dict)


def make_key(video_id: str, pair_index: int) -> str:
    return f"{video_id}-{pair_index:04d}"


def _encode_image(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(array)
    if fmt == "jpg":
        image.save(buf, format="JPEG", quality=95)
    else:
        image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _decode_image(data: bytes, mode: str) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert(mode))


def encode_sample(sample: DragSample, image_format: str = "jpg") -> dict:
    """The WebDataset dict (member name -> bytes) for one sample, validated first."""
    if image_format not in IMAGE_FORMATS:
        raise SampleError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    validate_sample(sample)
    drag = {
        "handle": [[round(float(x), 2), round(float(y), 2)] for x, y in sample.handle],
        "target": [[round(float(x), 2), round(float(y), 2)] for x, y in sample.target_points],
    }
    return {
        "__key__": sample.key,
        f"source.{image_format}": _encode_image(sample.source, image_format),
        f"target.{image_format}": _encode_image(sample.target, image_format),
        "mask.png": _encode_image(sample.mask, "png"),
        "drag.json": json.dumps(drag).encode(),
        "meta.json": json.dumps(sample.meta, sort_keys=True).encode(),
    }


def decode_sample(members: dict) -> DragSample:
    """Inverse of encode_sample; `members` maps member names (with extension) to bytes."""
    key = members.get("__key__")
    images = {}
    for name in ("source", "target"):
        found = [m for m in (f"{name}.{ext}" for ext in IMAGE_FORMATS) if m in members]
        if len(found) != 1:
            raise SampleError(f"{key}: expected exactly one {name}.<jpg|png>, got {found}")
        images[name] = _decode_image(members[found[0]], "RGB")
    for name in ("mask.png", "drag.json", "meta.json"):
        if name not in members:
            raise SampleError(f"{key}: missing member {name}")
    try:
        drag = json.loads(members["drag.json"])
        meta = json.loads(members["meta.json"])
        handle = np.asarray(drag["handle"], dtype=np.float64).reshape(-1, 2)
        target = np.asarray(drag["target"], dtype=np.float64).reshape(-1, 2)
    except (ValueError, KeyError, TypeError) as e:
        raise SampleError(f"{key}: bad drag.json/meta.json: {e}") from e
    sample = DragSample(key=key, source=images["source"], target=images["target"],
                        mask=_decode_image(members["mask.png"], "L"), handle=handle,
                        target_points=target, meta=meta)
    validate_sample(sample)
    return sample


def validate_sample(s: DragSample) -> None:
    """Raise SampleError naming the first way `s` breaks the contract of its version."""
    k = s.key
    if not isinstance(k, str) or not KEY_RE.match(k):
        raise SampleError(f"{k}: key must be <16 hex video_id>-<4 digit pair index>")
    if s.source.ndim != 3 or s.source.shape[2] != 3 or s.source.dtype != np.uint8:
        raise SampleError(f"{k}: source must be HxWx3 uint8, got {s.source.shape} {s.source.dtype}")
    if s.target.shape != s.source.shape or s.target.dtype != np.uint8:
        raise SampleError(f"{k}: target shape {s.target.shape} != source shape {s.source.shape}")
    h, w = s.source.shape[:2]
    if s.mask.shape != (h, w) or s.mask.dtype != np.uint8:
        raise SampleError(f"{k}: mask must be {h}x{w} uint8, got {s.mask.shape} {s.mask.dtype}")
    if not np.isin(s.mask, (0, 255)).all():
        raise SampleError(f"{k}: mask values must be 0 or 255")
    n = len(s.handle)
    if not 1 <= n <= MAX_POINTS or s.target_points.shape != (n, 2) or s.handle.shape != (n, 2):
        raise SampleError(f"{k}: need 1..{MAX_POINTS} handle/target pairs of equal count, "
                          f"got {s.handle.shape} and {s.target_points.shape}")
    for name, pts in (("handle", s.handle), ("target", s.target_points)):
        if not np.isfinite(pts).all():
            raise SampleError(f"{k}: {name} points must be finite")
        if (pts[:, 0] < 0).any() or (pts[:, 0] > w - 1).any() or (pts[:, 1] < 0).any() \
                or (pts[:, 1] > h - 1).any():
            raise SampleError(f"{k}: {name} point outside the {w}x{h} image")
        cols = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
        rows = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
        if (s.mask[rows, cols] == 0).any():
            raise SampleError(f"{k}: mask does not cover every {name} point")
    version = s.meta.get("schema_version")
    if version not in ADDED_PAIR_FIELDS:
        raise SampleError(f"{k}: schema_version {version!r} is not one of "
                          f"{sorted(ADDED_PAIR_FIELDS)} (this reader's newest: {SCHEMA_VERSION})")
    missing = [f for f in meta_fields(version) if f not in s.meta]
    if missing:
        raise SampleError(f"{k}: meta.json lacks {missing}")
    transform = s.meta.get("target_transform")
    if "target_transform" in meta_fields(version) and not (
            isinstance(transform, list) and len(transform) == 6
            and all(isinstance(v, (int, float)) and np.isfinite(v) for v in transform)):
        raise SampleError(f"{k}: meta.json target_transform must be 6 finite numbers (a 2x3 "
                          f"affine, row-major), got {transform!r}")
    if s.meta["key"] != k or s.meta["num_points"] != n:
        raise SampleError(f"{k}: meta.json key/num_points disagree with the sample")
    if (s.meta["width"], s.meta["height"]) != (w, h):
        raise SampleError(f"{k}: meta.json size {s.meta['width']}x{s.meta['height']} != {w}x{h}")
