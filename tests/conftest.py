"""Shared test setup."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
