"""Clip filters on low-resolution scoring frames: scene cuts, static clips, camera motion.

All scores are stored in the manifest so a rebuild can change thresholds.

- Cuts: colour-histogram distance between consecutive scoring frames (0 same, 1 disjoint).
- Motion: sparse Lucas-Kanade flow between the two frames of each probe (scoring frames one
  scoring step apart); a similarity transform fitted with RANSAC explains the camera; what it
  leaves (the residual) is object motion. Both are expressed per second as a fraction of the
  frame diagonal, so they do not depend on resolution or on the scoring frame rate.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Shot:
    start: int            # first and last scoring-frame index, inclusive
    end: int
    object_motion: float = 0.0
    camera_motion: float = 0.0


def histogram_distances(frames: list[np.ndarray], bins: int = 16) -> np.ndarray:
    """Half the L1 distance between consecutive normalised RGB histograms, in [0, 1]."""
    hists = []
    for f in frames:
        h = cv2.calcHist([f], [0, 1, 2], None, [bins] * 3, [0, 256] * 3).ravel()
        hists.append(h / max(h.sum(), 1.0))
    return np.array([0.5 * np.abs(a - b).sum() for a, b in zip(hists, hists[1:])])


def split_shots(distances: np.ndarray, threshold: float, times: list[float],
                max_segment_s: float) -> list[Shot]:
    """Shots between cuts (a cut lies somewhere between scoring frames k and k+1), each cut
    further into segments of at most `max_segment_s` so that a long shot with a moment of
    motion is judged by that moment, not by its average. `times` are the scoring frames'
    timestamps."""
    cuts = [k for k, d in enumerate(distances) if d > threshold]
    segments = []
    for start, end in zip([0] + [k + 1 for k in cuts], cuts + [len(distances)]):
        while times[end] - times[start] > max_segment_s:
            split = max(start + 1, max(k for k in range(start, end + 1)
                                       if times[k] - times[start] <= max_segment_s))
            segments.append(Shot(start, split))
            start = split
        segments.append(Shot(start, end))
    return segments


def _pair_motion(prev: np.ndarray, nxt: np.ndarray) -> tuple[float, float] | None:
    """(object, camera) displacement in pixels between two gray frames, or None."""
    pts = cv2.goodFeaturesToTrack(prev, maxCorners=150, qualityLevel=0.01, minDistance=5)
    if pts is None or len(pts) < 8:
        return None
    moved, status, _ = cv2.calcOpticalFlowPyrLK(prev, nxt, pts, None, winSize=(11, 11),
                                                maxLevel=3)
    ok = status.ravel() == 1
    if ok.sum() < 8:
        return None
    p, q = pts.reshape(-1, 2)[ok], moved.reshape(-1, 2)[ok]
    model, _ = cv2.estimateAffinePartial2D(p, q, method=cv2.RANSAC, ransacReprojThreshold=1.0)
    if model is None:
        return None
    predicted = p @ model[:, :2].T + model[:, 2]
    camera = float(np.median(np.linalg.norm(predicted - p, axis=1)))
    residual = np.linalg.norm(q - predicted, axis=1)
    # Objects may be small: a high percentile of the residual, not its median.
    return float(np.percentile(residual, 95)), camera


def score_shot(gray: list[np.ndarray], shot: Shot, probes: set[int], interval_s: float) -> Shot:
    """Fill shot.object_motion and shot.camera_motion (fraction of diagonal per second) from
    the probes inside the shot: scoring frames k whose successor k+1 is `interval_s` later."""
    h, w = gray[0].shape
    diagonal = float(np.hypot(w, h))
    motions = [m for k in range(shot.start, shot.end)
               if k in probes and (m := _pair_motion(gray[k], gray[k + 1])) is not None]
    if motions:
        obj, cam = np.array(motions).T
        shot.object_motion = float(np.mean(obj)) / diagonal / interval_s
        shot.camera_motion = float(np.median(cam)) / diagonal / interval_s
    return shot


def shot_verdict(shot: Shot, duration_s: float, cfg) -> str | None:
    """None if the shot may be sampled, else the filter reason."""
    if duration_s < cfg.min_shot_s:
        return "too-short"
    if shot.camera_motion > cfg.camera_threshold:
        return "camera-motion"
    if shot.object_motion < cfg.static_threshold:
        return "static"
    return None
