"""Drag parsing, validation and point maps, with exact messages."""
from __future__ import annotations

import numpy as np
import pytest

from model.points import DragInputError, parse_drag, point_maps, validate_drag


def test_parse_drag_reads_pairs_in_order():
    h, t = parse_drag("10,20->30,40; 1.5, 2 -> 3,4e0;")
    assert h.tolist() == [[10, 20], [1.5, 2]]
    assert t.tolist() == [[30, 40], [3, 4]]


@pytest.mark.parametrize("text, message", [
    ("", "no drag given: expected 'x0,y0->x1,y1; ...'"),
    (" ; ", "no drag given: expected 'x0,y0->x1,y1; ...'"),
    ("10,20-30,40", "drag pair 0 '10,20-30,40' is not 'x0,y0->x1,y1'"),
    ("1,2->3,4; 1,2->3", "drag pair 1 '1,2->3' is not 'x0,y0->x1,y1'"),
    ("1..2,2->3,4", "drag pair 0 '1..2,2->3,4' has a malformed number"),
])
def test_parse_drag_errors(text, message):
    with pytest.raises(DragInputError) as e:
        parse_drag(text)
    assert str(e.value) == message


MASK = np.zeros((40, 50), bool)
MASK[5:35, 10:45] = True


@pytest.mark.parametrize("handles, targets, mask, message, points", [
    ([], [], MASK, "empty point list: 0 handles, 0 targets; a drag needs at least one "
                   "handle->target pair", "handles"),
    ([[20, 20]], [[30, 20], [31, 20]], MASK, "1 handles but 2 targets; every handle needs "
                                             "exactly one target", "targets"),
    ([[20, 20]], [[30, 20]], np.ones((50, 40), bool), "mask is 40x50 but the image is 50x40",
     None),
    ([[20, 20]], [[50, 20]], MASK, "target point 0 (x=50, y=20) outside the 50x40 image",
     "targets"),
    ([[20, 20], [12, 3]], [[30, 20], [30, 21]], MASK,
     "handle point 1 (12, 3) is outside the mask; handles and targets must lie in the "
     "editable region", "handles"),
])
def test_validate_drag_errors(handles, targets, mask, message, points):
    """The message, and the point list at fault (what the service names as the bad field)."""
    with pytest.raises(DragInputError) as e:
        validate_drag(handles, targets, (50, 40), mask)
    assert str(e.value) == message
    assert e.value.points == points


def test_validate_drag_accepts_points_on_the_mask_edge():
    h, t = validate_drag([[10, 5]], [[44.4, 34.4]], (50, 40), MASK)
    assert h.dtype == np.float64 and t.tolist() == [[44.4, 34.4]]


def test_point_maps_label_each_pair_at_its_nearest_pixel():
    handles, targets = point_maps([[10.4, 20.6], [0, 0]], [[30.5, 1.49], [49.4, 39.4]], (50, 40))
    assert handles.shape == targets.shape == (1, 1, 40, 50)
    hm, tm = handles[0, 0], targets[0, 0]
    assert hm[21, 10] == 1 and hm[0, 0] == 2 and int((hm > 0).sum()) == 2
    assert tm[1, 31] == 1 and tm[39, 49] == 2 and int((tm > 0).sum()) == 2
