"""Choose handle/target pairs from tracks and build the editable-region mask."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Drag:
    handle: np.ndarray      # (n, 2) x/y at t0, stored pixels
    target: np.ndarray      # (n, 2) x/y at t1
    mask: np.ndarray        # (H, W) uint8 0/255
    pair_motion: float      # median handle displacement
    visibility: float       # fraction of query points visible in every frame


def select_drag(tracks: np.ndarray, visible: np.ndarray, size: tuple[int, int], cfg,
                grid_size: int, rng: np.random.Generator) -> Drag | None:
    """tracks (T, N, 2), visible (T, N) for one clip; None when nothing trackable moves.

    Handles are drawn without replacement among tracks that stay visible and move at least
    `min_motion_px`, with probability proportional to their displacement; targets are their
    tracked positions in the last frame. Tracks at the edge of the moving region (a grid
    neighbour does not move) are used only when there is no interior: an edge track may sit
    on the background beside the object, or mix the two motions. The mask is the union of
    discs around every moving track's start and end, closed and dilated, so it covers every
    handle and target.
    """
    w, h = size
    always = visible.all(axis=0)
    displacement = np.linalg.norm(tracks[-1] - tracks[0], axis=1)
    moving = np.flatnonzero(always & (displacement >= cfg.min_motion_px))
    visibility = float(always.mean())
    if len(moving) == 0 or visibility < cfg.min_visible:
        return None
    candidates = _interior(moving, grid_size)
    if len(candidates) == 0:
        candidates = moving
    count = int(rng.integers(1, min(cfg.max_points, len(candidates)) + 1))
    weights = displacement[candidates] / displacement[candidates].sum()
    chosen = np.sort(rng.choice(candidates, size=count, replace=False, p=weights))
    handle, target = tracks[0, chosen], tracks[-1, chosen]

    cell = max(w, h) / grid_size
    radius = max(2, int(np.ceil(cell * 0.75)))
    mask = np.zeros((h, w), np.uint8)
    for x, y in np.concatenate([tracks[0, moving], tracks[-1, moving]]):
        cv2.circle(mask, (int(round(x)), int(round(y))), radius, 255, thickness=-1)
    close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, close)
    if cfg.mask_dilate_px > 0:
        k = 2 * cfg.mask_dilate_px + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    # Round in [0, W-1] x [0, H-1]: tracked points can sit a hair outside after rounding.
    handle = np.clip(handle, 0, [w - 1, h - 1])
    target = np.clip(target, 0, [w - 1, h - 1])
    return Drag(handle=handle.astype(np.float64), target=target.astype(np.float64),
                mask=mask, pair_motion=float(np.median(displacement[chosen])),
                visibility=visibility)


def change_covered(source: np.ndarray, target: np.ndarray, mask: np.ndarray,
                   top: float = 0.01, floor: int = 24) -> float:
    """The fraction of the pixels that change most between source and target (the top `top`
    of the gray-level differences, among those above `floor`) that the mask covers: a drag
    that explains the change covers nearly all; a pair whose moving thing the tracks missed
    (a large, fast or blurred motion) leaves its change outside. 1.0 when nothing changes."""
    gray = [cv2.GaussianBlur(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), (3, 3), 0).astype(np.int16)
            for im in (source, target)]
    diff = np.abs(gray[0] - gray[1])
    changed = diff >= max(floor, np.percentile(diff, 100 * (1 - top)))
    if not changed.any():
        return 1.0
    return float((mask[changed] > 0).mean())


def _interior(moving: np.ndarray, grid_size: int) -> np.ndarray:
    """Indices of moving grid tracks whose four grid neighbours all move too (queries are
    laid out row-major, as `pipeline.tracking.grid_queries` makes them)."""
    grid = np.zeros(grid_size * grid_size, bool)
    grid[moving] = True
    grid = np.pad(grid.reshape(grid_size, grid_size), 1)
    inner = grid[1:-1, 1:-1] & grid[:-2, 1:-1] & grid[2:, 1:-1] & grid[1:-1, :-2] & grid[1:-1, 2:]
    return np.flatnonzero(inner.ravel())
