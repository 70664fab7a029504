"""Known-answer tests of the synthetic clip generator: the ground truth must agree with the
pixels a decoder actually returns."""
from __future__ import annotations

import os
import struct

import av
import cv2
import numpy as np
import pytest

from pipeline import synthetic
from schemas.coords import rotate_frame
from pipeline.synthetic import ClipSpec, load_ground_truth, make_clip

W, H = 320, 240


def decode(path, gray=False) -> np.ndarray:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    if gray:
        frames = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack(frames)


def probe_rotation(path) -> int:
    """Clockwise display turn (0/90/180/270) of the first video stream, via PyAV.

    PyAV's VideoFrame.rotation is FFmpeg's display-matrix angle, COUNTER-clockwise, in
    [-180, 180]: a clip a player turns 90 degrees clockwise reports -90.
    """
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
    return int(round(-frame.rotation)) % 360


def h3(a) -> np.ndarray:
    return np.vstack([np.asarray(a, np.float64), [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def std(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return {gt.kind: (path, gt) for path, gt in synthetic.standard_set(out, seed=0)}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_inputs")
    return out, synthetic.make_bad_inputs(out)


# --- the standard set ---------------------------------------------------------------------


def test_standard_set_files_and_sidecars(std):
    assert sorted(std) == sorted(synthetic.STANDARD_KINDS)
    for kind, (path, gt) in std.items():
        assert os.path.basename(path) == f"{kind}-0.mp4"
        assert os.path.isfile(path + ".gt.json")
        loaded = load_ground_truth(path)
        assert (loaded.kind, loaded.width, loaded.height, loaded.fps, loaded.num_frames,
                loaded.cut_frame) == (kind, W, H, 24, 48, 24 if kind == "cut" else None)
        np.testing.assert_array_equal(loaded.affines, gt.affines)  # JSON floats round-trip
        for t in (0, 17, 47):
            np.testing.assert_array_equal(loaded.object_mask(t), gt.object_mask(t))
        with av.open(path) as c:
            st = c.streams.video[0]
            assert st.codec_context.name == "h264" and st.format.name == "yuv420p"
            assert (st.width, st.height, st.average_rate) == (W, H, 24)
            assert sum(1 for _ in c.decode(video=0)) == 48


@pytest.mark.parametrize("kind", ["translate", "rotate", "scale"])
def test_object_transform_matches_pixels(std, kind):
    path, gt = std[kind]
    g = decode(path, gray=True).astype(np.float32)
    shift = h3([[1, 0, 1.0], [0, 1, 0.0]])
    for t0, t1 in [(2, 9), (10, 40), (30, 5)]:
        a = gt.transform(t0, t1)
        interior = cv2.erode(gt.object_mask(t1).astype(np.uint8), np.ones((7, 7))) > 0
        assert interior.sum() > 2000

        def mad(m):
            warped = cv2.warpAffine(g[t0], m, (W, H), flags=cv2.INTER_LINEAR)
            return float(np.abs(warped - g[t1])[interior].mean())

        good, off_by_1px, ident = mad(a), mad((shift @ h3(a))[:2]), mad(np.eye(2, 3))
        assert good < 4.0, (t0, t1, good)
        assert off_by_1px > 2.5 * good and ident > 5 * good, (t0, t1, good, off_by_1px, ident)


def test_pan_transform_matches_pixels(std):
    path, gt = std["pan"]
    g = decode(path, gray=True).astype(np.float32)
    for t0, t1 in [(2, 9), (10, 40), (30, 5)]:
        a = gt.transform(t0, t1)
        assert np.allclose(a[:, :2], np.eye(2)) and np.linalg.norm(a[:, 2]) > 2 * abs(t1 - t0)
        valid = cv2.warpAffine(np.ones((H, W), np.uint8), a, (W, H))
        valid = cv2.erode(valid, np.ones((9, 9))) > 0
        warped = cv2.warpAffine(g[t0], a, (W, H), flags=cv2.INTER_LINEAR)
        good = np.abs(warped - g[t1])[valid].mean()
        ident = np.abs(g[t0] - g[t1])[valid].mean()
        assert good < 3.0 and ident > 5 * good, (t0, t1, good, ident)
        assert not gt.moving(t0, t1) and not gt.object_mask(t0).any()


def test_static_clip_does_not_move(std):
    path, gt = std["static"]
    g = decode(path, gray=True).astype(np.float32)
    assert np.abs(g[1:] - g[0]).mean() < 1.0
    assert np.allclose(gt.transform(0, 47), np.eye(2, 3))
    assert not gt.moving(0, 47) and not gt.object_mask(20).any()


def test_object_mask_covers_the_object(std):
    path, gt = std["translate"]
    g = decode(path, gray=True).astype(np.float32)
    m0, m1 = gt.object_mask(0), gt.object_mask(40)
    assert m0.any() and m1.any() and gt.moving(0, 40) and not gt.moving(5, 5)
    diff = np.abs(g[0] - g[40])
    # Background is static: outside both masks the frames agree ...
    outside = ~cv2.dilate((m0 | m1).astype(np.uint8), np.ones((5, 5))).astype(bool)
    assert diff[outside].mean() < 1.5
    # ... and where exactly one mask says "object", the pixels changed.
    k = np.ones((5, 5), np.uint8)
    only = (cv2.erode(m0.astype(np.uint8), k) > 0) & ~(cv2.dilate(m1.astype(np.uint8), k) > 0)
    assert only.sum() > 500 and diff[only].mean() > 20


def test_object_size_and_mask_area(std):
    _, gt = std["scale"]
    a0 = gt.object_mask(0).sum()
    ys, xs = np.nonzero(gt.object_mask(0))
    assert 0.25 * H <= ys.max() - ys.min() + 1 <= 0.35 * H
    for t in (10, 47):
        s2 = np.linalg.det(gt.transform(0, t)[:, :2])
        assert gt.object_mask(t).sum() == pytest.approx(a0 * s2, rel=0.02)
    _, gt = std["rotate"]
    a0 = gt.object_mask(0).sum()
    assert gt.object_mask(45).sum() == pytest.approx(a0, rel=0.02)


def test_motion_magnitudes(std):
    _, gt = std["translate"]
    assert 1.0 <= np.linalg.norm(gt.transform(0, 1)[:, 2]) <= 3.0
    _, gt = std["rotate"]
    a = gt.transform(0, 1)
    assert np.degrees(np.arctan2(a[1, 0], a[0, 0])) == pytest.approx(1.0)
    c = np.array(gt.shots[0]["object"]["center"])
    np.testing.assert_allclose(gt.map_points(c[None], 0, 30)[0], c, atol=1e-9)
    _, gt = std["scale"]
    assert np.linalg.det(gt.transform(0, 1)[:, :2]) == pytest.approx(1.01 ** 2)
    _, gt = std["pan"]
    assert 2.0 <= np.linalg.norm(gt.transform(0, 1)[:, 2]) <= 3.0


@pytest.mark.parametrize("kind", ["translate", "rotate", "scale", "pan"])
def test_lucas_kanade_tracks_ground_truth(std, kind):
    path, gt = std[kind]
    g = decode(path, gray=True)
    errors = []
    for t0 in range(0, 46, 9):
        if kind == "pan":
            region = np.zeros((H, W), bool)
            region[30:-30, 30:-30] = True
        else:
            region = cv2.erode(gt.object_mask(t0).astype(np.uint8), np.ones((25, 25))) > 0
        ys, xs = np.nonzero(region)
        pts = np.stack([xs, ys], 1)[:: max(1, len(xs) // 100)].astype(np.float32)
        nxt, st, _ = cv2.calcOpticalFlowPyrLK(
            g[t0], g[t0 + 1], pts.reshape(-1, 1, 2), None, winSize=(21, 21), maxLevel=3,
            criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 0.001))
        e = np.linalg.norm(nxt.reshape(-1, 2) - gt.map_points(pts, t0, t0 + 1), axis=1)
        errors.append(e[st.ravel() == 1])
    e = np.concatenate(errors)
    assert len(e) > 200
    assert np.median(e) < 0.15 and np.percentile(e, 95) < 0.5, (np.median(e), e.max())


def test_cut_histogram_jumps_at_cut_frame(std):
    path, gt = std["cut"]
    g = decode(path, gray=True)
    hists = [np.bincount(f.ravel() // 8, minlength=32) / f.size for f in g]
    dist = np.array([0.5 * np.abs(hists[t] - hists[t - 1]).sum() for t in range(1, len(g))])
    assert int(np.argmax(dist)) + 1 == gt.cut_frame == 24
    assert dist[gt.cut_frame - 1] > 0.45
    assert np.delete(dist, gt.cut_frame - 1).max() < 0.1
    # Both shots have object motion; no transform crosses the cut.
    assert gt.moving(0, 10) and gt.moving(30, 40) and gt.moving(23, 24)
    assert gt.shot_index(23) == 0 and gt.shot_index(24) == 1
    with pytest.raises(ValueError):
        gt.transform(10, 30)
    with pytest.raises(ValueError):
        gt.map_points(np.zeros((1, 2)), 23, 24)
    assert np.linalg.norm(gt.transform(24, 25)[:, 2]) > 1.0
    assert gt.object_mask(0).any() and gt.object_mask(47).any()


def test_transform_composition_and_inverse(std):
    rng = np.random.default_rng(0)
    for kind, (_, gt) in std.items():
        for _ in range(10):
            if kind == "cut":
                lo, hi = (0, 24) if rng.random() < 0.5 else (24, 48)
            else:
                lo, hi = 0, 48
            t0, t1, t2 = (int(t) for t in rng.integers(lo, hi, 3))
            a02 = h3(gt.transform(t0, t2))
            a12_01 = h3(gt.transform(t1, t2)) @ h3(gt.transform(t0, t1))
            np.testing.assert_allclose(a02, a12_01, atol=1e-9)
            np.testing.assert_allclose(h3(gt.transform(t1, t0)) @ h3(gt.transform(t0, t1)),
                                       np.eye(3), atol=1e-9)
            np.testing.assert_allclose(gt.transform(t0, t0), np.eye(2, 3), atol=1e-12)
            pts = rng.uniform(0, 200, (5, 2))
            a = gt.transform(t0, t1)
            np.testing.assert_allclose(gt.map_points(pts, t0, t1), pts @ a[:, :2].T + a[:, 2])
    _, gt = std["translate"]
    with pytest.raises(ValueError):
        gt.transform(0, 48)


def test_same_spec_same_bytes(tmp_path):
    for kind in ("pan", "rotate"):
        spec = ClipSpec(name="d", kind=kind, num_frames=12)
        make_clip(spec, tmp_path / f"a-{kind}.mp4")
        make_clip(spec, tmp_path / f"b-{kind}.mp4")
        a, b = tmp_path / f"a-{kind}.mp4", tmp_path / f"b-{kind}.mp4"
        assert a.read_bytes() == b.read_bytes()
        assert ((tmp_path / f"a-{kind}.mp4.gt.json").read_bytes()
                == (tmp_path / f"b-{kind}.mp4.gt.json").read_bytes())
    make_clip(ClipSpec(name="d", kind="pan", num_frames=12, seed=1), tmp_path / "c.mp4")
    assert (tmp_path / "c.mp4").read_bytes() != (tmp_path / "a-pan.mp4").read_bytes()


def test_odd_size_rounds_down_to_even(tmp_path):
    gt = make_clip(ClipSpec(name="odd", kind="translate", width=101, height=75, num_frames=4),
                   tmp_path / "odd.mp4")
    assert (gt.width, gt.height) == (100, 74)
    assert decode(tmp_path / "odd.mp4").shape == (4, 74, 100, 3)
    assert gt.object_mask(0).shape == (74, 100)


def test_bad_spec_rejected():
    with pytest.raises(ValueError):
        ClipSpec(name="x", kind="wobble")
    with pytest.raises(ValueError):
        ClipSpec(name="x", kind="translate", rotation=45)
    with pytest.raises(ValueError):
        ClipSpec(name="x", kind="cut", num_frames=10, cut_frame=10)


# --- bad inputs ---------------------------------------------------------------------------


def test_bad_inputs_statuses(bad):
    out, expected = bad
    names = {os.path.basename(p): s for p, s in expected.items()}
    assert names == {
        "empty.mp4": "failed:EmptyFile",
        "truncated.mp4": "failed:DecodeError",
        "text.mp4": "failed:DecodeError",
        "audio_only.mp4": "failed:NoVideoStream",
        "one_frame.mp4": "filtered:too-short",
        "huge.mp4": "failed:VideoTooLarge",
        "rotated.mp4": "ok",
        "missing.mp4": "failed:FileNotFoundError",
    }
    assert all(os.path.dirname(p) == str(out) for p in expected)


def test_bad_inputs_are_what_they_claim(bad):
    out, _ = bad
    assert os.path.getsize(out / "empty.mp4") == 0
    assert not os.path.exists(out / "missing.mp4")

    data = (out / "truncated.mp4").read_bytes()
    assert data[4:8] == b"ftyp" and b"moov" not in data and len(data) > 1000
    for name in ("truncated.mp4", "text.mp4"):
        with pytest.raises(av.error.FFmpegError):
            with av.open(str(out / name)) as c:
                list(c.decode(video=0))
    assert (out / "text.mp4").read_text().startswith("This is not a video")

    with av.open(str(out / "audio_only.mp4")) as c:
        assert len(c.streams.video) == 0 and len(c.streams.audio) == 1
        assert c.streams.audio[0].codec_context.name == "aac"
        assert 0.9 < c.duration / av.time_base < 1.2

    with av.open(str(out / "one_frame.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 1

    with av.open(str(out / "huge.mp4")) as c:
        st = c.streams.video[0]
        assert (st.width, st.height) == (7680, 4352) and st.width * st.height > 3840 * 2160 * 2
        assert sum(1 for p in c.demux(st) if p.size) == 2


def test_rotated_clip_displays_upright(bad, std):
    out, _ = bad
    path = out / "rotated.mp4"
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        assert (st.width, st.height) == (H, W)  # stored sideways
        frame = next(c.decode(video=0))
        # PyAV reports the display matrix as a counter-clockwise angle: -90 = turn clockwise.
        assert frame.rotation == -90
        matrix = next(sd for sd in frame.side_data if "DISPLAYMATRIX" in str(sd.type))
        # ISO/IEC 14496-12 [a b u; c d v; x y w], (x, y) -> (a x + c y, b x + d y) = (-y, x):
        # with y down, right -> down, i.e. clockwise.
        assert struct.unpack("<9i", bytes(matrix)) == (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    assert probe_rotation(path) == 90

    decoded = decode(path)
    assert decoded.shape == (48, W, H, 3)
    upright = np.stack([rotate_frame(f, probe_rotation(path)) for f in decoded]).astype(float)
    reference = decode(std["translate"][0]).astype(float)
    assert np.abs(upright - reference).mean() < 3.0
    assert np.abs(np.rot90(decoded, -1, axes=(1, 2)) - upright).max() == 0
    assert np.abs(np.stack([np.rot90(f, 1) for f in decoded])[:, :H, :W].astype(float)
                  - reference).mean() > 20  # the wrong turn does not match

    gt = load_ground_truth(path)  # the sidecar describes the upright clip
    ref_gt = std["translate"][1]
    assert (gt.kind, gt.width, gt.height, gt.rotation) == ("translate", W, H, 90)
    np.testing.assert_array_equal(gt.affines, ref_gt.affines)
    np.testing.assert_array_equal(gt.object_mask(10), ref_gt.object_mask(10))


# --- the job ------------------------------------------------------------------------------


def test_make_videos_job(tmp_path, capsys):
    from jobs.make_videos import main

    assert main(["--output", str(tmp_path), "--width", "96", "--height", "64",
                 "--seed", "3", "--repeat", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 12
    names = sorted(p.name for p in tmp_path.glob("*.mp4"))
    assert names == sorted(f"{k}-{s}.mp4" for k in synthetic.STANDARD_KINDS for s in (3, 4))
    gt = load_ground_truth(tmp_path / "cut-4.mp4")
    assert (gt.width, gt.height, gt.seed) == (96, 64, 4)


# --- the toy world --------------------------------------------------------------------------


def test_toy_set_clips_move_as_their_ground_truth_says(tmp_path):
    clips = synthetic.toy_set(tmp_path, 4, seed=7, size=96, num_frames=16, speed=(1.5, 2.0))
    assert [os.path.basename(p) for p, _ in clips] == [f"toy-{s}.mp4" for s in range(7, 11)]
    velocities = []
    for path, gt in clips:
        assert (gt.kind, gt.width, gt.height, gt.num_frames) == ("translate", 96, 96, 16)
        assert gt.spec["texture"] == "coarse" and 0.25 <= gt.spec["object_size"] <= 0.4
        v = gt.transform(0, 1)[:, 2]
        assert 1.5 <= np.linalg.norm(v) <= 2.0
        velocities.append(v)
        # the pixels follow the ground truth: frame 12's object is frame 2's moved by 10 v
        g = decode(path, gray=True).astype(np.float32)
        interior = cv2.erode(gt.object_mask(12).astype(np.uint8), np.ones((5, 5))) > 0
        warped = cv2.warpAffine(g[2], gt.transform(2, 12), (96, 96), flags=cv2.INTER_LINEAR)
        assert np.abs(warped - g[12])[interior].mean() < 4.0
        assert np.abs(g[2] - g[12])[interior].mean() > 8.0     # it did move
    # every clip has its own direction
    angles = np.degrees([np.arctan2(v[1], v[0]) for v in velocities])
    assert len(set(np.round(angles))) == 4
    # the same seed gives the same clips
    again = synthetic.toy_set(tmp_path / "again", 1, seed=8, size=96, num_frames=16,
                              speed=(1.5, 2.0))
    assert again[0][1].to_json() == clips[1][1].to_json()


def test_coarse_texture_calms_the_background():
    fine = synthetic.render_frames(ClipSpec(name="f", kind="translate", width=128, height=128,
                                            num_frames=2))
    coarse = synthetic.render_frames(ClipSpec(name="c", kind="translate", width=128,
                                              height=128, num_frames=2, texture="coarse"))
    def detail(frames, gt, inside):
        g = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY).astype(np.float32)
        region = (gt.object_mask(0) > 0) == inside
        return float(np.abs(cv2.Laplacian(g, cv2.CV_32F))[region].mean())
    assert detail(*coarse, inside=False) < 0.5 * detail(*fine, inside=False)
    assert detail(*coarse, inside=True) > detail(*coarse, inside=False)
    with pytest.raises(ValueError, match="unknown texture 'smooth'; expected one of"):
        ClipSpec(name="x", kind="translate", texture="smooth")


def test_make_videos_toy(tmp_path, capsys):
    from jobs.make_videos import main

    assert main(["--output", str(tmp_path), "--toy", "2", "--seed", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        [str(tmp_path / f"toy-{s}.mp4"), "translate", "128x128"] for s in (5, 6)]
    with pytest.raises(SystemExit) as e:
        main(["--output", str(tmp_path), "--toy", "0"])
    assert e.value.code == 2
    assert "--toy must be >= 1" in capsys.readouterr().err
