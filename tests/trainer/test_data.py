"""trainer.data on real shards written by the project's own pipeline from synthetic clips:
batch layout, points at the right pixels, determinism, exact resume (in-process and with
DataLoader workers), rank independence, and bad shards with their exact outcome."""
from __future__ import annotations

import io
import itertools
import json
import os
import tarfile
from types import SimpleNamespace

import fsspec
import pytest
import torch

from model.points import point_maps
from schemas import coords
from schemas.shard import list_shards, raw_samples, read_shard
from trainer import data as data_mod
from trainer.data import NoUsableData, PairLoader, PairStream, make_loader

STORED = 64        # the shards' stored resolution
R = 48             # the training resolution in these tests (resizing is exercised)


@pytest.fixture(scope="module")
def shards(pair_shards):
    """Three shards of uneven size (about 6, 6 and 3 pairs), 64x64, from five translating clips
    (the motion kind the builtin tracker always finds at this small size)."""
    found = list_shards(pair_shards)
    assert len(found) == 3
    sizes = [len(read_shard(s)) for s in found]
    # uneven, as real shards are (the pair count per clip depends on its URI's hash)
    assert sizes[2] < min(sizes[:2]) and sizes[1] >= 4, sizes
    return found


@pytest.fixture(scope="module")
def stored(shards):
    return {s.key: s for shard in shards for s in read_shard(shard)}


@pytest.fixture(scope="module")
def bad(shards, tmp_path_factory):
    """Damaged copies: `corrupt` (shard 1 with three bad samples: garbage image bytes, bad
    JSON, a drag point outside the image), `truncated` (shard 0 cut in half), `missing`."""
    d = tmp_path_factory.mktemp("bad")
    with tarfile.open(shards[1]) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    keys = sorted({m.name.split(".")[0] for m, _ in members})
    damage = {f"{keys[0]}.source.jpg": b"\xff\xd8 definitely not a jpeg",
              f"{keys[1]}.drag.json": b"{not json",
              f"{keys[2]}.drag.json": json.dumps({"handle": [[5000.0, 1.0]],
                                                  "target": [[1.0, 1.0]]}).encode()}
    corrupt = str(d / "corrupt.tar")
    with tarfile.open(corrupt, "w") as out:
        for m, payload in members:
            payload = damage.get(m.name, payload)
            info = tarfile.TarInfo(m.name)
            info.size = len(payload)
            out.addfile(info, io.BytesIO(payload))
    truncated = str(d / "truncated.tar")
    with open(shards[0], "rb") as f:
        raw = f.read()
    with open(truncated, "wb") as f:
        f.write(raw[:len(raw) // 2])
    return {"corrupt": corrupt, "truncated": truncated, "missing": str(d / "missing.tar"),
            "corrupt_keys": keys[:3], "good_corrupt_keys": keys[3:]}


def take(iterable, n):
    return list(itertools.islice(iterable, n))


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["keys"] == y["keys"]
        for name in ("source", "target", "mask", "handle_map", "target_map", "num_points"):
            assert torch.equal(x[name], y[name]), name


# --- listing ------------------------------------------------------------------------------


def test_list_shards(shards, tmp_path):
    d = os.path.dirname(shards[0])
    assert list_shards(d) == shards
    assert list_shards(os.path.join(d, "pairs-00000[02].tar")) == [shards[0], shards[2]]
    assert list_shards(shards[1]) == [shards[1]]
    assert list_shards([shards[2], "x/missing.tar"]) == [shards[2], "x/missing.tar"]
    fs = fsspec.filesystem("memory")
    for s in shards:
        fs.pipe(f"/trainer-test/{os.path.basename(s)}", open(s, "rb").read())
    fs.pipe("/trainer-test/.hidden.tar", b"")
    urls = list_shards("memory://trainer-test")
    assert urls == [f"memory:///trainer-test/{os.path.basename(s)}" for s in shards]
    stream = PairStream(urls, batch_size=2, resolution=R, seed=0)   # fsspec URLs stream too
    assert len(take(stream, 2)[1]["keys"]) == 2
    for empty in (str(tmp_path), str(tmp_path / "*.tar"), str(tmp_path / "nope"), []):
        with pytest.raises(ValueError, match="no shards found"):
            list_shards(empty)


# --- batches -------------------------------------------------------------------------------


def test_batch_layout(shards):
    batches = take(PairStream(shards, batch_size=4, resolution=R, seed=1), 3)
    for b in batches:
        assert b["source"].shape == b["target"].shape == (4, 3, R, R)
        for name in ("mask", "handle_map", "target_map"):
            assert b[name].shape == (4, 1, R, R), name
        for name in ("source", "target", "mask", "handle_map", "target_map"):
            assert b[name].dtype == torch.float32
        assert b["source"].min() >= -1 and b["source"].max() <= 1
        assert b["source"].min() < -0.5 and b["source"].max() > 0.5   # real images, not blank
        assert set(b["mask"].unique().tolist()) <= {0.0, 1.0}
        assert len(b["keys"]) == 4 and all(isinstance(k, str) for k in b["keys"])
        for i in range(4):
            n = int(b["num_points"][i])
            for name in ("handle_map", "target_map"):
                labels = set(b[name][i].unique().tolist()) - {0.0}
                # a later pair may overwrite an earlier one on the same pixel
                assert labels <= set(range(1, n + 1)) and max(labels) == n
                assert (b["mask"][i][b[name][i] > 0] == 1).all()   # mask covers the points


def test_points_at_the_stored_points_scaled_to_the_resolution(shards, stored):
    """augment=False: maps == point_maps of drag.json scaled by the half-pixel rule, and the
    images are the stored ones resized."""
    seen = set()
    for b in take(PairStream(shards, batch_size=4, resolution=R, seed=2, augment=False), 6):
        for i, key in enumerate(b["keys"]):
            s = stored[key]
            seen.add(key)
            h = coords.scale_points(s.handle, (STORED, STORED), (R, R))
            t = coords.scale_points(s.target_points, (STORED, STORED), (R, R))
            hm, tm = point_maps(h, t, (R, R))
            assert torch.equal(b["handle_map"][i], hm[0])
            assert torch.equal(b["target_map"][i], tm[0])
            src = coords.crop_resize(s.source, (0, 0, STORED, STORED), (R, R))
            expected = torch.from_numpy(src).permute(2, 0, 1).float() / 127.5 - 1
            assert torch.allclose(b["source"][i], expected)
    assert len(seen) >= 8


def test_deterministic_and_seeded(shards):
    a = take(PairStream(shards, batch_size=3, resolution=R, seed=5), 4)
    b = take(PairStream(shards, batch_size=3, resolution=R, seed=5), 4)
    assert_same_batches(a, b)
    c = take(PairStream(shards, batch_size=3, resolution=R, seed=6), 4)
    assert [x["keys"] for x in a] != [x["keys"] for x in c]


def test_ranks_get_full_batches_and_different_samples(shards):
    """Uneven shards, more ranks than shards: every rank yields full batches forever."""
    keys = []
    for rank in range(5):
        batches = take(PairStream(shards, batch_size=4, resolution=R, seed=0, rank=rank,
                                  world_size=5), 6)
        assert len(batches) == 6 and all(len(b["keys"]) == 4 for b in batches)
        keys.append([k for b in batches for k in b["keys"]])
    assert keys[0] != keys[1]
    assert len({tuple(k) for k in keys}) == 5
    with pytest.raises(ValueError, match="rank"):
        PairStream(shards, batch_size=4, resolution=R, rank=2, world_size=2)


# --- resume --------------------------------------------------------------------------------


def mixed(shards, bad):
    return [shards[0], bad["corrupt"], shards[2], bad["truncated"], bad["missing"]]


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("which", ["good", "mixed"])
def test_resume_is_exact(shards, bad, num_workers, which):
    files = shards if which == "good" else mixed(shards, bad)

    def loader():
        return PairLoader(PairStream(files, batch_size=3, resolution=R, seed=3),
                          num_workers=num_workers)

    fresh, states = [], {}
    first = loader()
    for batch in first:
        fresh.append(batch)
        states[len(fresh)] = first.state_dict()
        if len(fresh) == 6:
            break
    assert states[6]["batches"] == 6
    for j in ((1, 3) if num_workers else (3,)):   # odd j: workers start rotated
        resumed = loader()
        resumed.load_state_dict(json.loads(json.dumps(states[j])))   # JSON round trip
        assert_same_batches(take(resumed, 6 - j), fresh[j:])


def test_resume_skips_without_decoding(shards, bad, monkeypatch):
    calls = []
    real = data_mod.decode_sample
    monkeypatch.setattr(data_mod, "decode_sample", lambda m: calls.append(1) or real(m))
    files = mixed(shards, bad)
    stream = PairStream(files, batch_size=3, resolution=R, seed=4)
    fresh = take(stream, 3)
    state = stream.state_dict()
    before = len(calls)
    rest = take(stream, 3)                 # iterating again continues where it stopped
    decoded_rest = len(calls) - before
    resumed = PairStream(files, batch_size=3, resolution=R, seed=4)
    resumed.load_state_dict(state)
    before = len(calls)
    assert_same_batches(take(resumed, 3), rest)
    assert len(calls) - before == decoded_rest      # nothing before the resume point decoded
    assert fresh[0]["position"]["batch"] == 0 and rest[0]["position"]["batch"] == 3


def test_resume_refuses_a_different_stream(shards):
    stream = PairStream(shards, batch_size=3, resolution=R, seed=3)
    take(stream, 2)
    state = stream.state_dict()
    with pytest.raises(ValueError, match="seed"):
        PairStream(shards, batch_size=3, resolution=R, seed=4).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size"):
        PairStream(shards, batch_size=2, resolution=R, seed=3).load_state_dict(state)
    other = PairLoader(PairStream(shards, batch_size=3, resolution=R, seed=3), num_workers=2)
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="workers"):
        next(iter(other))


def test_make_loader_from_config(shards):
    cfg = SimpleNamespace(shards=os.path.dirname(shards[0]), batch_size=2, resolution=R,
                          num_workers=0, augment=True, crop_scale=(0.8, 1.0), flip_p=0.5)
    loader = make_loader(cfg, seed=0, rank=0, world_size=1)
    take(loader, 2)
    again = make_loader(cfg, seed=0, rank=0, world_size=1, state=loader.state_dict())
    assert_same_batches(take(again, 1), take(loader, 1))


# --- bad data ------------------------------------------------------------------------------


def test_raw_reader_reports_damage(shards, bad):
    problems = []
    assert len(list(raw_samples(shards[0], problems))) == len(read_shard(shards[0]))
    assert problems == []
    for name, reason in (("truncated", "shard_truncated"), ("missing", "shard_missing")):
        problems = []
        got = list(raw_samples(bad[name], problems))
        assert [p[0] for p in problems] == [reason]
        assert len(got) < len(read_shard(shards[0]))
    problems = []
    assert len(list(raw_samples(bad["corrupt"], problems))) == len(read_shard(shards[1]))
    assert problems == []   # the damage is inside samples: found when they are decoded


def test_shard_cut_at_a_member_boundary_is_truncated(shards, tmp_path):
    """tarfile reads a tar cut exactly before a header as a shorter, complete archive; the
    missing end-of-archive marker gives it away. The last (maybe incomplete) sample is
    dropped."""
    with tarfile.open(shards[0]) as tar:
        members = tar.getmembers()
    cut = members[len(members) // 2 + 1].offset   # a header, inside the second half
    raw = open(shards[0], "rb").read()
    path = tmp_path / "cut.tar"
    path.write_bytes(raw[:cut])
    with tarfile.open(path) as tar:               # what tarfile alone says: no error
        assert len(tar.getmembers()) == len(members) // 2 + 1
    problems = []
    got = list(raw_samples(str(path), problems))
    assert problems == [("shard_truncated", "ends without the end-of-archive marker")]
    complete = (len(members) // 2 + 1) // 5      # five members per sample
    assert len(got) == complete and all(len(g) == 6 for g in got)


def test_bad_members_and_shards_are_skipped_and_counted(shards, bad, caplog):
    stream = PairStream(mixed(shards, bad), batch_size=3, resolution=R, seed=0)
    want = {"sample_corrupt", "sample_invalid", "shard_truncated", "shard_missing"}
    keys = set()
    with caplog.at_level("WARNING", logger="trainer.data"):
        for n, batch in enumerate(stream):
            assert len(batch["keys"]) == 3          # always full batches
            keys.update(batch["keys"])
            seen = stream.stats.reasons
            if (want <= set(seen) and seen["sample_invalid"] >= 2) or n == 80:
                break
    assert want <= set(stream.stats.reasons), stream.stats
    assert stream.stats.reasons["sample_corrupt"] >= 1
    assert stream.stats.reasons["sample_invalid"] >= 2
    assert stream.stats.skipped_samples == (stream.stats.reasons["sample_corrupt"]
                                            + stream.stats.reasons["sample_invalid"])
    assert stream.stats.skipped_shards == (stream.stats.reasons["shard_truncated"]
                                           + stream.stats.reasons["shard_missing"])
    assert stream.stats.samples == 3 * (n + 1)
    assert not keys & set(bad["corrupt_keys"])    # damaged samples never reach a batch
    assert keys & set(bad["good_corrupt_keys"])   # their shard's good samples do
    text = caplog.text
    assert bad["missing"] in text and bad["truncated"] in text
    assert bad["corrupt_keys"][0] in text and bad["corrupt"] in text


def test_skip_counts_survive_worker_processes(shards, bad):
    loader = PairLoader(PairStream(mixed(shards, bad), batch_size=3, resolution=R, seed=0),
                        num_workers=2)
    for n, batch in enumerate(loader):
        assert len(batch["keys"]) == 3
        if {"shard_missing", "sample_invalid"} <= set(loader.stats.reasons) or n == 60:
            break
    assert {"shard_missing", "sample_invalid"} <= set(loader.stats.reasons), loader.stats
    assert loader.stats.samples == 3 * (n + 1)


def test_all_bad_shards_raise_a_clear_error(bad, tmp_path):
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file at all" * 40)
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    files = [bad["missing"], str(tmp_path / "also-missing.tar"), str(garbage), str(empty)]
    with pytest.raises(NoUsableData, match=r"no usable sample .* 4 of 4 distinct shards"):
        next(iter(PairStream(files, batch_size=2, resolution=R, seed=0)))
    # a shard whose every sample is bad counts as failed too; the error crosses processes
    only_bad = tmp_path / "only-bad.tar"
    with tarfile.open(bad["corrupt"]) as src, tarfile.open(only_bad, "w") as out:
        for m in src.getmembers():
            payload = src.extractfile(m).read()
            if m.name.endswith(".source.jpg"):
                payload = b"garbage"
            info = tarfile.TarInfo(m.name)
            info.size = len(payload)
            out.addfile(info, io.BytesIO(payload))
    loader = PairLoader(PairStream(files + [str(only_bad)], batch_size=2, resolution=R),
                        num_workers=1)
    with pytest.raises(NoUsableData, match="5 of 5 distinct shards"):
        next(iter(loader))
