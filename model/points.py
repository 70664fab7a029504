"""Drag points: parsing, validation against image and mask, and rasterising to point maps.

Points are (x, y) pixel coordinates, x right, y down, pixel centres at integers
(schemas.coords owns the convention and the conversions between sizes).
"""
from __future__ import annotations

import re

import numpy as np
import torch

from schemas.coords import round_to_pixel


class DragInputError(ValueError):
    """A drag edit's inputs are inconsistent; the message says which input and why, and
    `points` names the point list at fault ("handles" or "targets"), if one is."""

    def __init__(self, message: str, points: str | None = None):
        super().__init__(message)
        self.points = points


def editable_region(image) -> np.ndarray:
    """A mask image (PIL) -> uint8 0/255 of its size: nonzero in any channel = editable."""
    if image.mode in ("1", "L", "I", "I;16", "F"):
        editable = np.asarray(image) != 0
    else:
        editable = np.asarray(image.convert("RGB")).any(axis=2)
    return np.where(editable, 255, 0).astype(np.uint8)


_NUMBER = r"\s*([-+0-9.eE]+)\s*"
_PAIR = re.compile(f"^{_NUMBER},{_NUMBER}->{_NUMBER},{_NUMBER}$")


def parse_drag(text: str) -> tuple[np.ndarray, np.ndarray]:
    """"x0,y0->x1,y1; x0,y0->x1,y1" -> (handles (N, 2), targets (N, 2))."""
    pairs = [p for p in text.split(";") if p.strip()]
    if not pairs:
        raise DragInputError("no drag given: expected 'x0,y0->x1,y1; ...'")
    handles, targets = [], []
    for i, pair in enumerate(pairs):
        m = _PAIR.match(pair)
        if not m:
            raise DragInputError(f"drag pair {i} {pair.strip()!r} is not 'x0,y0->x1,y1'")
        try:
            x0, y0, x1, y1 = (float(v) for v in m.groups())
        except ValueError:
            raise DragInputError(f"drag pair {i} {pair.strip()!r} has a malformed number") from None
        handles.append((x0, y0))
        targets.append((x1, y1))
    return np.array(handles), np.array(targets)


def validate_drag(handles, targets, size: tuple[int, int], mask: np.ndarray | None = None):
    """Check points against an image of size (w, h) and its mask; return float64 arrays.

    Both handles and targets must lie inside the image and inside the mask (the editable
    region), and there must be as many targets as handles, at least one of each.
    """
    handles = np.asarray(handles, dtype=np.float64).reshape(-1, 2)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
    if len(handles) == 0 or len(targets) == 0:
        raise DragInputError(f"empty point list: {len(handles)} handles, {len(targets)} targets; "
                             "a drag needs at least one handle->target pair",
                             "handles" if len(handles) == 0 else "targets")
    if len(handles) != len(targets):
        raise DragInputError(f"{len(handles)} handles but {len(targets)} targets; "
                             "every handle needs exactly one target", "targets")
    w, h = size
    if mask is not None and mask.shape[:2] != (h, w):
        raise DragInputError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}")
    for kind, pts in (("handle", handles), ("target", targets)):
        try:
            pix = round_to_pixel(pts, (w, h))
        except ValueError as e:
            raise DragInputError(f"{kind} {e}", f"{kind}s") from None
        if mask is not None:
            for i, (x, y) in enumerate(pix):
                if not mask[y, x]:
                    raise DragInputError(f"{kind} point {i} ({pts[i][0]:g}, {pts[i][1]:g}) is "
                                         "outside the mask; handles and targets must lie in "
                                         "the editable region", f"{kind}s")
    return handles, targets


def point_maps(handles, targets, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 1, h, w) float maps holding label i+1 at pair i's pixel, 0 elsewhere.

    A later pair overwrites an earlier one on the same pixel: a defined answer where the
    public release's indexed assignment leaves the result unspecified (PyTorch does not order
    writes to repeated indices)."""
    w, h = size
    maps = []
    for pts in (handles, targets):
        m = torch.zeros(h, w)
        pix = round_to_pixel(np.asarray(pts, dtype=np.float64).reshape(-1, 2), (w, h))
        for i, (x, y) in enumerate(pix):
            m[y, x] = i + 1
        maps.append(m[None, None])
    return maps[0], maps[1]
