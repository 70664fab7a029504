"""Clip filters on low-resolution scoring frames: scene cuts, static clips, camera motion.

All scores are stored in the manifest so a rebuild can change thresholds.

- Cuts: encoders start a group of pictures at every cut they detect, off their regular
  keyframe interval, so the keyframes split a video into shots without decoding anything; a
  colour-histogram distance (0 same, 1 disjoint) between the consecutive frames of each pair
  window finds a cut inside a group of pictures.
- Motion: sparse Lucas-Kanade flow between probe frames of a pair window (whole frames); a
  similarity transform fitted with RANSAC explains the camera; what it leaves (the residual)
  is object motion. Both are expressed per second as a fraction of the frame diagonal, so
  they do not depend on resolution or on the probes' spacing. The fits chained along the
  probes are the camera's path over the window.
- Alignment: a window that passes is fitted frame by frame to its first frame's background
  (`align_to_first`: LK from the first frame's corners, a similarity fitted with RANSAC per
  frame); where the camera moved, its frames are aligned (pipeline.video), so what the tracker
  sees move, and what a pair teaches, is the objects' motion, not the camera's.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from schemas import coords


@dataclass(frozen=True)
class Motion:
    object: float         # per second, fraction of the frame diagonal
    camera: float
    path: tuple = ()      # per probe frame, the 2x3 camera transform from the window's first
                          # frame's pixels to that frame's (judged frames' pixels); empty
                          # when some probe could not be fitted


def histogram_distances(frames: list[np.ndarray], bins: int = 16) -> np.ndarray:
    """Half the L1 distance between consecutive normalised RGB histograms, in [0, 1]."""
    hists = []
    for f in frames:
        h = cv2.calcHist([f], [0, 1, 2], None, [bins] * 3, [0, 256] * 3).ravel()
        hists.append(h / max(h.sum(), 1.0))
    return np.array([0.5 * np.abs(a - b).sum() for a, b in zip(hists, hists[1:])])


def shots(keyframes: list[int], num_frames: int) -> list[tuple[int, int]]:
    """Inclusive frame ranges between the keyframes that the encoder placed off its regular
    interval: its scene-cut detector put them there.

    The regular interval is the most common one between keyframes when it repeats; a video
    whose intervals are all different has none, and its keyframes all mark cuts (footage
    edited from shots shorter than the encoder's longest interval). A false cut costs only
    the pairs that would have straddled it; a cut the encoder did not mark is found in the
    pair windows."""
    intervals = np.diff(keyframes)
    values, counts = np.unique(intervals, return_counts=True)
    regular = values[np.argmax(counts)] if len(counts) and counts.max() > 1 else None
    starts = [0] + [k for k, gap in zip(keyframes[1:], intervals) if gap != regular]
    return [(a, b - 1) for a, b in zip(starts, starts[1:] + [num_frames])]


def probe_pairs(times: list[float], min_interval_s: float) -> list[tuple[int, int]]:
    """Pairs (j, k) of window frames to measure motion between: from the first frame, each
    next probe frame is the first at least `min_interval_s` later (flow over too short an
    interval is mostly noise); a window shorter than that is one probe, first to last."""
    pairs, j = [], 0
    for k in range(1, len(times)):
        if times[k] - times[j] >= min_interval_s:
            pairs.append((j, k))
            j = k
    return pairs or [(0, len(times) - 1)]


def _pair_motion(prev: np.ndarray, nxt: np.ndarray, region: tuple | None = None
                 ) -> tuple[float, float, np.ndarray] | None:
    """(object, camera) displacement in pixels between two gray frames and the camera's 2x3
    similarity (prev's pixels -> nxt's), or None. Object motion is measured on the corners
    inside `region` (x0, y0, w, h) of prev (the whole frame when fewer than 8 are)."""
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
    if region is not None:
        inside = _inside(p, region)
        if inside.sum() >= 8:
            residual = residual[inside]
    # Objects may be small: a high percentile of the residual, not its median.
    return float(np.percentile(residual, 95)), camera, model


def _inside(points: np.ndarray, region: tuple) -> np.ndarray:
    x0, y0, w, h = region
    return (points[:, 0] >= x0) & (points[:, 0] < x0 + w) & (points[:, 1] >= y0) \
        & (points[:, 1] < y0 + h)


def window_motion(gray: list[np.ndarray], times: list[float], probes: list[tuple[int, int]],
                  px_per_diagonal: float) -> Motion:
    """Object and camera motion of a window from its probe pairs of gray frames (timestamps
    in seconds): the mean object motion and the median camera motion over the probes, in
    `px_per_diagonal` units of the frames' pixels per second; the camera's path along the
    probes when they are chained from the first frame (as `probe_pairs` places them)."""
    measured, path, last = [], [], 0
    for j, k in probes:
        m = _pair_motion(gray[j], gray[k]) if times[k] > times[j] else None
        if m is None:
            path = None
            continue
        measured.append((m[0] / (times[k] - times[j]), m[1] / (times[k] - times[j])))
        if path is not None and j == last:
            path.append(coords.compose_affines(m[2], path[-1] if path else coords.IDENTITY))
            last = k
        else:
            path = None
    if not measured:
        return Motion(0.0, 0.0)
    obj, cam = np.array(measured).T
    return Motion(float(np.mean(obj)) / px_per_diagonal,
                  float(np.median(cam)) / px_per_diagonal, tuple(path or ()))


def region_motion(first: np.ndarray, last: np.ndarray, region: tuple) -> float | None:
    """The object motion (pixels, a high percentile of what the camera's fit leaves) between
    two gray frames, on the corners inside `region` of the first; None when unknown."""
    m = _pair_motion(first, last, region)
    return None if m is None else m[0]


def verdict(motion: Motion, cfg) -> str | None:
    """None if a window may become a pair (with `cfg.align_camera`, a moving camera is undone
    by aligning the window to its first frame: pipeline.video), else the filter reason: no
    object motion is "camera-motion" or "static" by what the camera did."""
    moving_camera = motion.camera > cfg.camera_threshold
    if motion.object < cfg.static_threshold:
        return "camera-motion" if moving_camera else "static"
    if moving_camera and not cfg.align_camera:
        return "camera-motion"
    return None


@dataclass(frozen=True)
class Alignment:
    fits: list            # per frame, 2x3: its pixels -> the first frame's (first: identity)
    residual_px: float    # what the last frame's fit leaves unexplained in the region:
                          # object motion (as `_pair_motion`'s, a high percentile), in the
                          # frames' pixels


def align_to_first(gray: list[np.ndarray], region: tuple | None = None) -> Alignment | None:
    """Per frame, the 2x3 similarity taking its pixels to the first frame's (the background's
    motion undone), or None when the background cannot be followed; the residual is measured
    on the corners inside `region` (x0, y0, w, h) of the first frame (the whole frame when
    fewer than 8 are).

    Each frame is fitted to the first directly (no drift accumulates along the window), LK
    starting from the previous frame's fit, so motion larger than LK's search range is
    followed; RANSAC leaves the moving objects out as long as the background dominates."""
    first = gray[0]
    corners = cv2.goodFeaturesToTrack(first, maxCorners=200, qualityLevel=0.01, minDistance=7)
    if corners is None or len(corners) < 8:
        return None
    p = corners.reshape(-1, 2).astype(np.float32)
    fits, guess, residual = [np.eye(2, 3)], p.copy(), 0.0
    inside = np.ones(len(p), bool)
    if region is not None:
        inside = _inside(p, region)
        if inside.sum() < 8:
            inside[:] = True
    for frame in gray[1:]:
        moved, status, _ = cv2.calcOpticalFlowPyrLK(
            first, frame, p, guess.copy(), winSize=(15, 15), maxLevel=3,
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
        ok = status.ravel() == 1
        if ok.sum() < 8:
            return None
        model, _ = cv2.estimateAffinePartial2D(p[ok], moved.reshape(-1, 2)[ok],
                                               method=cv2.RANSAC, ransacReprojThreshold=1.0)
        if model is None:
            return None
        fits.append(cv2.invertAffineTransform(model))   # model: first frame -> this one
        guess = (p @ model[:, :2].T + model[:, 2]).astype(np.float32)
        # corners the camera took out of view are no evidence of anything moving
        h, w = frame.shape[:2]
        seen = ok & inside & (guess >= 10).all(axis=1) & (guess[:, 0] < w - 10) \
            & (guess[:, 1] < h - 10)
        residual = float(np.percentile(
            np.linalg.norm(moved.reshape(-1, 2)[seen] - guess[seen], axis=1), 95)) \
            if seen.sum() >= 8 else float("inf")
    return Alignment(fits, residual)
