"""The sample contract: round trips, every way a sample can break it, and samples of the
earlier schema version still read."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from schemas.manifest import META_FIELDS, PAIR_SCHEMA, SCHEMA_VERSION
from schemas.sample import DragSample, SampleError, decode_sample, encode_sample
from schemas.shard import read_shard
from schemas.validate import main as validate_main, validate_shard


def make_sample(n=2, size=32) -> DragSample:
    rng = np.random.default_rng(0)
    key = "0123456789abcdef-0001"
    meta = {f.name: 0 for f in PAIR_SCHEMA}
    meta.update(schema_version=SCHEMA_VERSION, key=key, width=size, height=size, num_points=n,
                video_id=key[:16], source_uri="/v.mp4", tracker="t", tracker_version="1",
                target_transform=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    mask = np.zeros((size, size), np.uint8)
    mask[4:20, 4:28] = 255
    return DragSample(key=key, source=rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
                      target=rng.integers(0, 255, (size, size, 3), dtype=np.uint8), mask=mask,
                      handle=np.array([[5.25, 6.0], [10.0, 12.5]][:n]),
                      target_points=np.array([[20.0, 8.75], [26.0, 18.0]][:n]), meta=meta)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_round_trip(fmt):
    s = make_sample()
    members = encode_sample(s, fmt)
    assert sorted(members) == sorted(["__key__", f"source.{fmt}", f"target.{fmt}", "mask.png",
                                      "drag.json", "meta.json"])
    back = decode_sample(members)
    assert back.key == s.key and back.meta == s.meta
    np.testing.assert_array_equal(back.handle, s.handle)
    np.testing.assert_array_equal(back.target_points, s.target_points)
    np.testing.assert_array_equal(back.mask, s.mask)
    if fmt == "png":
        np.testing.assert_array_equal(back.source, s.source)
    assert json.loads(members["drag.json"]) == {"handle": [[5.25, 6.0], [10.0, 12.5]],
                                                "target": [[20.0, 8.75], [26.0, 18.0]]}


def broken(**change):
    s = make_sample()
    for k, v in change.items():
        setattr(s, k, v)
    return s


@pytest.mark.parametrize("sample, message", [
    (broken(key="video-1"), "key must be"),
    (broken(source=np.zeros((32, 32), np.uint8)), "source must be HxWx3 uint8"),
    (broken(target=np.zeros((16, 32, 3), np.uint8)), "target shape"),
    (broken(mask=np.zeros((32, 32), np.float32)), "mask must be 32x32 uint8"),
    (broken(mask=np.full((32, 32), 1, np.uint8)), "mask values must be 0 or 255"),
    (broken(handle=np.zeros((0, 2)), target_points=np.zeros((0, 2))), "need 1..64"),
    (broken(target_points=np.array([[20.0, 8.0]])), "need 1..64"),
    (broken(handle=np.array([[5.0, np.nan], [10.0, 12.0]])), "handle points must be finite"),
    (broken(handle=np.array([[32.0, 6.0], [10.0, 12.0]])), "handle point outside the 32x32"),
    (broken(target_points=np.array([[20.0, 30.0], [26.0, 18.0]])),
     "mask does not cover every target point"),
])
def test_bad_samples_are_rejected(sample, message):
    with pytest.raises(SampleError, match=message):
        encode_sample(sample)


def test_meta_must_be_complete_and_consistent():
    s = make_sample()
    del s.meta["fps"]
    with pytest.raises(SampleError, match=r"meta.json lacks \['fps'\]"):
        encode_sample(s)
    s = make_sample()
    s.meta["num_points"] = 5
    with pytest.raises(SampleError, match="key/num_points disagree"):
        encode_sample(s)
    s = make_sample()
    s.meta["schema_version"] = 3
    with pytest.raises(SampleError, match=r"schema_version 3 is not one of \[1, 2\] \(this "
                                          r"reader's newest: 2\)"):
        encode_sample(s)
    for bad in ([1.0, 0.0, 0.0, 0.0, 1.0], [1.0, 0.0, float("nan"), 0.0, 1.0, 0.0], "eye", None):
        s = make_sample()
        s.meta["target_transform"] = bad
        with pytest.raises(SampleError, match="target_transform must be 6 finite numbers"):
            encode_sample(s)
    assert set(META_FIELDS) == {f.name for f in PAIR_SCHEMA}


def test_a_version_1_sample_is_read_without_the_fields_version_2_added():
    s = make_sample()
    del s.meta["target_transform"]
    with pytest.raises(SampleError, match=r"meta.json lacks \['target_transform'\]"):
        encode_sample(s)
    s.meta["schema_version"] = 1
    back = decode_sample(encode_sample(s, "png"))
    assert back.meta == s.meta and SCHEMA_VERSION == 2


def write_tar(path, members_list):
    with tarfile.open(path, "w") as tar:
        for members in members_list:
            for name, data in members.items():
                if name == "__key__":
                    continue
                info = tarfile.TarInfo(f"{members['__key__']}.{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_shard_validation(tmp_path, capsys):
    good = tmp_path / "good.tar"
    write_tar(good, [encode_sample(make_sample(), "png")])
    assert validate_shard(str(good)) == 1
    assert [s.key for s in read_shard(str(good))] == ["0123456789abcdef-0001"]

    members = encode_sample(make_sample(), "png")
    del members["mask.png"]
    bad = tmp_path / "bad.tar"
    write_tar(bad, [members])
    with pytest.raises(SampleError, match="missing member mask.png"):
        validate_shard(str(bad))
    assert validate_main([str(tmp_path)]) == 1
    assert "2 shards, 1 samples valid, 1 shards invalid" in capsys.readouterr().out


def test_shard_rejects_path_members(tmp_path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("../../etc/x.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(SampleError, match="not a flat sample member"):
        read_shard(str(path))
