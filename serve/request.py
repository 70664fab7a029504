"""One drag-edit request, read and checked field by field before any model runs.

Free of Ray and FastAPI: the HTTP layer hands over the uploaded bytes and form values; every
problem is a RequestError naming the field, which the API answers with a 4xx. Uploads are
decoded in memory (nothing is written to disk) and limited in bytes and pixels before they
are decoded in full.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from model.options import SCHEDULERS, SCHEDULES
from model.points import DragInputError, editable_region, validate_drag

IMAGE_FORMATS = ("PNG", "JPEG")


class RequestError(ValueError):
    """A bad request field: `field` names it, the message says why (HTTP status `status`)."""

    def __init__(self, field_name: str, message: str, status: int = 422):
        super().__init__(f"{field_name}: {message}")
        self.field, self.message, self.status = field_name, message, status


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (a service's own settings, `jobs.serve` flags)."""
    max_upload_bytes: int = 16 << 20     # per uploaded file
    max_pixels: int = 4096 * 4096        # per image (width x height)
    max_points: int = 64
    max_steps: int = 100
    max_candidates: int = 8
    max_sequential: int = 10
    max_guidance: float = 30.0
    max_prompt_chars: int = 1000


@dataclass
class Settings:
    """How to edit: the `jobs.edit` sampling options (None: the scheduler's default)."""
    prompt: str = ""
    scheduler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    schedule: str = "inverse-square"
    seed: int = 0
    candidates: int = 1
    sequential: int = 1
    keep_unmasked: bool = False
    resize_back: bool = False


@dataclass
class EditRequest:
    image: np.ndarray                     # HxWx3 uint8 RGB
    mask: np.ndarray                      # HxW uint8 0/255 (255 = editable)
    handles: np.ndarray                   # (N, 2) x, y in the image's pixels
    targets: np.ndarray
    settings: Settings = field(default_factory=Settings)


def read_image(name: str, data: bytes, limits: Limits) -> Image.Image:
    """A PNG or JPEG upload, its size checked before its pixels are decoded."""
    if not data:
        raise RequestError(name, "empty upload: expected a PNG or JPEG image")
    if len(data) > limits.max_upload_bytes:
        raise RequestError(name, f"{len(data)} bytes, over the limit of "
                                 f"{limits.max_upload_bytes} bytes", status=413)
    try:
        image = Image.open(io.BytesIO(data))   # reads the header only
    except Exception:   # PIL raises several unrelated types for data it cannot identify
        raise RequestError(name, "not an image: expected a PNG or JPEG file") from None
    if image.format not in IMAGE_FORMATS:
        raise RequestError(name, f"{image.format} image: expected PNG or JPEG")
    w, h = image.size
    if w * h > limits.max_pixels:
        raise RequestError(name, f"{w}x{h} pixels, over the limit of {limits.max_pixels} "
                                 "pixels", status=413)
    try:
        image.load()
    except Exception as e:
        raise RequestError(name, f"unreadable {image.format} data ({type(e).__name__})") \
            from None
    return image


def read_mask(data: bytes | None, size: tuple[int, int], limits: Limits) -> np.ndarray:
    """uint8 0/255 of the image's size; absent: the whole image is editable."""
    w, h = size
    if data is None:
        return np.full((h, w), 255, np.uint8)
    image = read_image("mask", data, limits)
    if image.size != (w, h):
        raise RequestError("mask", f"{image.size[0]}x{image.size[1]}, but the image is {w}x{h}: "
                                   "the mask must have the image's size")
    return editable_region(image)


def read_points(name: str, text: str | None, limits: Limits) -> np.ndarray:
    """A JSON list of [x, y] pairs."""
    if text is None or not text.strip():
        raise RequestError(name, "missing: expected a JSON list of [x, y] points")
    try:
        value = json.loads(text)
    except ValueError:
        raise RequestError(name, f"not JSON: expected a list of [x, y] points, got {text[:80]!r}") \
            from None
    if not isinstance(value, list) or not value or not all(
            isinstance(p, list) and len(p) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in p) for p in value):
        raise RequestError(name, "expected a non-empty JSON list of [x, y] pairs of finite "
                                 f"numbers, got {text[:80]!r}")
    if len(value) > limits.max_points:
        raise RequestError(name, f"{len(value)} points, over the limit of {limits.max_points}")
    return np.asarray(value, dtype=np.float64)


def _number(name: str, value, kind, low, high):
    if value is None or value == "":
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise RequestError(name, f"expected {'an integer' if kind is int else 'a number'}, "
                                 f"got {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise RequestError(name, f"{value} is out of range: {low}..{high}")
    return number


def _flag(name: str, value) -> bool:
    if value is None or value == "":
        return False
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise RequestError(name, f"expected true or false, got {value!r}")
    return text in ("true", "1")


def read_settings(form: dict, limits: Limits, lcm_available: bool) -> Settings:
    """The sampling settings from form values (strings; absent: defaults)."""
    scheduler = form.get("scheduler") or None
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise RequestError("scheduler", f"{scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    if scheduler == "lcm" and not lcm_available:
        raise RequestError("scheduler", "lcm needs an LCM-LoRA, and this service loaded none")
    schedule = form.get("schedule") or "inverse-square"
    if schedule not in SCHEDULES:
        raise RequestError("schedule", f"{schedule!r} is not one of {', '.join(SCHEDULES)}")
    prompt = form.get("prompt") or ""
    if len(prompt) > limits.max_prompt_chars:
        raise RequestError("prompt", f"{len(prompt)} characters, over the limit of "
                                     f"{limits.max_prompt_chars}")
    seed = _number("seed", form.get("seed"), int, 0, 2 ** 63 - 1 - limits.max_candidates)
    return Settings(
        prompt=prompt, scheduler=scheduler, schedule=schedule, seed=seed or 0,
        steps=_number("steps", form.get("steps"), int, 1, limits.max_steps),
        guidance=_number("guidance", form.get("guidance"), float, 0.0, limits.max_guidance),
        candidates=_number("candidates", form.get("candidates"), int, 1,
                           limits.max_candidates) or 1,
        sequential=_number("sequential", form.get("sequential"), int, 1,
                           limits.max_sequential) or 1,
        keep_unmasked=_flag("keep_unmasked", form.get("keep_unmasked")),
        resize_back=_flag("resize_back", form.get("resize_back")))


def read_request(image: bytes, mask: bytes | None, form: dict, limits: Limits,
                 lcm_available: bool) -> EditRequest:
    """Everything a request sent, checked in the order a person fixes it: the image, the
    mask, the points, the settings."""
    source = read_image("image", image, limits)
    rgb = np.asarray(source.convert("RGB"))
    editable = read_mask(mask, source.size, limits)
    handles = read_points("handles", form.get("handles"), limits)
    targets = read_points("targets", form.get("targets"), limits)
    try:
        validate_drag(handles, targets, source.size, editable > 0)
    except DragInputError as e:
        raise RequestError(e.points or "handles", str(e)) from None
    settings = read_settings(form, limits, lcm_available)
    return EditRequest(rgb, editable, handles, targets, settings)

