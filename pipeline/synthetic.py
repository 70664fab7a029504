"""Synthetic videos with exact ground-truth motion, for tests and demos of the pipeline.

Every clip is rendered from seeded, band-limited random-noise textures (trackable by
Lucas-Kanade) and encoded losslessly enough (H.264, CRF 14) that trackers stay well under a
pixel of error. Each `<clip>.mp4` gets a JSON sidecar `<clip>.mp4.gt.json` describing the
clip *as a player shows it* (upright), read back with `load_ground_truth`.

Kinds:
  translate  a textured object translates over a static textured background
  rotate     the object turns about its centre (positive = clockwise on screen)
  scale      the object grows about its centre
  static     nothing moves (the object, if any, is part of the still scene)
  pan        camera-only motion: each frame is a window sliding over a larger texture
  follow     a camera panning as `pan` and an object translating in the frame as
             `translate` (footage shot with a moving camera; not in the standard set)
  cut        two shots, each a `translate` scene with its own background and object;
             frames [0, cut_frame) are shot 0, [cut_frame, num_frames) shot 1

Coordinates follow `schemas.coords`: (x, y) = (column, row), pixel centres at integers.
Frames are RGB. Object motion is a 2x3 affine A_t mapping frame-0 (of the object's shot)
pixel coordinates to frame-t coordinates; frames are rendered with cv2.warpAffine
(INTER_LINEAR) of the object texture and its anti-aliased mask by exactly A_t, so the
ground truth is the renderer's own transform.

Display rotation: `ClipSpec.rotation` is the clockwise turn (0/90/180/270) a player applies
to the decoded frames (the `schemas.coords` convention). The encoded frames are the upright
frames turned the other way, and the container carries a display matrix; FFmpeg/PyAV
express that matrix as a COUNTER-clockwise angle, so a clip with rotation=90 reads back as
`VideoFrame.rotation == -90` (180 reads back as -180, 270 as 90). A decoder therefore gets
the clockwise turn as `(-frame.rotation) % 360`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Optional

import av
import cv2
import numpy as np


STANDARD_KINDS = ("translate", "rotate", "scale", "static", "pan", "cut")
KINDS = STANDARD_KINDS + ("follow",)


@dataclass(frozen=True)
class Texture:
    """How a clip's surfaces look, on top of its shot's look (`_LOOKS`)."""
    background: tuple               # octaves: (feature size in pixels, weight), ...
    object: tuple
    background_std: float = 1.0     # scales the look's background contrast
    brightness: tuple = (0.0, 0.0)  # added to the look's (background, object) means


_FINE_OCTAVES = ((2, 0.55), (4, 1.0), (8, 0.9), (16, 0.7), (32, 0.5))
TEXTURES = {
    "fine": Texture(_FINE_OCTAVES, _FINE_OCTAVES),
    # the toy world: a calmer, darker background and a brighter, blotchy object, which stands
    # out from the background even when an image of it is blurred
    "coarse": Texture(background=((8, 0.5), (16, 0.8), (32, 1.0)),
                      object=((8, 0.6), (16, 1.0)), background_std=0.6,
                      brightness=(-35.0, 45.0)),
}
GT_SUFFIX = ".gt.json"
GT_FORMAT = "dragvid-synthetic-gt/1"
_MARGIN = 32  # object canvas margin (pixels) around the frame-0 frame area
# Un-rotation applied to upright frames before encoding, per clockwise display rotation:
# rotate_frame(decoded, r) == upright  <=>  decoded == np.rot90(upright, _ENCODE_K[r]).
_ENCODE_K = {0: 0, 90: 1, 180: 2, 270: -1}


# --------------------------------------------------------------------------------------
# Spec and ground truth


@dataclass
class ClipSpec:
    name: str
    kind: str
    width: int = 320
    height: int = 240
    fps: int = 24
    num_frames: int = 48
    seed: int = 0
    object_size: float = 0.3            # object height as a fraction of the short side
    shape: str = "rounded_rect"         # rounded_rect | disc
    velocity: tuple = (1.75, 0.75)      # translate/cut object motion, px per frame
    angular_velocity: float = 1.0       # rotate, degrees per frame, clockwise on screen
    scale_rate: float = 0.01            # scale, relative growth per frame
    pan_velocity: tuple = (2.5, 1.0)    # pan/follow: window motion over the texture, px per
                                        # frame (scene content moves by minus this)
    cut_frame: Optional[int] = None     # cut: first frame of shot 1; default num_frames // 2
    rotation: int = 0                   # display rotation stored in the container (clockwise)
    crf: int = 14
    preset: str = "medium"
    gop: Optional[int] = None           # keyframe interval in frames (None: x264's default)
    texture: str = "fine"               # fine: busy multi-scale texture everywhere;
                                        # coarse: a calm, darker background and a brighter,
                                        # blotchy object (the toy world)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown clip kind {self.kind!r}; expected one of {KINDS}")
        if self.texture not in TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}; expected one of {tuple(TEXTURES)}")
        if self.rotation % 90 or self.rotation % 360 not in _ENCODE_K:
            raise ValueError(f"rotation must be 0/90/180/270, got {self.rotation}")
        if self.num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        if self.kind == "cut":
            c = self.effective_cut_frame()
            if not 0 < c < self.num_frames:
                raise ValueError(f"cut_frame {c} must be inside (0, {self.num_frames})")

    def effective_size(self) -> tuple[int, int]:
        """(width, height) actually rendered: yuv420p needs even sizes, so odd ones round down."""
        w, h = int(self.width) & ~1, int(self.height) & ~1
        if w < 16 or h < 16:
            raise ValueError(f"clip size {self.width}x{self.height} too small (min 16x16)")
        return w, h

    def effective_cut_frame(self) -> Optional[int]:
        if self.kind != "cut":
            return None
        return self.num_frames // 2 if self.cut_frame is None else int(self.cut_frame)


def _h(a: np.ndarray) -> np.ndarray:
    """2x3 -> 3x3 homogeneous."""
    return np.vstack([np.asarray(a, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])


class GroundTruth:
    """Exact motion of one synthetic clip, in upright pixel coordinates.

    Attributes: kind, width, height, fps, num_frames, cut_frame (int or None), rotation (the
    display rotation stored in the file; all geometry here is upright), name, seed.
    """

    def __init__(self, *, kind: str, width: int, height: int, fps: float, num_frames: int,
                 cut_frame: Optional[int], affines: np.ndarray, shots: list, rotation: int = 0,
                 name: str = "", seed: int = 0, spec: Optional[dict] = None,
                 camera: Optional[np.ndarray] = None):
        self.kind = kind
        self.width = int(width)
        self.height = int(height)
        self.fps = fps
        self.num_frames = int(num_frames)
        self.cut_frame = None if cut_frame is None else int(cut_frame)
        self.rotation = int(rotation)
        self.name = name
        self.seed = int(seed)
        self.spec = spec or {}
        # affines[t]: frame (start of t's shot) -> frame t; object motion, or for `pan` the
        # camera-induced motion of every pixel; identity for `static`.
        self.affines = np.asarray(affines, np.float64).reshape(self.num_frames, 2, 3)
        # camera[t]: frame (start of t's shot) -> frame t for the background (the camera's
        # motion); identity but for `pan` (equal to affines) and `follow`.
        self.camera = (np.stack([np.eye(2, 3)] * self.num_frames) if camera is None else
                       np.asarray(camera, np.float64).reshape(self.num_frames, 2, 3))
        # shots: [{"start": s, "end": e, "object": {...} or None}], object = geometry that
        # moves (None for static/pan).
        self.shots = shots
        self._mask_cache: dict = {}

    # -- frames and shots
    def _check_t(self, t) -> int:
        if isinstance(t, (bool, np.bool_)) or int(t) != t:
            raise ValueError(f"frame index must be an integer, got {t!r}")
        t = int(t)
        if not 0 <= t < self.num_frames:
            raise ValueError(f"frame {t} outside [0, {self.num_frames})")
        return t

    def shot_index(self, t) -> int:
        t = self._check_t(t)
        for i, s in enumerate(self.shots):
            if s["start"] <= t < s["end"]:
                return i
        raise AssertionError("shots do not cover the clip")

    # -- geometry
    def transform(self, t0, t1) -> np.ndarray:
        """2x3 affine taking the upright position of an object point at frame t0 to frame t1.

        For `pan` it is the camera motion of every pixel; for `static` the identity. For
        `cut`, t0 and t1 in different shots raise ValueError.
        """
        t0, t1 = self._check_t(t0), self._check_t(t1)
        if self.shot_index(t0) != self.shot_index(t1):
            raise ValueError(f"frames {t0} and {t1} are in different shots (cut at "
                             f"{self.cut_frame}); no transform relates them")
        m = _h(self.affines[t1]) @ np.linalg.inv(_h(self.affines[t0]))
        return m[:2].copy()

    def camera_transform(self, t0, t1) -> np.ndarray:
        """2x3 affine taking the upright position of a background point at frame t0 to frame
        t1 (the identity when the camera is still)."""
        t0, t1 = self._check_t(t0), self._check_t(t1)
        return (_h(self.camera[t1]) @ np.linalg.inv(_h(self.camera[t0])))[:2].copy()

    def map_points(self, pts, t0, t1) -> np.ndarray:
        pts = np.asarray(pts, np.float64)
        a = self.transform(t0, t1)
        return pts @ a[:, :2].T + a[:, 2]

    def object_mask(self, t) -> np.ndarray:
        """(height, width) bool: the pixels covered by the (moving) object at frame t.

        Exactly the renderer's anti-aliased mask thresholded at 0.5. All False for
        static/pan (nothing moves independently of the camera).
        """
        t = self._check_t(t)
        obj = self.shots[self.shot_index(t)]["object"]
        if obj is None:
            return np.zeros((self.height, self.width), bool)
        return _warp_mask(self._mask0(self.shot_index(t)), self.affines[t],
                          self.width, self.height) > 0.5

    def _mask0(self, shot: int) -> np.ndarray:
        if shot not in self._mask_cache:
            self._mask_cache[shot] = _object_canvas_mask(self.shots[shot]["object"],
                                                         self.width, self.height)
        return self._mask_cache[shot]

    def moving(self, t0, t1) -> bool:
        """Whether anything other than the camera moves between t0 and t1.

        Frames in different shots of a `cut` clip count as moving (the content changes and
        no camera motion explains it).
        """
        t0, t1 = self._check_t(t0), self._check_t(t1)
        if self.shot_index(t0) != self.shot_index(t1):
            return True
        if self.shots[self.shot_index(t0)]["object"] is None:
            return False
        return not np.allclose(self.transform(t0, t1), np.eye(2, 3), atol=1e-9)

    # -- (de)serialisation
    def to_json(self) -> dict:
        return {
            "format": GT_FORMAT, "name": self.name, "kind": self.kind, "seed": self.seed,
            "width": self.width, "height": self.height, "fps": self.fps,
            "num_frames": self.num_frames, "cut_frame": self.cut_frame,
            "rotation": self.rotation, "shots": self.shots,
            "affines": [[float(v) for v in a.ravel()] for a in self.affines],
            "camera": [[float(v) for v in a.ravel()] for a in self.camera],
            "spec": self.spec,
        }

    @classmethod
    def from_json(cls, d: dict) -> "GroundTruth":
        if d.get("format") != GT_FORMAT:
            raise ValueError(f"not a synthetic ground-truth file (format {d.get('format')!r})")
        return cls(kind=d["kind"], width=d["width"], height=d["height"], fps=d["fps"],
                   num_frames=d["num_frames"], cut_frame=d["cut_frame"],
                   affines=np.array(d["affines"], np.float64), shots=d["shots"],
                   rotation=d.get("rotation", 0), name=d.get("name", ""),
                   seed=d.get("seed", 0), spec=d.get("spec"),
                   camera=np.array(d["camera"], np.float64) if "camera" in d else None)

    def __repr__(self) -> str:
        return (f"GroundTruth({self.name!r}, kind={self.kind}, {self.width}x{self.height}, "
                f"{self.num_frames} frames @ {self.fps}, cut_frame={self.cut_frame}, "
                f"rotation={self.rotation})")


def load_ground_truth(video_path) -> GroundTruth:
    """The ground truth of a clip written by `make_clip`, from `<video_path>.gt.json`."""
    with open(os.fspath(video_path) + GT_SUFFIX) as f:
        return GroundTruth.from_json(json.load(f))


# --------------------------------------------------------------------------------------
# Textures and geometry


def _rng(seed: int, kind: str, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(kind.encode()),
                                                         int(stream)]))


def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth zero-mean noise with features about `cell` pixels across."""
    sh, sw = h // cell + 4, w // cell + 4
    small = rng.standard_normal((sh, sw)).astype(np.float32)
    big = cv2.resize(small, (sw * cell, sh * cell), interpolation=cv2.INTER_CUBIC)
    o = 2 * cell - cell // 2
    return big[o:o + h, o:o + w]


def _texture(rng: np.random.Generator, h: int, w: int, mean: float, std: float,
             tint=(0.0, 0.0, 0.0), chroma: float = 14.0,
             octaves=_FINE_OCTAVES) -> np.ndarray:
    """(h, w, 3) float32 RGB multi-scale noise: strong luminance texture, mild colour."""
    lum = np.zeros((h, w), np.float32)
    for cell, weight in octaves:
        lum += weight * _noise(rng, h, w, cell)
    lum = cv2.GaussianBlur(lum, (0, 0), 0.7)
    lum = (lum - lum.mean()) / (lum.std() + 1e-6)
    rgb = mean + std * lum[..., None] + np.asarray(tint, np.float32)
    for c in range(3):
        rgb[..., c] += chroma * _noise(rng, h, w, 16)
    return np.clip(rgb, 0, 255).astype(np.float32)


def _object_canvas_mask(obj: dict, width: int, height: int) -> np.ndarray:
    """Anti-aliased soft mask (float32 0..1) of the object on its canvas: frame-0
    coordinates shifted by _MARGIN on each side."""
    ys, xs = np.mgrid[0:height + 2 * _MARGIN, 0:width + 2 * _MARGIN].astype(np.float64)
    px = xs - _MARGIN - obj["center"][0]
    py = ys - _MARGIN - obj["center"][1]
    if obj["shape"] == "disc":
        d = np.hypot(px, py) - obj["radius"]
    elif obj["shape"] == "rounded_rect":
        r = obj["corner_radius"]
        qx = np.abs(px) - (obj["half_size"][0] - r)
        qy = np.abs(py) - (obj["half_size"][1] - r)
        d = (np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
             + np.minimum(np.maximum(qx, qy), 0) - r)
    else:
        raise ValueError(f"unknown shape {obj['shape']!r}")
    return np.clip(0.5 - d, 0.0, 1.0).astype(np.float32)


def _canvas_to_frame(a: np.ndarray) -> np.ndarray:
    """2x3 canvas -> frame t, given a (frame-0 -> frame t)."""
    shift = np.array([[1, 0, -_MARGIN], [0, 1, -_MARGIN], [0, 0, 1]], np.float64)
    return (_h(a) @ shift)[:2]


def _warp_mask(mask0: np.ndarray, a: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.warpAffine(mask0, _canvas_to_frame(a), (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _make_object(spec: ClipSpec, width: int, height: int, center) -> dict:
    hh = spec.object_size * min(width, height) / 2.0
    if spec.shape == "disc":
        return {"shape": "disc", "center": [float(center[0]), float(center[1])],
                "radius": float(hh)}
    if spec.shape == "rounded_rect":
        return {"shape": "rounded_rect", "center": [float(center[0]), float(center[1])],
                "half_size": [float(1.3 * hh), float(hh)], "corner_radius": float(0.5 * hh)}
    raise ValueError(f"unknown shape {spec.shape!r}")


def _about(center, lin: np.ndarray) -> np.ndarray:
    """2x3 affine applying the 2x2 `lin` about `center`."""
    c = np.asarray(center, np.float64)
    return np.hstack([lin, (c - lin @ c)[:, None]])


def _translation(v) -> np.ndarray:
    return np.array([[1.0, 0.0, v[0]], [0.0, 1.0, v[1]]])


# Per-shot looks: (background mean, std, tint), (object mean, std, tint). Shots of a `cut`
# clip differ strongly in brightness and hue so their histograms are far apart.
_LOOKS = [
    ((118.0, 42.0, (-12.0, 4.0, 14.0)), (132.0, 48.0, (26.0, 6.0, -22.0))),
    ((88.0, 34.0, (-20.0, -4.0, 30.0)), (112.0, 40.0, (-10.0, 24.0, -6.0))),
    ((176.0, 34.0, (30.0, 8.0, -28.0)), (150.0, 42.0, (-24.0, 18.0, 26.0))),
]


def _render_shot(spec: ClipSpec, width: int, height: int, n: int, shot: int, look: int,
                 velocity) -> tuple[list, np.ndarray, dict, np.ndarray]:
    """Frames (list of uint8 RGB), per-frame object affines (n,2,3), object dict (or None),
    per-frame camera affines (n,2,3)."""
    rng = _rng(spec.seed, spec.kind, shot)
    (bm, bs, bt), (om, os_, ot) = _LOOKS[look]
    texture = TEXTURES[spec.texture]
    bg_octaves, object_octaves = texture.background, texture.object
    bs *= texture.background_std
    bm, om = bm + texture.brightness[0], om + texture.brightness[1]
    kind = spec.kind
    t = np.arange(n, dtype=np.float64)
    frame_c = ((width - 1) / 2.0, (height - 1) / 2.0)

    still = np.stack([np.eye(2, 3)] * n)
    if kind in ("pan", "follow"):
        v = np.asarray(spec.pan_velocity, np.float64)
        travel = np.abs(v) * max(n - 1, 0)
        bw = int(np.ceil(width + travel[0])) + 2 * _MARGIN
        bh = int(np.ceil(height + travel[1])) + 2 * _MARGIN
        big = _texture(rng, bh, bw, bm, bs, bt, octaves=bg_octaves)
        o0 = np.array([_MARGIN + max(0.0, -v[0] * (n - 1)), _MARGIN + max(0.0, -v[1] * (n - 1))])
        camera = np.stack([_translation(-v * ti) for ti in t])
        backgrounds = []
        for ti in t:
            o = o0 + v * ti  # window origin on the big texture
            m = np.array([[1.0, 0.0, -o[0]], [0.0, 1.0, -o[1]]])
            backgrounds.append(cv2.warpAffine(big, m, (width, height), flags=cv2.INTER_LINEAR,
                                              borderMode=cv2.BORDER_REFLECT_101))
        if kind == "pan":
            frames = [np.clip(np.rint(f), 0, 255).astype(np.uint8) for f in backgrounds]
            return frames, camera, None, camera
    else:
        camera = still
        backgrounds = [_texture(rng, height, width, bm, bs, bt, octaves=bg_octaves)] * n
    tex = _texture(rng, height + 2 * _MARGIN, width + 2 * _MARGIN, om, os_, ot,
                   octaves=object_octaves)
    if kind in ("translate", "cut", "follow"):
        v = np.asarray(velocity, np.float64)
        center = np.asarray(frame_c) - v * (n - 1) / 2.0
        affines = np.stack([_translation(v * ti) for ti in t])
    elif kind == "rotate":
        center = frame_c
        th = np.deg2rad(spec.angular_velocity * t)
        affines = np.stack([_about(center, np.array([[np.cos(a), -np.sin(a)],
                                                     [np.sin(a), np.cos(a)]])) for a in th])
    elif kind == "scale":
        center = frame_c
        s = (1.0 + spec.scale_rate) ** t
        affines = np.stack([_about(center, np.eye(2) * si) for si in s])
    elif kind == "static":
        center = frame_c
        affines = still
    else:  # pragma: no cover - guarded by ClipSpec
        raise ValueError(kind)
    obj = _make_object(spec, width, height, center)
    mask0 = _object_canvas_mask(obj, width, height)
    frames = []
    for a, bg in zip(affines, backgrounds):
        m = _warp_mask(mask0, a, width, height)[..., None]
        o = cv2.warpAffine(tex, _canvas_to_frame(a), (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
        f = bg * (1.0 - m) + o * m
        frames.append(np.clip(np.rint(f), 0, 255).astype(np.uint8))
    # In a static clip nothing moves: the object is part of the still scene, not "an object".
    return frames, affines, (None if kind == "static" else obj), camera


def render_frames(spec: ClipSpec) -> tuple[np.ndarray, GroundTruth]:
    """Render the upright frames (num_frames, H, W, 3) uint8 RGB and their ground truth."""
    width, height = spec.effective_size()
    n = spec.num_frames
    if spec.kind == "cut":
        c = spec.effective_cut_frame()
        v2 = (-spec.velocity[0], spec.velocity[1])
        f0, a0, o0, c0 = _render_shot(spec, width, height, c, 0, 1, spec.velocity)
        f1, a1, o1, c1 = _render_shot(spec, width, height, n - c, 1, 2, v2)
        frames, affines, camera = f0 + f1, np.concatenate([a0, a1]), np.concatenate([c0, c1])
        shots = [{"start": 0, "end": c, "object": o0}, {"start": c, "end": n, "object": o1}]
    else:
        frames, affines, obj, camera = _render_shot(spec, width, height, n, 0, 0, spec.velocity)
        shots = [{"start": 0, "end": n, "object": obj}]
    gt = GroundTruth(kind=spec.kind, width=width, height=height, fps=spec.fps, num_frames=n,
                     cut_frame=spec.effective_cut_frame(), affines=affines, shots=shots,
                     rotation=spec.rotation % 360, name=spec.name, seed=spec.seed,
                     spec=_jsonable(dataclasses.asdict(spec)), camera=camera)
    return np.stack(frames), gt


def _jsonable(d: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


# --------------------------------------------------------------------------------------
# Encoding


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H*3/2, W) uint8 planar I420, BT.601 limited range (what
    decoders assume for untagged H.264), chroma as 2x2 box means. H and W must be even."""
    h, w = rgb.shape[:2]
    x = rgb.astype(np.float32)
    y = 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0
    m = x.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    u = 128.0 + (-37.797 * m[..., 0] - 74.203 * m[..., 1] + 112.0 * m[..., 2]) / 255.0
    v = 128.0 + (112.0 * m[..., 0] - 93.786 * m[..., 1] - 18.214 * m[..., 2]) / 255.0
    q = lambda a: np.clip(np.rint(a), 0, 255).astype(np.uint8)  # noqa: E731
    return np.concatenate([q(y).ravel(), q(u).ravel(), q(v).ravel()]).reshape(h * 3 // 2, w)


def _write_video(path: str, frames: Iterable[np.ndarray], width: int, height: int, fps,
                 *, crf: int = 14, preset: str = "medium", display_cw: int = 0,
                 fmt: str = "rgb24", gop: Optional[int] = None) -> None:
    """H.264 (libx264, yuv420p) .mp4, single-threaded so the bytes are deterministic.

    `frames` are in decoded orientation; `display_cw` is the clockwise turn the container
    tells players to apply (stored as the counter-clockwise angle FFmpeg uses).
    The moov atom is written at the end (no faststart), as FFmpeg does by default.
    """
    with av.open(path, "w", format="mp4") as out:
        st = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.codec_context.thread_count = 1  # thread count changes x264's output bytes
        st.options = {"crf": str(crf), "preset": preset}
        if gop:
            st.codec_context.gop_size = gop
        if display_cw % 360:
            ccw = (-display_cw) % 360
            st.set_display_rotation(ccw - 360 if ccw > 180 else ccw)
        for i, arr in enumerate(frames):
            if fmt == "rgb24":  # our own conversion: swscale's was seen to vary run to run
                arr = rgb_to_yuv420p(arr)
            fr = av.VideoFrame.from_ndarray(arr, format="yuv420p")
            fr.pts = i
            for pkt in st.encode(fr):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def make_clip(spec: ClipSpec, path) -> GroundTruth:
    """Render and encode `spec` to `path` (.mp4) and write `<path>.gt.json`."""
    path = os.fspath(path)
    frames, gt = render_frames(spec)
    k = _ENCODE_K[spec.rotation % 360]
    enc = (np.ascontiguousarray(np.rot90(f, k)) if k else f for f in frames)
    ew, eh = (gt.height, gt.width) if k in (1, -1) else (gt.width, gt.height)
    _write_video(path, enc, ew, eh, spec.fps, crf=spec.crf, preset=spec.preset,
                 display_cw=spec.rotation % 360, gop=spec.gop)
    with open(path + GT_SUFFIX, "w") as f:
        json.dump(gt.to_json(), f)
    return gt


def standard_set(out_dir, seed: int = 0, width: int = 320, height: int = 240) -> list:
    """One clip of each standard kind, `<kind>-<seed>.mp4` in out_dir: [(path, GroundTruth)]."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    result = []
    for kind in STANDARD_KINDS:
        path = os.path.join(out_dir, f"{kind}-{seed}.mp4")
        spec = ClipSpec(name=f"{kind}-{seed}", kind=kind, width=width, height=height, seed=seed)
        result.append((path, make_clip(spec, path)))
    return result


def toy_set(out_dir, count: int, seed: int = 0, size: int = 128, num_frames: int = 32,
            speed: tuple = (1.0, 2.5)) -> list:
    """The toy world: `count` square `translate` clips, `toy-<seed + i>.mp4`, each with its own
    object (disc or rounded rectangle, 25-40% of the frame), direction (uniform) and speed
    (px per frame, uniform in `speed`), coarse textures: [(path, GroundTruth)].
    The object passes the frame centre mid-clip, so it stays (mostly) in view."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    result = []
    for i in range(count):
        clip_seed = seed + i
        r = _rng(clip_seed, "toy", 0)
        angle, v = r.uniform(0, 2 * np.pi), r.uniform(*speed)
        spec = ClipSpec(name=f"toy-{clip_seed}", kind="translate", width=size, height=size,
                        num_frames=num_frames, seed=clip_seed, texture="coarse",
                        object_size=float(r.uniform(0.25, 0.4)),
                        shape=str(r.choice(["disc", "rounded_rect"])),
                        velocity=(float(v * np.cos(angle)), float(v * np.sin(angle))))
        path = os.path.join(out_dir, f"{spec.name}.mp4")
        result.append((path, make_clip(spec, path)))
    return result


def translate_pair_shards(videos_dir, out_dir, resolution: int = 64) -> str:
    """Real pair shards, made in this process by the pipeline's own stages (`LocalRun`, the
    built-in tracker): three units of uneven size (about 6, 6, 3 pairs) from five translating
    clips, for the trainer's tests and benchmark. Returns out_dir."""
    from pipeline.config import from_dict
    from pipeline.plan import Unit
    from pipeline.stages import LocalRun

    os.makedirs(videos_dir, exist_ok=True)
    paths = []
    for i in range(5):
        path = os.path.join(os.fspath(videos_dir), f"translate-{i}.mp4")
        make_clip(ClipSpec(name=f"translate-{i}", kind="translate", width=160, height=120,
                           num_frames=24, seed=i, velocity=(1.5 + 0.25 * i, 0.75 - 0.5 * i)),
                  path)
        paths.append(path)
    cfg = from_dict({"output": {"resolution": resolution}, "sample": {"pairs_per_video": 3},
                     "track": {"grid_size": 12}})
    with LocalRun(cfg) as local:
        for u, unit_paths in enumerate([paths[0:2], paths[2:4], paths[4:]]):
            local.run(Unit(f"pairs-{u:06d}", "files", tuple(unit_paths)), os.fspath(out_dir))
    return os.fspath(out_dir)


# --------------------------------------------------------------------------------------
# Bad inputs

HUGE_SIZE = (7680, 4352)  # 33.4 Mpx > 3840*2160*2


def _write_audio_only(path: str, seconds: float = 1.0, rate: int = 48000) -> None:
    with av.open(path, "w", format="mp4") as out:
        st = out.add_stream("aac", rate=rate)
        st.layout = "mono"
        st.codec_context.thread_count = 1
        n = int(seconds * rate)
        tt = np.arange(n) / rate
        samples = (0.3 * np.sin(2 * np.pi * 440.0 * tt)).astype(np.float32)
        chunk = 1024
        for i in range(0, n, chunk):
            part = samples[i:i + chunk][None, :]
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp",
                                            layout="mono")
            fr.sample_rate = rate
            fr.pts = i
            for pkt in st.encode(fr):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def make_bad_inputs(out_dir) -> dict:
    """Write awkward inputs into out_dir; {path: expected manifest status prefix}.

    The `missing.mp4` key names a path that is deliberately not created (removed if
    present). `rotated.mp4` is a valid clip (with sidecar) whose frames need a 90-degree
    clockwise display turn.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    p = lambda name: os.path.join(out_dir, name)  # noqa: E731
    expected = {}

    open(p("empty.mp4"), "wb").close()
    expected[p("empty.mp4")] = "failed:EmptyFile"

    # Generated mp4 (moov at the end), cut to 40%: no moov atom, undecodable.
    tmp = p(".truncated-full.mp4")
    make_clip(ClipSpec(name="truncated", kind="translate", width=160, height=120,
                       num_frames=24, seed=1), tmp)
    with open(tmp, "rb") as f:
        data = f.read()
    os.remove(tmp)
    os.remove(tmp + GT_SUFFIX)
    with open(p("truncated.mp4"), "wb") as f:
        f.write(data[: int(len(data) * 0.4)])
    expected[p("truncated.mp4")] = "failed:DecodeError"

    with open(p("text.mp4"), "w") as f:
        f.write("This is not a video.\n" * 20)
    expected[p("text.mp4")] = "failed:DecodeError"

    _write_audio_only(p("audio_only.mp4"))
    expected[p("audio_only.mp4")] = "failed:NoVideoStream"

    frames, _ = render_frames(ClipSpec(name="one_frame", kind="static", num_frames=1, seed=2))
    _write_video(p("one_frame.mp4"), frames, frames.shape[2], frames.shape[1], 24)
    expected[p("one_frame.mp4")] = "filtered:too-short"

    hw, hh = HUGE_SIZE
    flat = [np.full((hh * 3 // 2, hw), v, np.uint8) for v in (60, 180)]  # grey yuv420p
    _write_video(p("huge.mp4"), flat, hw, hh, 24, preset="ultrafast", fmt="yuv420p")
    expected[p("huge.mp4")] = "failed:VideoTooLarge"

    make_clip(ClipSpec(name="rotated", kind="translate", seed=0, rotation=90), p("rotated.mp4"))
    expected[p("rotated.mp4")] = "ok"

    if os.path.lexists(p("missing.mp4")):
        os.remove(p("missing.mp4"))
    expected[p("missing.mp4")] = "failed:FileNotFoundError"
    return expected
