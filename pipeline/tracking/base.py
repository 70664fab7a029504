"""The tracker interface every backend implements (the backends by name: `registry`).

A tracker takes a batch of clips that start at the pair's first frame and the query points on
that first frame, and returns every query's position in every frame plus a visibility flag.
Coordinates follow `schemas.coords`: (x, y) pixels of the clip frames, pixel centres at
integers.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class TrackerError(RuntimeError):
    pass


class Tracker(Protocol):
    name: str
    version: str

    def track(self, clips: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """clips (B, T, H, W, 3) uint8 RGB; queries (B, N, 2) float (x, y) on frame 0.

        Returns tracks (B, T, N, 2) float32 with tracks[:, 0] == queries, and visible
        (B, T, N) bool with visible[:, 0] all True.
        """


def grid_queries(height: int, width: int, grid_size: int) -> np.ndarray:
    """grid_size x grid_size points (x, y) at the centres of an even grid of cells."""
    xs = (np.arange(grid_size) + 0.5) * width / grid_size - 0.5
    ys = (np.arange(grid_size) + 0.5) * height / grid_size - 0.5
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def check_inputs(clips: np.ndarray, queries: np.ndarray) -> None:
    if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
        raise TrackerError(f"clips must be (B, T, H, W, 3) uint8, got {clips.shape} {clips.dtype}")
    if clips.shape[1] < 2:
        raise TrackerError("clips need at least 2 frames")
    if queries.ndim != 3 or queries.shape[0] != clips.shape[0] or queries.shape[2] != 2:
        raise TrackerError(f"queries must be (B, N, 2), got {queries.shape}")

