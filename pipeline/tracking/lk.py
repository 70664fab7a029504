"""Built-in CPU tracker: pyramidal Lucas-Kanade, chained frame to frame.

Each step tracks forward and back again. A point is marked invisible from then on (once lost,
a chained track cannot be trusted again) when its round trip misses by more than
`fb_max_px`, when it leaves the frame, or when its patch residual is far above the step's
median: that is how points whose window straddles a moving edge show up (a background point
next to a moving object is dragged along consistently, so the round trip alone misses it).
Deterministic, no weights, fast enough for tests and CPU-only clusters.
"""
from __future__ import annotations

import inspect

import cv2
import numpy as np

from pipeline.tracking.base import check_inputs


class LKTracker:
    name = "builtin-lk"

    def __init__(self, window: int = 11, levels: int = 3, fb_max_px: float = 0.5,
                 residual_ratio: float = 2.0, residual_floor: float = 4.0):
        self.params = dict(winSize=(window, window), maxLevel=levels,
                           criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 0.001))
        self.fb_max_px = fb_max_px
        self.residual_ratio, self.residual_floor = residual_ratio, residual_floor
        # Other settings give other tracks: the version names those that are not the default.
        given = dict(window=window, levels=levels, fb_max_px=fb_max_px,
                     residual_ratio=residual_ratio, residual_floor=residual_floor)
        self.version = f"1+opencv{cv2.__version__}" + "".join(
            f".{k}={v:g}" for k, v in given.items() if v != _DEFAULTS[k])

    def track(self, clips: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_inputs(clips, queries)
        b, t, h, w = clips.shape[:4]
        n = queries.shape[1]
        tracks = np.zeros((b, t, n, 2), np.float32)
        visible = np.zeros((b, t, n), bool)
        for i in range(b):
            gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in clips[i]]
            pts = queries[i].astype(np.float32).reshape(-1, 1, 2)
            alive = np.ones(n, bool)
            tracks[i, 0], visible[i, 0] = queries[i], True
            for k in range(1, t):
                nxt, st, err = cv2.calcOpticalFlowPyrLK(gray[k - 1], gray[k], pts, None,
                                                        **self.params)
                back, st_back, _ = cv2.calcOpticalFlowPyrLK(gray[k], gray[k - 1], nxt, None,
                                                            **self.params)
                fb = np.linalg.norm((back - pts).reshape(-1, 2), axis=1)
                p = nxt.reshape(-1, 2)
                inside = (p[:, 0] >= 0) & (p[:, 0] <= w - 1) & (p[:, 1] >= 0) & (p[:, 1] <= h - 1)
                alive &= (st.ravel() == 1) & (st_back.ravel() == 1) & (fb < self.fb_max_px) & inside
                err = err.ravel()
                if alive.any():
                    limit = max(self.residual_floor, self.residual_ratio * np.median(err[alive]))
                    alive &= err < limit
                # Lost points keep their last position so tracks stay finite.
                p = np.where(alive[:, None], p, pts.reshape(-1, 2))
                tracks[i, k], visible[i, k] = p, alive
                pts = p.astype(np.float32).reshape(-1, 1, 2)
        return tracks, visible


_DEFAULTS = {name: p.default for name, p in inspect.signature(LKTracker).parameters.items()}
