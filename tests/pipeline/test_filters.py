"""Shot and segment splitting, and shot verdicts, on known inputs."""
from __future__ import annotations

import numpy as np

from pipeline.config import FilterConfig
from pipeline.filters import Shot, shot_verdict, split_shots


def spans(shots):
    return [(s.start, s.end) for s in shots]


def test_cuts_split_shots():
    d = np.array([0.01, 0.02, 0.9, 0.01, 0.8, 0.0])   # cuts between frames 2|3 and 4|5
    times = [k * 0.25 for k in range(7)]
    assert spans(split_shots(d, 0.45, times, 10.0)) == [(0, 2), (3, 4), (5, 6)]


def test_long_shots_are_cut_into_segments():
    times = [k * 1.0 for k in range(26)]               # 26 frames, 1 s apart, no cuts
    shots = split_shots(np.zeros(25), 0.45, times, 10.0)
    assert spans(shots) == [(0, 10), (10, 20), (20, 25)]
    assert all(times[s.end] - times[s.start] <= 10.0 for s in shots)


def test_verdicts():
    cfg = FilterConfig()
    moving = Shot(0, 5, object_motion=0.05, camera_motion=0.0)
    assert shot_verdict(moving, 2.0, cfg) is None
    assert shot_verdict(moving, 0.2, cfg) == "too-short"
    assert shot_verdict(Shot(0, 5, 0.05, 0.02), 2.0, cfg) == "camera-motion"
    assert shot_verdict(Shot(0, 5, 0.001, 0.0), 2.0, cfg) == "static"
