"""Reading DragBench samples safely.

A DragBench sample is a folder:

| file               | content                                                              |
| original_image.png | the image to edit, RGB                                               |
| user_drag.png      | a rendering of the drags for people (not read here)                  |
| meta_data.pkl      | pickled dict: `prompt` str, `points` [[x, y], ...] alternating       |
|                    | handle, target, handle, target..., `mask` uint8 (H, W) of 0/1        |

Points are pixel coordinates of original_image.png in the `schemas.coords` convention: x right,
y down, origin top-left, pixel centres at integers (the file stores [x, y]; on the real samples
every handle lies inside the mask at mask[y, x], not at mask[x, y]).

Pickles run code when loaded. `meta_data.pkl` is read with `SafeUnpickler`, which resolves only
the numpy globals that rebuild arrays, dtypes and numpy scalars (both the `numpy.core` spelling
numpy 1.x writes, as in the real DragBench files, and the `numpy._core` spelling of numpy 2.x);
any other global (os.system, builtins.eval, ...) is a DragBenchError before anything runs.
"""
from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass

import numpy as np
from numpy._core import multiarray as _multiarray
from numpy._core import numeric as _numeric
from PIL import Image

from schemas.coords import inside_image

IMAGE_FILE = "original_image.png"
META_FILE = "meta_data.pkl"
META_KEYS = ("prompt", "points", "mask")


class DragBenchError(ValueError):
    """A DragBench sample that cannot be read or breaks the format."""


@dataclass(eq=False)
class DragBenchSample:
    name: str                     # the folder's name
    path: str                     # the folder
    image: np.ndarray             # (H, W, 3) uint8 RGB
    mask: np.ndarray              # (H, W) uint8, 0 or 255
    handles: np.ndarray           # (N, 2) float64, x/y in image pixels
    targets: np.ndarray           # (N, 2) float64, x/y in image pixels
    prompt: str


# (module, name) -> object. The only globals a meta_data.pkl may name. The objects come from
# this table, never from importing the module the pickle names.
_ALLOWED = {}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_mod}.multiarray", "_reconstruct")] = _multiarray._reconstruct  # ndarray, p<=4
    _ALLOWED[(f"{_mod}.multiarray", "scalar")] = _multiarray.scalar              # numpy scalars
    _ALLOWED[(f"{_mod}.numeric", "_frombuffer")] = _numeric._frombuffer          # ndarray, p5
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that admits only the numpy array reconstruction globals."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DragBenchError(f"{META_FILE}: forbidden global {module}.{name}") from None


def _read_meta(path: str):
    with open(path, "rb") as f:
        data = f.read()
    try:
        return SafeUnpickler(io.BytesIO(data)).load()
    except DragBenchError:
        raise
    except Exception as exc:  # untrusted bytes: any failure is the file's fault
        raise DragBenchError(f"{META_FILE}: not a readable pickle "
                             f"({type(exc).__name__}: {exc})") from exc


def _read_image(path: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:  # PIL raises several unrelated types for bad files
        raise DragBenchError(f"{IMAGE_FILE}: not a readable image "
                             f"({type(exc).__name__}: {exc})") from exc


def _parse_points(points, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(points, (list, tuple, np.ndarray)):
        raise DragBenchError(f"{META_FILE}: points must be a list of [x, y], "
                             f"got {type(points).__name__}")
    if len(points) == 0:
        raise DragBenchError(f"{META_FILE}: no points; a sample needs at least one "
                             "handle-target pair")
    try:
        pts = np.array(points, dtype=np.float64)
    except (TypeError, ValueError):
        pts = None
    if pts is None or pts.ndim != 2 or pts.shape[1] != 2:
        raise DragBenchError(f"{META_FILE}: points must be a list of [x, y] pairs of numbers")
    if len(pts) % 2:
        raise DragBenchError(f"{META_FILE}: {len(pts)} points; handles and targets must "
                             "alternate, so the count must be even")
    inside = inside_image(pts, (w, h))
    if not inside.all():
        i = int(np.argmin(inside))
        role = "handle" if i % 2 == 0 else "target"
        raise DragBenchError(f"{META_FILE}: point {i} ({role} of pair {i // 2}) at "
                             f"x={pts[i, 0]:g}, y={pts[i, 1]:g} lies outside the "
                             f"{w}x{h} image")
    return pts[0::2].copy(), pts[1::2].copy()


def _parse_mask(mask, h: int, w: int) -> np.ndarray:
    if not isinstance(mask, np.ndarray):
        raise DragBenchError(f"{META_FILE}: mask must be a numpy array, "
                             f"got {type(mask).__name__}")
    if mask.shape != (h, w):
        raise DragBenchError(f"{META_FILE}: mask shape {tuple(mask.shape)} differs from the "
                             f"image's {(h, w)}")
    if mask.dtype != np.bool_ and not np.issubdtype(mask.dtype, np.integer):
        raise DragBenchError(f"{META_FILE}: mask dtype {mask.dtype} is not an integer type")
    values = {int(v) for v in np.unique(mask)}
    if not (values <= {0, 1} or values <= {0, 255}):
        raise DragBenchError(f"{META_FILE}: mask values must be 0/1 or 0/255, "
                             f"found {sorted(values)[:8]}")
    return np.where(mask > 0, 255, 0).astype(np.uint8)


def load_sample(folder) -> DragBenchSample:
    """Read one DragBench sample folder; every way it can be broken is a DragBenchError."""
    folder = os.fspath(folder)
    image_path = os.path.join(folder, IMAGE_FILE)
    meta_path = os.path.join(folder, META_FILE)
    for name, path in ((IMAGE_FILE, image_path), (META_FILE, meta_path)):
        if not os.path.isfile(path):
            raise DragBenchError(f"missing {name} in {folder}")
    image = _read_image(image_path)
    h, w = image.shape[:2]

    meta = _read_meta(meta_path)
    if not isinstance(meta, dict):
        raise DragBenchError(f"{META_FILE}: expected a dict, got {type(meta).__name__}")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise DragBenchError(f"{META_FILE}: missing keys {', '.join(missing)}")
    prompt = meta["prompt"]
    if not isinstance(prompt, str):
        raise DragBenchError(f"{META_FILE}: prompt must be a str, got {type(prompt).__name__}")
    handles, targets = _parse_points(meta["points"], w, h)
    mask = _parse_mask(meta["mask"], h, w)
    return DragBenchSample(name=os.path.basename(os.path.normpath(folder)), path=folder,
                           image=image, mask=mask, handles=handles, targets=targets,
                           prompt=prompt)


def find_samples(root) -> list[str]:
    """Every folder under root (root included, recursively, sorted) holding a meta_data.pkl."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DragBenchError(f"{root}: not a directory")
    found = [dirpath for dirpath, _, files in os.walk(root) if META_FILE in files]
    return sorted(found)
