"""Shared by the job tests."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def checkpoints(tiny_checkpoints) -> Path:
    """A tiny random checkpoints root in the public layout (model.tiny, seed 0)."""
    return tiny_checkpoints
