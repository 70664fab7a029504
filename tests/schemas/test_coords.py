"""Coordinate conversions against pixels moved by the same operations."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from schemas import coords


def dot_image(w, h, x, y):
    img = np.zeros((h, w, 3), np.uint8)
    img[y, x] = 255
    return img


def brightest(img):
    y, x = np.unravel_index(np.argmax(img.sum(axis=-1)), img.shape[:2])
    return np.array([x, y], float)


@pytest.mark.parametrize("rotation, expected", [(0, (5, 1)), (90, (3, 5)), (180, (1, 3)),
                                                (270, (1, 1))])
def test_rotate_frame_moves_a_pixel_where_a_player_shows_it(rotation, expected):
    w, h = 7, 5
    upright = coords.rotate_frame(dot_image(w, h, 5, 1), rotation)
    assert upright.shape[1::-1] == coords.upright_size(w, h, rotation)
    np.testing.assert_array_equal(brightest(upright), expected)


def test_rotation_is_clockwise():
    # A player turns a frame with rotation=90 clockwise: the top-left corner goes top-right.
    frame = dot_image(4, 3, 0, 0)
    np.testing.assert_array_equal(brightest(coords.rotate_frame(frame, 90)), [2, 0])


def test_crop_resize_moves_a_blob_where_the_points_say():
    src = np.zeros((120, 160, 3), np.uint8)
    src[60:70, 90:100] = 255          # blob centre at x=94.5, y=64.5
    box, out = (40, 20, 100, 100), (50, 50)
    stored = coords.crop_resize(src, box, out)
    ys, xs = np.nonzero(stored[..., 0] > 127)
    expected = coords.upright_to_stored(np.array([94.5, 64.5]), box, out)
    np.testing.assert_allclose([xs.mean(), ys.mean()], expected, atol=0.1)
    np.testing.assert_allclose(expected, [27.0, 22.0])


def test_an_aligned_crop_of_a_moved_frame_is_the_reference_crop():
    """A frame whose view moved by (7, -4) px and turned 2 degrees about (80, 60): cropped
    with the transform taking its pixels to the reference's, it shows the reference's box."""
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.uniform(0, 255, (120, 160, 3)).astype(np.float32), (0, 0), 3)
    reference = np.clip(128 + 8 * (scene - scene.mean()), 0, 255).astype(np.uint8)
    turn = cv2.getRotationMatrix2D((80.0, 60.0), 2.0, 1.0)
    to_reference = coords.compose_affines(turn, [[1, 0, 7], [0, 1, -4]])  # moved -> reference
    moved = cv2.warpAffine(reference, to_reference, (160, 120),
                           flags=cv2.WARP_INVERSE_MAP | cv2.INTER_CUBIC)
    box, out = (40, 30, 64, 64), (64, 64)
    aligned = coords.crop_resize(moved, box, out, transform=to_reference)
    expected = coords.crop_resize(reference, box, out)
    assert np.abs(aligned.astype(int) - expected).mean() < 3
    assert np.abs(coords.crop_resize(moved, box, out).astype(int) - expected).mean() > 30
    # identity: the plain crop, exactly
    np.testing.assert_array_equal(coords.crop_resize(moved, box, out, coords.IDENTITY),
                                  coords.crop_resize(moved, box, out))
    with pytest.raises(ValueError, match=r"crop box \(2, 30, 64, 64\) aligned to this frame "
                                         r"leaves the 160x120 frame"):
        coords.crop_resize(moved, (2, 30, 64, 64), out, transform=to_reference)


def test_affines_compose_invert_and_rescale():
    a = np.array([[0.9, -0.2, 5.0], [0.2, 0.9, -3.0]])
    pts = np.random.default_rng(1).uniform(0, 100, (10, 2))
    np.testing.assert_allclose(coords.apply_affine(coords.apply_affine(pts, a),
                                                   coords.invert_affine(a)), pts, atol=1e-9)
    b = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    np.testing.assert_allclose(coords.apply_affine(pts, coords.compose_affines(b, a)),
                               coords.apply_affine(coords.apply_affine(pts, a), b), atol=1e-9)
    # the same motion on images twice the size: points scaled with the half-pixel rule
    big = coords.rescale_affine(a, (100, 80), (200, 160))
    np.testing.assert_allclose(
        coords.apply_affine(coords.scale_points(pts, (100, 80), (200, 160)), big),
        coords.scale_points(coords.apply_affine(pts, a), (100, 80), (200, 160)), atol=1e-9)


def test_stored_upright_round_trip():
    pts = np.random.default_rng(0).uniform(0, 300, (20, 2))
    box, out = (13, 7, 301, 301), (256, 256)
    back = coords.stored_to_upright(coords.upright_to_stored(pts, box, out), box, out)
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_scale_points_half_pixel_rule():
    # Pixel centres: the centre of a 2x upscale's first pixel pair maps onto pixel 0.
    np.testing.assert_allclose(coords.scale_points(np.array([[0.0, 0.0]]), (10, 10), (20, 20)),
                               [[0.5, 0.5]])


def test_crop_outside_frame_is_an_error():
    with pytest.raises(ValueError, match="outside frame"):
        coords.crop_resize(np.zeros((10, 10, 3), np.uint8), (5, 5, 10, 10), (4, 4))



@pytest.mark.parametrize("x, expected", [(0.0, 0), (0.49, 0), (0.5, 1), (-0.5, 0),
                                         (-0.49, 0), (1.5, 2), (2.49, 2), (9.49, 9)])
def test_round_to_pixel_nearest_centre(x, expected):
    # A 10x4 image: x and y are rounded alike; y stays on row 3 (the last row).
    out = coords.round_to_pixel(np.array([[x, 3.0]]), (10, 4))
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[expected, 3]])
    np.testing.assert_array_equal(coords.round_to_pixel([3.0, x], (4, 10)), [3, expected])


def test_round_to_pixel_indexes_the_pixel_the_point_lies_in():
    img = np.zeros((4, 10), np.uint8)
    img[2, 7] = 1                                  # row 2, column 7
    x, y = coords.round_to_pixel([7.3, 1.6], (10, 4))
    assert img[y, x] == 1


@pytest.mark.parametrize("pts, message", [
    ([[1, 1], [9.5, 1]], r"point 1 \(x=9.5, y=1\) outside the 10x4 image"),   # x = w - 0.5
    ([[1, 3.5]], r"point 0 \(x=1, y=3.5\) outside the 10x4 image"),           # y = h - 0.5
    ([[-0.51, 0]], r"point 0 \(x=-0.51, y=0\) outside the 10x4 image"),
    ([[0, -1], [-1, 0]], r"point 0 \(x=0, y=-1\) outside"),                    # the first one
    ([[np.nan, 0]], r"point 0 \(x=nan, y=0\) outside"),
])
def test_round_to_pixel_outside_is_an_error(pts, message):
    with pytest.raises(ValueError, match=message):
        coords.round_to_pixel(np.array(pts, float), (10, 4))
