"""Shots from keyframes, probe placement in a pair window, and window verdicts, on known
inputs."""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.config import FilterConfig
from pipeline.filters import (Motion, align_to_first, probe_pairs, region_motion, shots, verdict,
                              window_motion)
from pipeline.video import thumbnail
from schemas import coords


def test_keyframes_off_the_regular_interval_start_shots():
    # every 48 frames, and one the encoder put at a cut (frame 120): the cadence restarts there
    keys = [0, 48, 96, 120, 168, 216]
    assert shots(keys, 240) == [(0, 119), (120, 239)]
    assert shots([0, 48, 96, 144], 192) == [(0, 191)]         # regular: no cut


def test_without_a_regular_interval_every_keyframe_starts_a_shot():
    # bikes.mp4: keyframes only at its cuts, every interval different
    keys = [0, 30, 76, 137, 187, 242]
    assert shots(keys, 250) == [
        (0, 29), (30, 75), (76, 136), (137, 186), (187, 241), (242, 249)]
    assert shots([0], 100) == [(0, 99)]


def test_probes_are_at_least_the_interval_apart():
    times = [k / 24 for k in (0, 3, 6, 9, 12, 15, 18, 21)]         # 8 frames over 0.875 s
    assert probe_pairs(times, 0.25) == [(0, 2), (2, 4), (4, 6)]
    assert probe_pairs([0.0, 0.05, 0.1], 0.25) == [(0, 2)]          # too short: first to last


def _textured(seed=0, size=(160, 120)):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((size[1] * 2, size[0] * 2)).astype(np.float32), (0, 0), 2)
    return np.clip(128 + 400 * (img - img.mean()), 0, 255).astype(np.uint8)


def test_window_motion_separates_camera_from_objects():
    big = _textured()
    w, h = 160, 120
    times = [0.0, 0.25, 0.5]
    # camera: the whole view slides 4 px per probe
    pan = [big[40:40 + h, 40 + 4 * k:40 + 4 * k + w].copy() for k in range(3)]
    diag = np.hypot(w, h)
    m = window_motion(pan, times, [(0, 1), (1, 2)], diag)
    assert abs(m.camera - 4 / 0.25 / diag) < 0.2 * 4 / 0.25 / diag and m.object < m.camera
    # the camera's path from the first frame: the view slid 4 then 8 px left
    assert len(m.path) == 2
    for k, step in enumerate(m.path, start=1):
        np.testing.assert_allclose(step, [[1, 0, -4 * k], [0, 1, 0]], atol=0.05)
    # probes not chained from the first frame, or one that cannot be fitted: no path
    assert window_motion(pan, times, [(0, 1), (0, 2)], diag).path == ()
    flat = [np.full((h, w), 128, np.uint8)] + pan[1:]
    assert window_motion(flat, times, [(0, 1), (1, 2)], diag).path == ()
    # object: a patch moves 6 px per probe over a still background
    still = big[40:40 + h, 40:40 + w]
    frames = []
    for k in range(3):
        f = still.copy()
        f[40:80, 30 + 6 * k:70 + 6 * k] = big[:40, :40]
        frames.append(f)
    m = window_motion(frames, times, [(0, 1), (1, 2)], diag)
    assert m.camera < 0.5 / 0.25 / diag and m.object > 4 / 0.25 / diag


def test_region_motion_measures_the_objects_inside_the_region_only():
    """A patch moves 6 px over a still background: inside a region around it the residual is
    its motion; in a region elsewhere, nothing moved."""
    big = _textured(seed=2)
    w, h = 160, 120
    still = big[40:40 + h, 40:40 + w]
    moved = still.copy()
    moved[40:80, 36:76] = big[:40, :40]
    first = still.copy()
    first[40:80, 30:70] = big[:40, :40]
    around = region_motion(first, moved, (20, 30, 60, 60))
    assert 4 < around < 8, around
    assert region_motion(first, moved, (100, 0, 60, 120)) < 0.5
    assert region_motion(np.full((h, w), 9, np.uint8), moved, (0, 0, w, h)) is None


def test_thumbnail_is_an_area_average():
    """The fast thumbnail (whole-factor area average, then bilinear) stays within a grey level
    or two of OpenCV's exact area resampling; a frame not divisible by the factor loses only
    its last few columns and rows."""
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8), (0, 0), 3)
    frame = cv2.normalize(frame, None, 0, 255, cv2.NORM_MINMAX)      # grey levels' std ~28
    for (w, h), size, used in [((640, 360), (228, 128), (640, 360)),
                               ((640, 272), (301, 128), (640, 272)),
                               ((176, 144), (156, 128), (176, 144)),
                               ((1280, 720), (228, 128), (1280, 720)),
                               ((1283, 721), (228, 128), (1280, 720))]:
        f = cv2.resize(frame, (w, h))
        t = thumbnail(f, size)
        assert t.shape == (size[1], size[0], 3) and t.dtype == np.uint8
        exact = cv2.resize(f[:used[1], :used[0]], size, interpolation=cv2.INTER_AREA)
        assert np.abs(t.astype(int) - exact).mean() < 1.5, (w, h)


def test_verdicts():
    cfg = FilterConfig()
    assert verdict(Motion(object=0.05, camera=0.0), cfg) is None
    assert verdict(Motion(0.05, 0.02), cfg) is None   # objects moving under a moving camera
    assert verdict(Motion(0.001, 0.0), cfg) == "static"
    assert verdict(Motion(0.001, 0.02), cfg) == "camera-motion"   # only the camera moves
    off = FilterConfig(align_camera=False)
    assert verdict(Motion(0.05, 0.02), off) == "camera-motion"


def test_align_to_first_undoes_the_camera_and_ignores_a_moving_object():
    """A view turning 0.4 degrees and sliding (3, -2) px per frame over a textured scene, with
    a patch moving on its own: each frame's fit takes its pixels back to the first frame's."""
    scene = _textured(seed=1, size=(240, 180))
    h, w = 120, 160
    centre = np.array([scene.shape[1] / 2, scene.shape[0] / 2])
    frames, truth = [], []
    for k in range(6):
        rot = cv2.getRotationMatrix2D(tuple(centre), 0.4 * k, 1.0)
        # frame pixel (x, y) shows scene point view(x, y): the view's origin slides and turns
        view = coords.compose_affines(rot, [[1, 0, 40 + 3 * k], [0, 1, 30 - 2 * k]])
        frame = cv2.warpAffine(scene, view, (w, h), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
        frame[50:80, 20 + 7 * k:50 + 7 * k] = scene[:30, :30]   # the object
        frames.append(frame)
        if k == 0:
            view0 = view
        truth.append(coords.compose_affines(coords.invert_affine(view0), view))
    alignment = align_to_first(frames)
    fits = alignment.fits
    assert alignment.residual_px > 5       # the object moved 35 px against the background
    grid = np.stack(np.meshgrid(np.arange(20, 140, 10), np.arange(15, 105, 10)), -1).reshape(-1, 2)
    for fit, expected in zip(fits, truth):
        error = np.linalg.norm(coords.apply_affine(grid, fit) - coords.apply_affine(grid, expected),
                               axis=1)
        assert error.max() < 0.25, error.max()
    assert align_to_first([np.zeros((120, 160), np.uint8)] * 3) is None   # nothing to follow
