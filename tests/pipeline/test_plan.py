"""Planning: input listing, stable ids, persisted units, resume and incremental plans."""
from __future__ import annotations

import os

from pipeline import plan


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
    return str(path)


def test_resolve_inputs(tmp_path):
    a = touch(tmp_path / "v" / "a.mp4")
    b = touch(tmp_path / "v" / "sub" / "b.MOV")
    touch(tmp_path / "v" / "notes.txt")
    t = touch(tmp_path / "shards" / "s-0.tar")
    odd = touch(tmp_path / "x.bin")
    got = plan.resolve_inputs([str(tmp_path / "v"), str(tmp_path / "shards" / "*.tar"), odd,
                               str(tmp_path / "missing.mp4"), a])
    assert got == sorted([a, b, t, odd, str(tmp_path / "missing.mp4")])
    assert plan.resolve_inputs([f"file://{a}"]) == [a]


def test_video_id_is_stable_and_position_free():
    assert plan.video_id("/data/a.mp4") == plan.video_id("/data/a.mp4")
    assert plan.video_id("/data/a.mp4") != plan.video_id("/data/b.mp4")
    assert len(plan.video_id("x")) == 16 and int(plan.video_id("x"), 16) >= 0


def test_plan_is_persisted_and_incremental(tmp_path):
    out = str(tmp_path / "out")
    first = [f"/v/{c}.mp4" for c in "abcde"] + ["/s/x.tar"]
    units = plan.update_plan(out, first, videos_per_unit=2)
    assert [(u.name, u.kind, u.inputs) for u in units] == [
        ("pairs-000000", "tar", ("/s/x.tar",)),
        ("pairs-000001", "files", ("/v/a.mp4", "/v/b.mp4")),
        ("pairs-000002", "files", ("/v/c.mp4", "/v/d.mp4")),
        ("pairs-000003", "files", ("/v/e.mp4",)),
    ]
    # Same inputs again: same plan, nothing added.
    assert plan.update_plan(out, first, 2) == units
    # New inputs (one sorting before the old ones) go to new units only.
    more = plan.update_plan(out, ["/v/0.mp4", "/v/f.mp4"] + first, 2)
    assert more[:4] == units
    assert [(u.name, u.inputs) for u in more[4:]] == [("pairs-000004", ("/v/0.mp4", "/v/f.mp4"))]
    assert plan.read_plan(out) == more
