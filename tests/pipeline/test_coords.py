"""Coordinate conversions against pixels moved by the same operations."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import coords


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

