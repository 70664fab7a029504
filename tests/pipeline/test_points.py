"""Whether a pair's mask covers what changed between its images, on known images."""
from __future__ import annotations

import numpy as np

from pipeline.points import change_covered


def _scene(seed=0, size=64):
    return np.random.default_rng(seed).integers(60, 200, (size, size, 3), dtype=np.uint8)


def test_change_inside_the_mask_is_covered_and_outside_it_is_not():
    source = _scene()
    target = source.copy()
    target[10:20, 10:20] = 255 - target[10:20, 10:20]    # something changed up here
    mask = np.zeros((64, 64), np.uint8)
    mask[5:25, 5:25] = 255
    assert change_covered(source, target, mask) == 1.0
    elsewhere = np.zeros_like(mask)
    elsewhere[40:60, 40:60] = 255
    assert change_covered(source, target, elsewhere) == 0.0
    half = np.zeros_like(mask)
    half[5:25, 5:15] = 255
    assert 0.3 < change_covered(source, target, half) < 0.7


def test_nothing_changed_is_covered_and_noise_is_not_a_change():
    source = _scene()
    assert change_covered(source, source, np.zeros((64, 64), np.uint8)) == 1.0
    noisy = np.clip(source.astype(int) + np.random.default_rng(1).integers(-3, 4, source.shape),
                    0, 255).astype(np.uint8)
    assert change_covered(source, noisy, np.zeros((64, 64), np.uint8)) == 1.0
