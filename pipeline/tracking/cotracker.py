"""CoTracker3 (offline) backend, wrapping the official CoTracker code.

The official code is not on PyPI: `make vendor-cotracker` unpacks it into `.cache/vendor/`,
which must be on PYTHONPATH (the tests add it themselves).

Weights are never unpickled: the official `build_cotracker` loads a checkpoint with a bare
`torch.load` (arbitrary pickle), so we build the model with `checkpoint=None` and load the
state dict ourselves with `torch.load(..., weights_only=True)`.

Coordinates: `CoTrackerPredictor` resizes frames to the model resolution with
`align_corners=True` and scales points by (size' - 1) / (size - 1), i.e. it already uses
pixel centres at integers, the convention of `schemas.coords`; no conversion is needed.
Batches: the official offline forward fails on a batch of more than one clip (co-tracker
issue 163: a `.view` of a tensor expanded over time). `torch.func.vmap` runs the unmodified
one-clip predictor over a batch instead: every operation sees one clip, the kernels run on
the whole batch (what makes it worth it on a GPU). Batched tracks equal one-by-one tracks to
float rounding (a few 1e-6 px; `tests/pipeline/test_tracking.py`). `batch_size` clips go in
one pass, which bounds memory.
"""
from __future__ import annotations

import hashlib
import io
from typing import Optional

import numpy as np
import torch

from pipeline.tracking.base import TrackerError, check_inputs

_MISSING = ("cannot import the official CoTracker code (package `cotracker`); put it on "
            "PYTHONPATH, e.g. `make vendor-cotracker` then `PYTHONPATH=.cache/vendor`")


class CoTrackerBackend:
    name = "cotracker3-offline"

    def __init__(self, checkpoint: Optional[str], device: str = "cpu", window_len: int = 60,
                 allow_random_init: bool = False,
                 model_resolution: Optional[tuple[int, int]] = None, batch_size: int = 8):
        """model_resolution: (H, W) the frames are resized to before the model; None keeps the
        official (384, 512) the weights were trained at. Smaller is faster and less accurate.
        batch_size: clips per forward pass (1: one at a time, as the official code runs)."""
        try:
            import cotracker  # noqa: F401  (explicit, so a blocked parent package is caught)
            from cotracker.predictor import CoTrackerPredictor
            from cotracker.version import __version__
        except ImportError as e:
            raise TrackerError(_MISSING) from e
        if checkpoint is None and not allow_random_init:
            raise TrackerError("track.checkpoint is not set: CoTracker needs its weights "
                               "(a local path or fsspec URI to the offline CoTracker3 checkpoint)")
        if int(batch_size) < 1:
            raise TrackerError(f"batch_size must be >= 1, got {batch_size}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise TrackerError(f"device {device!r} requested but CUDA is not available")

        state_dict, digest = (None, "random-init") if checkpoint is None else _load(checkpoint)
        # Building initialises random weights (and the official module seeds torch on import);
        # keep the caller's global RNG untouched.
        with torch.random.fork_rng(devices=[]):
            predictor = CoTrackerPredictor(checkpoint=None, offline=True, window_len=window_len)
        if state_dict is not None:
            try:
                predictor.model.load_state_dict(state_dict)
            except RuntimeError as e:
                raise TrackerError(f"checkpoint {checkpoint} does not fit CoTracker3 offline "
                                   f"(window_len={window_len}): {e}") from e
        if model_resolution is not None:
            stride = predictor.model.stride
            if len(model_resolution) != 2 or any(int(v) < stride or int(v) % stride
                                                  for v in model_resolution):
                raise TrackerError(f"model_resolution must be (H, W), multiples of {stride}, "
                                   f"got {model_resolution}")
            predictor.interp_shape = tuple(int(v) for v in model_resolution)
        self.predictor = predictor.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.version = f"{__version__}+{digest}"
        if model_resolution is not None:  # another resolution gives other tracks
            self.version += ".r{}x{}".format(*predictor.interp_shape)

    def track(self, clips: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_inputs(clips, queries)
        b, t, h, w = clips.shape[:4]
        if h < 2 or w < 2:
            raise TrackerError(f"frames must be at least 2x2, got {w}x{h}")
        queries = np.asarray(queries, dtype=np.float32)
        if not np.isfinite(queries).all():
            raise TrackerError("queries must be finite")
        n = queries.shape[1]
        tracks = np.zeros((b, t, n, 2), np.float32)
        visible = np.zeros((b, t, n), bool)
        if n:
            with torch.inference_mode():
                for start in range(0, b, self.batch_size):
                    part = slice(start, start + self.batch_size)
                    video = torch.tensor(clips[part], device=self.device)
                    video = video.permute(0, 1, 4, 2, 3).float()  # (B, T, 3, H, W), 0..255
                    q = torch.zeros((len(video), n, 3), device=self.device)  # (t, x, y), frame 0
                    q[:, :, 1:] = torch.from_numpy(queries[part]).to(self.device)
                    tr, vis = self._forward(video, q)
                    tracks[part] = tr.float().cpu().numpy()
                    visible[part] = vis.cpu().numpy()
        # The query frame defines the track: the point is where it was asked for and it is
        # visible there. The predictor nearly does this already, but its rescaling round trip
        # leaves float error; make it exact, as the interface promises.
        tracks[:, 0] = queries
        visible[:, 0] = True
        return tracks, visible

    def _forward(self, video: torch.Tensor, queries: torch.Tensor):
        """(B, T, N, 2) tracks and (B, T, N) visibility of B clips: one clip straight through
        the official predictor, more through vmap over it (module docstring)."""
        if len(video) == 1:
            return self.predictor(video, queries=queries)

        def one_clip(clip, clip_queries):
            tr, vis = self.predictor(clip[None], queries=clip_queries[None])
            return tr[0], vis[0]
        return torch.func.vmap(one_clip, randomness="error")(video, queries)


def _load(checkpoint: str) -> tuple[dict, str]:
    """(state dict, short sha256 of the checkpoint bytes), loaded with weights_only=True."""
    import fsspec

    try:
        with fsspec.open(checkpoint, "rb") as f:
            data = f.read()
    except Exception as e:  # noqa: BLE001 - any filesystem error means: cannot read it
        raise TrackerError(f"cannot read CoTracker checkpoint {checkpoint}: {e}") from e
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError and friends
        raise TrackerError(f"CoTracker checkpoint {checkpoint} is not a plain weights file "
                           f"(loaded with weights_only=True): {e}") from e
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TrackerError(f"CoTracker checkpoint {checkpoint} holds no state dict")
    return obj, hashlib.sha256(data).hexdigest()[:12]
