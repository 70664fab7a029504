"""The tracker backends by name (`BACKENDS`): how each is built from a `TrackConfig` and which
`track.options` it takes. The config's validation, `make_tracker` and `jobs.evaluate` all read
this one table.

A backend's module is imported only when it is built (CoTracker pulls in torch), so importing
this module, `pipeline.tracking` or `pipeline.config` stays light. Its options are therefore
declared here, by name and YAML type, beside the keyword arguments of its constructor they go
to (`tests/pipeline/test_tracking.py` keeps the two in step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from pipeline.tracking.base import Tracker, TrackerError


def _builtin(cfg) -> Tracker:
    from pipeline.tracking.lk import LKTracker
    return LKTracker(**cfg.options)


def _cotracker(cfg) -> Tracker:
    from pipeline.tracking.cotracker import CoTrackerBackend
    return CoTrackerBackend(checkpoint=cfg.checkpoint, device=cfg.device, **cfg.options)


@dataclass(frozen=True)
class Backend:
    build: Callable[..., Tracker]    # TrackConfig -> tracker; imports the backend's module
    options: dict                    # track.options it takes: name -> YAML type (int, float, list)


BACKENDS = {
    "builtin": Backend(_builtin, {"window": int, "levels": int, "fb_max_px": float,
                                  "residual_ratio": float, "residual_floor": float}),
    "cotracker": Backend(_cotracker, {"window_len": int, "model_resolution": list,
                                      "batch_size": int}),
}


def backend_problem(backend: str) -> Optional[str]:
    if backend in BACKENDS:
        return None
    return f"track.backend: {'|'.join(BACKENDS)}, got {backend!r}"


def options_problem(backend: str, options: dict) -> Optional[str]:
    """What is wrong with `options` for `backend` (None: nothing, or an unknown backend,
    which `backend_problem` names): the first key it does not take, or a value of the wrong
    type."""
    if backend not in BACKENDS:
        return None
    if not isinstance(options, dict):
        return f"track.options: expected a mapping, got {type(options).__name__}"
    takes = BACKENDS[backend].options
    for key, value in options.items():
        if key not in takes:
            return (f"track.options.{key}: not an option of track.backend {backend} (it "
                    f"takes {', '.join(sorted(takes)) or 'none'})")
        kind = takes[key]
        accepted = (int, float) if kind is float else kind   # YAML writes 1.0 as 1 too
        if isinstance(value, bool) or not isinstance(value, accepted):
            return f"track.options.{key}: expected {kind.__name__}, got {value!r}"
    return None


def make_tracker(cfg) -> Tracker:
    """The backend named by a `pipeline.config.TrackConfig`, built with its options."""
    problem = backend_problem(cfg.backend) or options_problem(cfg.backend, cfg.options)
    if problem:
        raise TrackerError(problem)
    return BACKENDS[cfg.backend].build(cfg)
