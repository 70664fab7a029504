"""Training-time geometric augmentation of a drag pair: the one place that moves pixels and
points together.

A pair is (source, target, mask, handles, targets): two (H, W, 3) uint8 RGB frames, an
(H, W) uint8 0/255 mask and (N, 2) float (x, y) points in the convention of `schemas.coords`
(x right, y down, pixel centres at integers). Every geometric step is applied identically to
the three images and, through `schemas.coords`, to the points:

1. crop a square box (x0, y0, side, side) in integer pixels: points move by (-x0, -y0);
2. resize it to out_size x out_size (`coords.crop_resize`: area when shrinking, bilinear when
   enlarging; the mask with half-pixel-exact nearest neighbour, so it stays 0/255): points go
   through `coords.scale_points`, the same half-pixel rule;
3. optionally flip horizontally: x -> (out_size - 1) - x, y unchanged.

A pair survives the crop when both its handle and its target lie on a pixel of the crop
(`coords.inside_image`); the others are dropped. Returned points are float64 and clipped to
[0, out_size - 1] (the stored-sample contract); clipping never moves a point off its pixel,
because a point on a pixel is within half a pixel of that range. The mask is set at the
returned points' pixels, so it covers every point (as the data contract requires) even where
nearest-neighbour resampling shaved a pixel off the edge of the region.
"""
from __future__ import annotations

import numpy as np

from schemas import coords

MAX_CROP_TRIES = 10


def _points(pts) -> np.ndarray:
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def _apply(source, target, mask, handles, targets, box, out_size: int, flip: bool):
    """Crop `box` = (x0, y0, side_w, side_h), resize to out_size, flip; points of the pairs
    that lie inside the box only."""
    x0, y0, bw, bh = box
    out = (out_size, out_size)
    handles = _points(handles) - (x0, y0)
    targets = _points(targets) - (x0, y0)
    keep = coords.inside_image(handles, (bw, bh)) & coords.inside_image(targets, (bw, bh))
    handles, targets = handles[keep], targets[keep]
    if (bw, bh) != out:  # skip the no-op so an identity transform is exact
        handles = coords.scale_points(handles, (bw, bh), out)
        targets = coords.scale_points(targets, (bw, bh), out)
    source = coords.crop_resize(source, box, out)
    target = coords.crop_resize(target, box, out)
    crop = mask[y0:y0 + bh, x0:x0 + bw]
    mask = coords.resize_mask(crop, out)
    handles = np.clip(handles, 0, out_size - 1)
    targets = np.clip(targets, 0, out_size - 1)
    if flip:
        source, target, mask = (np.ascontiguousarray(a[:, ::-1]) for a in (source, target, mask))
        handles[:, 0] = (out_size - 1) - handles[:, 0]
        targets[:, 0] = (out_size - 1) - targets[:, 0]
    mask = np.ascontiguousarray(mask, dtype=np.uint8).copy()
    for pts in (handles, targets):
        if len(pts):
            cols, rows = coords.round_to_pixel(pts, out).T
            mask[rows, cols] = 255
    return (np.ascontiguousarray(source), np.ascontiguousarray(target), mask,
            handles.astype(np.float64), targets.astype(np.float64))


def _check(source, target, mask, out_size):
    h, w = source.shape[:2]
    if target.shape[:2] != (h, w) or mask.shape[:2] != (h, w):
        raise ValueError(f"source {source.shape}, target {target.shape} and mask {mask.shape} "
                         "must have the same height and width")
    if int(out_size) < 1:
        raise ValueError(f"out_size must be >= 1, got {out_size}")
    return w, h


def resize_pair(source, target, mask, handles, targets, out_size: int):
    """The whole pair resized to out_size x out_size, no randomness (validation).

    Non-square images are squashed to a square (stored pairs are square)."""
    w, h = _check(source, target, mask, out_size)
    return _apply(source, target, mask, handles, targets, (0, 0, w, h), int(out_size), False)


def augment_pair(source, target, mask, handles, targets, rng: np.random.Generator,
                 out_size: int, scale=(0.8, 1.0), flip_p: float = 0.5):
    """Random square crop + resize to out_size + random horizontal flip of a pair.

    The crop side is a uniform fraction in `scale` of the short side (rounded to whole pixels,
    at least 1), at a uniform integer position. Pairs with a handle or target outside the crop
    are dropped; a crop that keeps no pair is redrawn up to MAX_CROP_TRIES times, after which
    the whole image is used (`resize_pair`'s geometry). The flip (probability flip_p) is drawn
    after the crop. Returns (source, target, mask, handles, targets) with float64 points.
    """
    w, h = _check(source, target, mask, out_size)
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    handles, targets = _points(handles), _points(targets)
    short = min(w, h)
    box = (0, 0, w, h)  # fallback: the whole image
    for _ in range(MAX_CROP_TRIES):
        side = int(np.clip(round(rng.uniform(lo, hi) * short), 1, short))
        x0 = int(rng.integers(0, w - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        size = (side, side)
        inside = (coords.inside_image(handles - (x0, y0), size)
                  & coords.inside_image(targets - (x0, y0), size))
        if inside.any() or len(handles) == 0:
            box = (x0, y0, side, side)
            break
    flip = bool(rng.random() < flip_p)
    return _apply(source, target, mask, handles, targets, box, int(out_size), flip)
