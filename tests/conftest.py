"""Shared test setup."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Work units for pytest-xdist's `--dist loadgroup` (`make test` runs two workers): the
    tests that start Ray (marker `ray`) run one after another on one worker, since two Ray
    clusters on one machine contend for fixed ports (the dashboard agent's); every other
    module stays whole on one worker, so its module-scoped fixtures are built once."""
    for item in items:
        group = "ray" if item.get_closest_marker("ray") else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


# --- CoTracker: vendored official code and a random-weights checkpoint --------------------------

# `make vendor-cotracker` unpacks the official CoTracker code here (it is not on PyPI).
VENDOR = REPO / ".cache" / "vendor"
if VENDOR.is_dir() and str(VENDOR) not in sys.path:
    sys.path.insert(0, str(VENDOR))


def require_cotracker() -> None:
    """The CoTracker backend is part of the product: its tests fail, never skip, without it."""
    try:
        import cotracker  # noqa: F401
    except ImportError:
        pytest.fail("official CoTracker code missing: run `make vendor-cotracker` "
                    "(`make test` does it)")


@pytest.fixture(scope="session")
def cotracker_checkpoint(tmp_path_factory) -> str:
    """Path of a CoTracker3 offline state dict with random (seeded) weights.

    Good for plumbing tests only: random weights cannot track.
    """
    require_cotracker()
    import torch
    from cotracker.predictor import CoTrackerPredictor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        predictor = CoTrackerPredictor(checkpoint=None, offline=True, window_len=60)
    path = tmp_path_factory.mktemp("cotracker") / "cotracker3_random.pth"
    torch.save(predictor.model.state_dict(), path)
    return str(path)

# --- end CoTracker ------------------------------------------------------------------------------
