"""Deterministic pair and crop sampling from (dataset seed, video_id)."""
from __future__ import annotations

import hashlib

import numpy as np


def seed_for(seed: int, video_id: str) -> int:
    """The per-video seed stored in the manifest."""
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def rng_for(video_seed: int, purpose: str) -> np.random.Generator:
    """An independent stream per purpose, so changing one stage never shifts another."""
    digest = hashlib.sha256(f"{video_seed}:{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def sample_pairs(shots: list[tuple[int, int]], fps: float, gap_s: tuple, count: int,
                 rng: np.random.Generator) -> list[tuple[int, int]]:
    """Up to `count` (t0, t1) frame pairs, each inside one shot (inclusive frame ranges).

    Shots too short for the smallest gap are skipped; shots are chosen in proportion to their
    length. Pairs are distinct, in the order drawn; fewer than `count` come back when the
    shots have too few options.
    """
    min_gap = max(1, int(round(gap_s[0] * fps)))
    max_gap = max(min_gap, int(round(gap_s[1] * fps)))
    usable = [(a, b) for a, b in shots if b - a >= min_gap]
    if not usable:
        return []
    lengths = np.array([b - a for a, b in usable], dtype=float)
    pairs: list[tuple[int, int]] = []
    for _ in range(count * 4):
        if len(pairs) == count:
            break
        a, b = usable[rng.choice(len(usable), p=lengths / lengths.sum())]
        gap = int(rng.integers(min_gap, min(max_gap, b - a) + 1))
        t0 = int(rng.integers(a, b - gap + 1))
        if (t0, t0 + gap) not in pairs:
            pairs.append((t0, t0 + gap))
    return pairs


def sample_crop(width: int, height: int, scale: tuple, rng: np.random.Generator
                ) -> tuple[int, int, int, int]:
    """A square crop box (x0, y0, side, side) in integer upright pixels."""
    short = min(width, height)
    side = max(1, int(round(short * rng.uniform(scale[0], scale[1]))))
    x0 = int(rng.integers(0, width - side + 1))
    y0 = int(rng.integers(0, height - side + 1))
    return x0, y0, side, side


def clip_indices(t0: int, t1: int, num_frames: int) -> list[int]:
    """num_frames frame indices from t0 to t1 inclusive, evenly spaced (repeats if t1-t0 is
    small) so every clip in a batch has the same length."""
    return [int(i) for i in np.round(np.linspace(t0, t1, num_frames))]
