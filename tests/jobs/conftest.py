"""Shared by the job tests."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """A tiny random checkpoints root in the public layout (model.tiny, seed 0)."""
    from model.tiny import save_tiny_checkpoints
    root = tmp_path_factory.mktemp("checkpoints")
    save_tiny_checkpoints(str(root), seed=0)
    return root
