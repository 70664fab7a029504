"""trainer.augment: pixels and points move together, with known answers."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from schemas import coords
from trainer.augment import MAX_CROP_TRIES, augment_pair, resize_pair


class ScriptedRng:
    """Stands in for np.random.Generator with scripted draws, so a test knows the crop box:
    `uniform` returns the crop fractions, `integers` the offsets (x0, y0, x0, y0, ...),
    `random` the flip draws."""

    def __init__(self, fractions=(), offsets=(), flips=()):
        self.fractions, self.offsets, self.flips = list(fractions), list(offsets), list(flips)

    def uniform(self, lo, hi):
        value = self.fractions.pop(0)
        assert lo <= value <= hi
        return value

    def integers(self, lo, hi):
        value = self.offsets.pop(0)
        assert lo <= value < hi
        return value

    def random(self):
        return self.flips.pop(0)


def bright_pair(w, h, handle, target):
    """Black frames with one white pixel at the handle (source) and the target (target), and a
    mask covering a box around both."""
    source = np.zeros((h, w, 3), np.uint8)
    target_img = np.zeros((h, w, 3), np.uint8)
    source[handle[1], handle[0]] = 255
    target_img[target[1], target[0]] = 255
    mask = np.zeros((h, w), np.uint8)
    x0, x1 = sorted((handle[0], target[0]))
    y0, y1 = sorted((handle[1], target[1]))
    mask[max(y0 - 4, 0):y1 + 5, max(x0 - 4, 0):x1 + 5] = 255
    return source, target_img, mask


def brightest_at(image, point):
    """The pixel under `point` is (one of) the brightest: ties happen only when the point sits
    exactly between two pixels, where both are equally bright."""
    lum = image.astype(np.int64).sum(axis=2)
    x, y = coords.round_to_pixel(point, (image.shape[1], image.shape[0]))
    return lum.max() > 0 and lum[y, x] == lum.max()


@pytest.mark.parametrize("out_size", [40, 64, 150])
@pytest.mark.parametrize("flip_p", [0.0, 1.0, 0.5])
def test_bright_pixel_lands_on_the_transformed_point(out_size, flip_p):
    w, h = 97, 83
    handle, target = (30, 50), (41, 44)
    source, target_img, mask = bright_pair(w, h, handle, target)
    kept = dropped = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        s, t, m, hs, ts = augment_pair(source, target_img, mask, [handle], [target], rng,
                                       out_size, scale=(0.5, 1.0), flip_p=flip_p)
        assert s.shape == t.shape == (out_size, out_size, 3) and m.shape == (out_size,) * 2
        assert hs.dtype == ts.dtype == np.float64
        if len(hs) == 0:  # impossible here: the only pair is kept or the crop is redrawn
            dropped += 1
            continue
        kept += 1
        assert brightest_at(s, hs[0]), (seed, hs[0])
        assert brightest_at(t, ts[0]), (seed, ts[0])
        assert set(np.unique(m)) <= {0, 255}
        for p in (hs[0], ts[0]):
            x, y = coords.round_to_pixel(p, (out_size, out_size))
            assert m[y, x] == 255
            assert 0 <= p[0] <= out_size - 1 and 0 <= p[1] <= out_size - 1
    assert (kept, dropped) == (60, 0)


def test_ramp_image_holds_the_original_coordinates_at_the_transformed_points():
    """A source whose red channel is x and green is y: after any crop/resize/flip, the pixel
    under a transformed point still reads (about) the point's original coordinates."""
    w, h = 200, 160
    yy, xx = np.mgrid[0:h, 0:w]
    source = np.stack([xx, yy, np.zeros_like(xx)], axis=2).astype(np.uint8)
    rng0 = np.random.default_rng(7)
    handles = np.column_stack([rng0.integers(5, w - 5, 30), rng0.integers(5, h - 5, 30)])
    targets = np.clip(handles + rng0.integers(-6, 7, (30, 2)), 0, [w - 1, h - 1])
    mask = np.full((h, w), 255, np.uint8)
    tol = 0.5 * 160 / 96 + 1.0   # half an output pixel in source pixels, plus uint8 rounding
    for seed in range(40):
        rng = np.random.default_rng(seed)
        s, t, _, hs, ts = augment_pair(source, source, mask, handles, targets, rng, 96,
                                       scale=(0.6, 1.0), flip_p=0.5)
        assert 1 <= len(hs) == len(ts) <= 30
        for image, got, originals in ((s, hs, handles), (t, ts, targets)):
            cols, rows = coords.round_to_pixel(got, (96, 96)).T
            reads = image[rows, cols, :2].astype(float)
            # the kept points are the originals in order, minus the dropped ones
            i = 0
            for read in reads:
                while i < len(originals) and np.abs(originals[i] - read).max() > tol:
                    i += 1
                assert i < len(originals), (seed, read)
                i += 1


def test_known_crop_keeps_exactly_the_pairs_inside_it():
    w, h = 40, 30
    yy, xx = np.mgrid[0:h, 0:w]
    handles = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
    targets = handles + (2.0, -1.0)             # a pair lives iff both ends are in the crop
    source = np.zeros((h, w, 3), np.uint8)
    mask = np.full((h, w), 255, np.uint8)
    side, x0, y0 = 20, 7, 5                       # fraction 20/30 of the short side
    rng = ScriptedRng(fractions=[side / h], offsets=[x0, y0], flips=[0.9])
    _, _, _, hs, ts = augment_pair(source, source, mask, handles, targets, rng, 20,
                                   scale=(0.5, 1.0), flip_p=0.5)
    inside = ((handles[:, 0] >= x0) & (handles[:, 0] < x0 + side)
              & (handles[:, 1] >= y0) & (handles[:, 1] < y0 + side)
              & (targets[:, 0] >= x0) & (targets[:, 0] < x0 + side)
              & (targets[:, 1] >= y0) & (targets[:, 1] < y0 + side))
    np.testing.assert_array_equal(hs, handles[inside] - (x0, y0))   # same size: shift only
    np.testing.assert_array_equal(ts, targets[inside] - (x0, y0))

    # the same crop resized and flipped: scale_points then x -> (out - 1) - x
    out = 50
    rng = ScriptedRng(fractions=[side / h], offsets=[x0, y0], flips=[0.1])
    _, _, _, hs, ts = augment_pair(source, source, mask, handles, targets, rng, out,
                                   scale=(0.5, 1.0), flip_p=0.5)
    expected = coords.scale_points(handles[inside] - (x0, y0), (side, side), (out, out))
    expected[:, 0] = (out - 1) - expected[:, 0]
    np.testing.assert_allclose(hs, expected, atol=1e-12)


def test_half_pixel_edges_of_the_crop():
    """A point on the left half-pixel edge of the crop is on its first pixel (kept); one just
    left of it is not (dropped)."""
    w = h = 30
    source = np.zeros((h, w, 3), np.uint8)
    mask = np.full((h, w), 255, np.uint8)
    handles = np.array([[9.5, 12.0], [9.49, 12.0], [28.49, 12.0], [28.5, 12.0]])
    rng = ScriptedRng(fractions=[19 / 30], offsets=[10, 3], flips=[0.9])  # x in [10, 28]
    _, _, _, hs, _ = augment_pair(source, source, mask, handles, handles, rng, 19,
                                  scale=(0.5, 1.0), flip_p=0.5)
    # kept: 9.5 (pixel 10) and 28.49 (pixel 28); clipped into [0, 18] without changing pixel
    np.testing.assert_allclose(hs, [[0.0, 9.0], [18.0, 9.0]])


def test_empty_crops_are_redrawn_then_the_whole_image_is_used():
    w = h = 32
    source = np.zeros((h, w, 3), np.uint8)
    mask = np.full((h, w), 255, np.uint8)
    handle, target = [[2.0, 2.0]], [[3.0, 2.0]]
    # first crop misses the pair, the second contains it
    rng = ScriptedRng(fractions=[0.5, 0.5], offsets=[16, 16, 0, 0], flips=[0.9])
    _, _, _, hs, ts = augment_pair(source, source, mask, handle, target, rng, 16,
                                   scale=(0.5, 1.0), flip_p=0.5)
    np.testing.assert_allclose(hs, [[2.0, 2.0]])
    np.testing.assert_allclose(ts, [[3.0, 2.0]])
    # every crop misses: fall back to the full image (32 -> 16: halves, half-pixel rule)
    rng = ScriptedRng(fractions=[0.5] * MAX_CROP_TRIES, offsets=[16, 16] * MAX_CROP_TRIES,
                      flips=[0.9])
    _, _, _, hs, ts = augment_pair(source, source, mask, handle, target, rng, 16,
                                   scale=(0.5, 1.0), flip_p=0.5)
    np.testing.assert_allclose(hs, coords.scale_points(handle, (32, 32), (16, 16)).clip(0, 15))
    np.testing.assert_allclose(ts, coords.scale_points(target, (32, 32), (16, 16)))
    assert rng.fractions == [] and rng.offsets == []   # all MAX_CROP_TRIES draws were used


def test_identity_and_pure_flip():
    rng0 = np.random.default_rng(0)
    source = rng0.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    target = rng0.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    mask = np.where(rng0.random((48, 48)) < 0.5, 255, 0).astype(np.uint8)
    handles = np.array([[3.25, 7.5], [40.0, 47.0]])
    targets = np.array([[0.0, 0.0], [47.0, 12.75]])
    mask[[7, 8, 47, 0, 13], [3, 3, 40, 0, 47]] = 255   # covers every point, as stored samples do
    s, t, m, hs, ts = augment_pair(source, target, mask, handles, targets,
                                   np.random.default_rng(1), 48, scale=(1, 1), flip_p=0)
    np.testing.assert_array_equal(s, source)
    np.testing.assert_array_equal(t, target)
    np.testing.assert_array_equal(m, mask)
    np.testing.assert_array_equal(hs, handles)
    np.testing.assert_array_equal(ts, targets)

    s, t, m, hs, ts = augment_pair(source, target, mask, handles, targets,
                                   np.random.default_rng(1), 48, scale=(1, 1), flip_p=1)
    np.testing.assert_array_equal(s, source[:, ::-1])
    np.testing.assert_array_equal(t, target[:, ::-1])
    np.testing.assert_array_equal(m, mask[:, ::-1])
    np.testing.assert_array_equal(hs, np.column_stack([47 - handles[:, 0], handles[:, 1]]))
    np.testing.assert_array_equal(ts, np.column_stack([47 - targets[:, 0], targets[:, 1]]))


def test_mask_is_nearest_neighbour_with_the_half_pixel_rule():
    mask = np.zeros((32, 32), np.uint8)
    mask[5:20, 9:14] = 255
    mask[25, 3] = 255
    pts = [[10.0, 6.0]]
    source = np.zeros((32, 32, 3), np.uint8)
    # 2x up: every pixel becomes a 2x2 block; with the flip, mirrored
    _, _, m, _, _ = augment_pair(source, source, mask, pts, pts, np.random.default_rng(0), 64,
                                 scale=(1, 1), flip_p=1)
    np.testing.assert_array_equal(m, np.repeat(np.repeat(mask, 2, 0), 2, 1)[:, ::-1])
    # 2x down: output pixel j samples input pixel 2j + 1 (its centre's nearest pixel)
    _, _, m, _, _ = resize_pair(source, source, mask, pts, pts, 16)
    expected = mask[1::2, 1::2].copy()
    np.testing.assert_array_equal(m, expected)
    assert set(np.unique(m)) == {0, 255}


def test_resize_pair_is_deterministic_full_image_resize():
    rng0 = np.random.default_rng(3)
    source = rng0.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    mask = np.full((40, 60), 255, np.uint8)
    handles = np.array([[0.0, 0.0], [59.0, 39.0], [12.3, 20.7]])
    s, t, m, hs, ts = resize_pair(source, source, mask, handles, handles[::-1], 80)
    np.testing.assert_array_equal(s, cv2.resize(source, (80, 80), interpolation=cv2.INTER_LINEAR))
    expected = coords.scale_points(handles, (60, 40), (80, 80)).clip(0, 79)
    np.testing.assert_allclose(hs, expected)
    np.testing.assert_allclose(ts, expected[::-1])
    again = resize_pair(source, source, mask, handles, handles[::-1], 80)
    for a, b in zip((s, t, m, hs, ts), again):
        np.testing.assert_array_equal(a, b)


def test_same_generator_state_same_result_and_inputs_untouched():
    rng0 = np.random.default_rng(5)
    source = rng0.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:50, 10:50] = 255
    handles, targets = np.array([[20.0, 20.0], [30.0, 40.0]]), np.array([[25.0, 22.0], [31, 45]])
    copies = [a.copy() for a in (source, mask, handles, targets)]
    a = augment_pair(source, source, mask, handles, targets, np.random.default_rng(9), 32)
    b = augment_pair(source, source, mask, handles, targets, np.random.default_rng(9), 32)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(copies, (source, mask, handles, targets)):
        np.testing.assert_array_equal(x, y)


def test_bad_arguments():
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="same height and width"):
        augment_pair(img, img[:4], np.zeros((8, 8), np.uint8), [[1, 1]], [[1, 1]],
                     np.random.default_rng(0), 8)
    with pytest.raises(ValueError, match="scale"):
        augment_pair(img, img, np.zeros((8, 8), np.uint8), [[1, 1]], [[1, 1]],
                     np.random.default_rng(0), 8, scale=(0.0, 1.0))
