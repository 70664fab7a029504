"""Mean-distance matching on synthetic feature maps with known answers: a map shifted by a known
(dx, dy) is matched exactly at handle + shift, also at non-square sizes and after upsampling
low-resolution features to the image size."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.evaluation.matching import (PatchMatcher, match_points, point_distances,
                                         upsample_features)


def random_features(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(c, h, w, generator=torch.Generator().manual_seed(seed))


def shifted(features: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """The map of an image whose content moved right by dx and down by dy."""
    return torch.roll(features, shifts=(dy, dx), dims=(1, 2))


def test_a_shifted_map_matches_at_handle_plus_shift_non_square():
    source = random_features(16, 40, 56)             # H=40, W=56
    edited = shifted(source, dx=-7, dy=5)
    handles = np.array([[20.0, 10.0], [30.0, 25.0], [45.0, 12.0]])
    targets = np.array([[10.0, 10.0], [23.0, 30.0], [45.0, 17.0]])
    matched = match_points(source, edited, handles)
    np.testing.assert_array_equal(matched, handles + [-7, 5])
    # |handle + shift - target|: (3, 5), (0, 0), (-7, 0)
    np.testing.assert_allclose(point_distances(matched, targets), [np.hypot(3, 5), 0.0, 7.0])


def test_handles_are_read_at_their_nearest_pixel_x_then_y():
    source = random_features(8, 30, 50, seed=1)
    edited = shifted(source, dx=4, dy=-3)
    matched = match_points(source, edited, np.array([[10.4, 20.6], [30.5, 9.49]]))
    np.testing.assert_array_equal(matched, [[14, 18], [35, 6]])   # (10, 21) and (31, 9) moved


def test_matching_after_upsampling_low_resolution_features():
    """Features at 1/8 of a 80x48 image, the edit moved by one feature cell right and two
    down: after upsampling, matches land 8 px right and 16 px down (away from the borders the
    upsampled maps are shifted copies of each other)."""
    low = random_features(32, 6, 10, seed=2)[None]
    source = upsample_features(low, (80, 48))
    edited = upsample_features(shifted(low[0], dx=1, dy=2)[None], (80, 48))
    assert source.shape == (32, 48, 80)
    handles = np.array([[12.0, 9.0], [30.0, 12.0], [50.0, 14.0], [61.0, 10.0]])
    np.testing.assert_array_equal(match_points(source, edited, handles), handles + [8, 16])


def test_upsampling_uses_pixel_centres():
    """align_corners=False: a 2-cell row upsampled x2 gives 1, 1.25, 1.75, 2 (cell centres at
    output pixels 0.5 and 2.5), and (W, H) sizes put width last."""
    row = torch.tensor([[[[1.0, 2.0]]]])
    np.testing.assert_allclose(upsample_features(row, (4, 1))[0, 0].numpy(), [1, 1.25, 1.75, 2])
    assert upsample_features(torch.zeros(1, 3, 3, 5), (10, 6)).shape == (3, 6, 10)


def test_match_points_refuses_maps_of_different_sizes():
    with pytest.raises(ValueError, match=r"feature maps differ in shape: \(4, 8, 8\) and "
                                         r"\(4, 8, 9\)"):
        match_points(torch.zeros(4, 8, 8), torch.zeros(4, 8, 9), np.array([[1.0, 1.0]]))


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_patch_matcher_finds_a_large_jump_exactly():
    # frame 1 = frame 0 moved by (+3, -17): far beyond an optical-flow window
    big = _texture(120, 150)
    frame0, frame1 = big[30:94, 20:100], big[47:111, -3 + 20:-3 + 100]
    clips = np.stack([frame0, frame1, frame0])[None]
    handles = np.array([[40.0, 20.0], [10.4, 5.6], [70.0, 60.0]])
    tracks, visible = PatchMatcher(size=9).track(clips, handles[None])
    assert visible.all() and tracks.shape == (1, 3, 3, 2)
    pixels = np.round(handles)   # a handle is read at its nearest pixel
    expected = pixels + [3, -17]
    inside = (expected[:, 0] >= 0) & (expected[:, 1] >= 0)
    np.testing.assert_array_equal(tracks[0, 1][inside], expected[inside])
    np.testing.assert_array_equal(tracks[0, 2], pixels)      # back in frame 0's place
    np.testing.assert_array_equal(tracks[0, 0], handles)     # frame 0: the queries themselves


def test_patch_matching_weighs_colour_and_breaks_ties_in_row_major_order():
    frame0 = np.zeros((32, 40, 3), np.uint8)
    frame0[10:20, 10:20] = (200, 40, 40)                        # a red square
    frame1 = np.zeros_like(frame0)
    frame1[2:12, 25:35] = (100, 20, 20)                         # the same square, darker
    frame1[18:28, 5:15] = (40, 40, 200)                         # a blue one: same shape
    clips = np.stack([frame0, frame1])[None]
    tracks, _ = PatchMatcher(size=5).track(clips, np.array([[[14.0, 14.0], [35.0, 28.0]]]))
    # colour decides, not shape: the darker red square's windows all tie (a flat patch), and
    # the first in row-major order wins: its top-left interior window's centre
    np.testing.assert_array_equal(tracks[0, 1, 0], [27, 4])
    # a black patch: every black window of frame 1 ties likewise
    np.testing.assert_array_equal(tracks[0, 1, 1], [0, 0])


@pytest.mark.parametrize("size", [1, 2, 14])
def test_patch_size_must_be_odd_and_at_least_3(size):
    with pytest.raises(ValueError, match=f"patch size must be odd and at least 3, got {size}"):
        PatchMatcher(size=size)
