"""Tracker backends: interface conformance, known-motion accuracy, CoTracker loading safety.

Conformance runs for both backends. Accuracy needs a tracker that can track: always the
built-in one; CoTracker only with real weights named by LDRAG_COTRACKER_CHECKPOINT (the test
checkpoint has random weights, which cannot track).
"""
from __future__ import annotations

import inspect
import io
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch


from pipeline import tracking
from pipeline.config import TrackConfig
from pipeline.tracking import TrackerError, make_tracker
from tests.conftest import require_cotracker

REAL_CKPT_ENV = "LDRAG_COTRACKER_CHECKPOINT"
# "cotracker" is the official path (frames resized to 384x512: slow on CPU); the low-resolution
# variant runs the same code at 128x128 so the fast suite still covers the CoTracker plumbing.
BACKENDS = ["builtin", pytest.param("cotracker", marks=pytest.mark.slow), "cotracker-lowres"]
LOWRES = (128, 128)

SIZE = 96        # clip frames are SIZE x SIZE
FRAMES = 8


def _texture(seed: int, size: int) -> np.ndarray:
    """Smooth colour noise at two scales: trackable at every pyramid level."""
    rng = np.random.default_rng(seed)
    fine = cv2.GaussianBlur(rng.random((size, size, 3), np.float32), (0, 0), 1.5)
    coarse = cv2.GaussianBlur(rng.random((size, size, 3), np.float32), (0, 0), 5.0)
    img = 0.6 * (fine - fine.mean()) / fine.std() + 0.4 * (coarse - coarse.mean()) / coarse.std()
    return np.clip(128 + 40 * img, 0, 255).astype(np.uint8)


def _clip(seed: int, motions: list[np.ndarray]) -> np.ndarray:
    """Frames of a textured scene; frame k is warped by the 2x3 affine motions[k] (which maps
    frame-0 points to frame-k points in clip pixel coordinates, centres at integers).

    The texture is larger than the clip and the clip is its centre, so no border enters.
    """
    big = SIZE * 2
    off = (big - SIZE) // 2
    tex = _texture(seed, big)
    shift = np.array([[1, 0, off], [0, 1, off], [0, 0, 1]], np.float64)
    frames = []
    for m in motions:
        m_big = (shift @ np.vstack([m, [0, 0, 1]]) @ np.linalg.inv(shift))[:2]
        warped = cv2.warpAffine(tex, m_big, (big, big), flags=cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_REFLECT)
        frames.append(warped[off:off + SIZE, off:off + SIZE])
    return np.stack(frames)


def _translation(dx: float, dy: float) -> list[np.ndarray]:
    return [np.array([[1, 0, k * dx], [0, 1, k * dy]], np.float64) for k in range(FRAMES)]


def _rotation(deg_per_frame: float) -> list[np.ndarray]:
    centre = ((SIZE - 1) / 2, (SIZE - 1) / 2)
    return [cv2.getRotationMatrix2D(centre, k * deg_per_frame, 1.0) for k in range(FRAMES)]


def _apply(motions: list[np.ndarray], pts: np.ndarray) -> np.ndarray:
    """Expected (T, N, 2) positions of frame-0 points pts (N, 2)."""
    homo = np.hstack([pts, np.ones((len(pts), 1))])
    return np.stack([homo @ m.T for m in motions]).astype(np.float32)


def _grid(lo: float, hi: float, n: int) -> np.ndarray:
    g = np.linspace(lo, hi, n)
    gx, gy = np.meshgrid(g, g)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def _build(backend: str, request) -> object:
    if backend == "builtin":
        return make_tracker(TrackConfig(backend="builtin"))
    ckpt = request.getfixturevalue("cotracker_checkpoint")
    if backend == "cotracker-lowres":
        return make_tracker(TrackConfig(backend="cotracker", checkpoint=ckpt,
                                        options={"model_resolution": list(LOWRES)}))
    return make_tracker(TrackConfig(backend="cotracker", checkpoint=ckpt))


# --- conformance (both backends) ---------------------------------------------------------------

@pytest.fixture(scope="module", params=BACKENDS)
def tracker(request):
    return _build(request.param, request)


@pytest.fixture(scope="module")
def run(tracker):
    """One B=2 call per backend, shared by the conformance tests (CoTracker is slow on CPU)."""
    clips = np.stack([_clip(1, _translation(0.7, -0.4)), _clip(2, _rotation(2.0))])
    q = np.array([[10.25, 20.5], [0, 0], [SIZE - 1, SIZE - 1], [47.5, 47.5], [80, 12.75]],
                 np.float32)
    queries = np.stack([q, q[::-1] + 0.125])
    tracks, visible = tracker.track(clips, queries)
    return clips, queries, tracks, visible


def test_identity(tracker):
    assert isinstance(tracker.name, str) and tracker.name
    assert isinstance(tracker.version, str) and tracker.version


def test_shapes_and_dtypes(run):
    clips, queries, tracks, visible = run
    b, t = clips.shape[:2]
    n = queries.shape[1]
    assert isinstance(tracks, np.ndarray) and isinstance(visible, np.ndarray)
    assert tracks.shape == (b, t, n, 2) and tracks.dtype == np.float32
    assert visible.shape == (b, t, n) and visible.dtype == bool


def test_frame0_is_queries_and_visible(run):
    _, queries, tracks, visible = run
    np.testing.assert_array_equal(tracks[:, 0], queries)
    assert visible[:, 0].all()


def test_outputs_finite(run):
    assert np.isfinite(run[2]).all()


def test_bad_inputs_raise(tracker):
    clips = np.zeros((2, FRAMES, 32, 32, 3), np.uint8)
    queries = np.full((2, 3, 2), 10.0, np.float32)
    bad = [
        (clips.astype(np.float32), queries),           # wrong dtype
        (clips[:, :1], queries),                       # a single frame
        (clips, queries[:1]),                          # batch sizes differ
        (clips[..., :1], queries),                     # not RGB
        (clips, queries[..., :1]),                     # queries not (x, y)
        (clips[0], queries[0]),                        # no batch axis
    ]
    for c, q in bad:
        with pytest.raises(TrackerError):
            tracker.track(c, q)


def test_every_registered_backend_is_checked_here():
    assert {b if isinstance(b, str) else b.values[0] for b in BACKENDS} >= set(tracking.BACKENDS)


# --- the registry: names and options ---------------------------------------------------------

def test_each_backend_declares_exactly_the_options_its_constructor_takes():
    """`track.options` is checked against what BACKENDS declares (without importing torch),
    and reaches the constructor as keyword arguments: the two lists must agree."""
    from pipeline.tracking.lk import LKTracker

    require_cotracker()
    from pipeline.tracking.cotracker import CoTrackerBackend

    # the constructor's other arguments: from TrackConfig's own keys, or never from YAML
    constructors = {"builtin": (LKTracker, set()),
                    "cotracker": (CoTrackerBackend, {"checkpoint", "device", "allow_random_init"})}
    assert set(constructors) == set(tracking.BACKENDS)
    for name, (cls, other) in constructors.items():
        params = set(inspect.signature(cls).parameters) - other
        assert set(tracking.BACKENDS[name].options) == params, name


def test_options_reach_the_backend():
    tracker = make_tracker(TrackConfig(options={"window": 15, "levels": 2, "fb_max_px": 1}))
    assert tracker.params["winSize"] == (15, 15) and tracker.params["maxLevel"] == 2
    assert tracker.fb_max_px == 1
    assert tracker.version == f"1+opencv{cv2.__version__}.window=15.levels=2.fb_max_px=1"
    assert make_tracker(TrackConfig()).version == f"1+opencv{cv2.__version__}"


def test_cotracker_options_reach_the_backend(cotracker_checkpoint):
    tracker = make_tracker(TrackConfig(backend="cotracker", checkpoint=cotracker_checkpoint,
                                       options={"model_resolution": [128, 160]}))
    assert tracker.predictor.interp_shape == (128, 160)
    assert tracker.version.endswith(".r128x160")


def test_cotracker_batched_tracks_equal_one_clip_at_a_time(cotracker_checkpoint):
    """Three clips in one vmapped pass, then in passes of two (a full one and a rest of one),
    then one by one: the same tracks to float rounding (measured: a few 1e-6 px), the same
    visibility."""
    clips = np.stack([_clip(20, _translation(0.6, 0.3)), _clip(21, _rotation(-1.0)),
                      _clip(22, _translation(-0.9, 0.0))])
    queries = np.stack([_grid(5, SIZE - 6, 3) + 0.25 * i for i in range(3)])

    def tracker(batch_size):
        return make_tracker(TrackConfig(backend="cotracker", checkpoint=cotracker_checkpoint,
                                        options={"model_resolution": [64, 64],
                                                 "batch_size": batch_size}))
    one_by_one = tracker(1).track(clips, queries)
    for batch_size in (3, 2):
        tracks, visible = tracker(batch_size).track(clips, queries)
        assert np.abs(tracks - one_by_one[0]).max() < 1e-4, batch_size
        assert (visible == one_by_one[1]).all(), batch_size
    with pytest.raises(TrackerError, match="batch_size must be >= 1, got 0"):
        tracker(0)


def test_unknown_backend_or_option_is_named_exactly():
    with pytest.raises(TrackerError) as e:
        make_tracker(TrackConfig(backend="raft"))
    assert str(e.value) == "track.backend: builtin|cotracker, got 'raft'"
    with pytest.raises(TrackerError) as e:
        make_tracker(TrackConfig(backend="cotracker", options={"window": 15}))
    assert str(e.value) == ("track.options.window: not an option of track.backend cotracker "
                            "(it takes batch_size, model_resolution, window_len)")


# --- known-motion accuracy (needs a tracker that can track) ------------------------------------

MOTIONS = {
    "translate": _translation(0.8, -0.55),
    "horizontal": _translation(1.3, 0.0),
    "rotate": _rotation(1.5),
}


@pytest.fixture(scope="module",
                params=["builtin", pytest.param("cotracker", marks=pytest.mark.slow)])
def motion_run(request):
    """All MOTIONS tracked in one batched call: {case: (expected, tracks, visible)}."""
    if request.param == "cotracker":
        ckpt = os.environ.get(REAL_CKPT_ENV)
        if not ckpt:
            pytest.skip(f"set {REAL_CKPT_ENV} to real CoTracker3 offline weights to check "
                        "accuracy; random weights cannot track")
        tracker = make_tracker(TrackConfig(backend="cotracker", checkpoint=ckpt))
    else:
        tracker = _build(request.param, request)
    queries = _grid(22, SIZE - 23, 6)
    names = list(MOTIONS)
    clips = np.stack([_clip(10 + i, MOTIONS[name]) for i, name in enumerate(names)])
    tracks, visible = tracker.track(clips, np.stack([queries] * len(names)))
    return {name: (_apply(MOTIONS[name], queries), tracks[i], visible[i])
            for i, name in enumerate(names)}


@pytest.mark.parametrize("case", list(MOTIONS))
def test_known_motion_accuracy(motion_run, case):
    expected, tracks, visible = motion_run[case]
    assert visible.mean() >= 0.9, f"{case}: only {visible.mean():.0%} visible"
    err = np.linalg.norm(tracks - expected, axis=-1)[visible]
    assert np.median(err) <= 0.5, f"{case}: median error {np.median(err):.3f} px"
    assert np.percentile(err, 90) <= 1.0, f"{case}: p90 error {np.percentile(err, 90):.3f} px"


def test_horizontal_motion_changes_x_only(motion_run):
    expected, tracks, visible = motion_run["horizontal"]
    moved = tracks[-1] - tracks[0]
    np.testing.assert_allclose(np.median(moved[:, 0]), 1.3 * (FRAMES - 1), atol=0.5)
    assert np.abs(np.median(moved[:, 1])) <= 0.25, "vertical drift under horizontal motion"


# --- CoTracker loading ------------------------------------------------------------------------

def _executed(path: str) -> dict:
    Path(path).write_text("executed")
    return {}


class _Payload:
    """Unpickling this runs _executed: what a malicious checkpoint would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (_executed, (self.marker,))


def test_cotracker_checkpoint_is_loaded_weights_only(tmp_path):
    require_cotracker()
    from pipeline.tracking.cotracker import CoTrackerBackend

    marker = tmp_path / "marker"
    ckpt = tmp_path / "evil.pth"
    torch.save({"model": _Payload(str(marker))}, ckpt)
    with pytest.raises(TrackerError, match="weights_only"):
        CoTrackerBackend(checkpoint=str(ckpt))
    assert not marker.exists(), "the checkpoint's pickled code ran"
    # The trap is real: a plain unpickle runs it.
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def test_cotracker_loads_wrapped_state_dict_from_fsspec(cotracker_checkpoint):
    import fsspec
    from pipeline.tracking.cotracker import CoTrackerBackend

    state = torch.load(cotracker_checkpoint, map_location="cpu", weights_only=True)
    buf = io.BytesIO()
    torch.save({"model": state, "step": 7}, buf)
    uri = "memory://test_tracking/wrapped.pth"
    with fsspec.open(uri, "wb") as f:
        f.write(buf.getvalue())
    try:
        backend = CoTrackerBackend(checkpoint=uri)
    finally:
        fsspec.filesystem("memory").rm(uri)
    assert backend.name == "cotracker3-offline"
    version, digest = backend.version.split("+")
    assert version and len(digest) == 12 and digest != "random-init"
    loaded = backend.predictor.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_cotracker_rejects_missing_and_foreign_checkpoints(tmp_path):
    require_cotracker()
    from pipeline.tracking.cotracker import CoTrackerBackend

    with pytest.raises(TrackerError, match="checkpoint"):
        make_tracker(TrackConfig(backend="cotracker", checkpoint=None))
    with pytest.raises(TrackerError, match="cannot read"):
        CoTrackerBackend(checkpoint=str(tmp_path / "absent.pth"))
    foreign = tmp_path / "foreign.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(TrackerError, match="does not fit"):
        CoTrackerBackend(checkpoint=str(foreign))


def test_cotracker_random_init_is_opt_in_and_keeps_global_rng():
    require_cotracker()
    from pipeline.tracking.cotracker import CoTrackerBackend

    before = torch.random.get_rng_state()
    backend = CoTrackerBackend(checkpoint=None, allow_random_init=True)
    assert backend.version.endswith("+random-init")
    lowres = CoTrackerBackend(checkpoint=None, allow_random_init=True, model_resolution=LOWRES)
    assert lowres.version.endswith("+random-init.r128x128")
    with pytest.raises(TrackerError, match="model_resolution"):
        CoTrackerBackend(checkpoint=None, allow_random_init=True, model_resolution=(100, 130))
    assert torch.equal(torch.random.get_rng_state(), before)


def test_cotracker_import_missing_says_how_to_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "cotracker", None)
    with pytest.raises(TrackerError, match=r"make vendor-cotracker.*PYTHONPATH"):
        make_tracker(TrackConfig(backend="cotracker", checkpoint="unused.pth"))
