"""Small PIL helpers for looking at drag edits: drags drawn on an image, images side by side.

Points follow schemas.coords: (x, y), x right, y down, pixel centres at integers (PIL's
drawing coordinates address the same pixels). Images are HxWx3 uint8 RGB numpy arrays.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HANDLE_COLOR = (255, 0, 0)
TARGET_COLOR = (0, 0, 255)
ARROW_COLOR = (255, 255, 255)
OUTLINE_COLOR = (0, 0, 0)
OUTSIDE_MASK_DIM = 0.6  # outside the editable region pixels keep this fraction of brightness


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 (or HxW), got shape {image.shape}")
    return np.ascontiguousarray(image, dtype=np.uint8)


def draw_drag(image: np.ndarray, handles, targets, mask: np.ndarray | None = None) -> np.ndarray:
    """A copy of `image` with each handle -> target pair drawn: a red handle dot, a blue target
    dot and an arrow between them; the area outside `mask` (nonzero = editable) is darkened.

    Sizes scale with the image, so the drawing reads at 64 px as at 512 px."""
    out = _rgb(image).copy()
    h, w = out.shape[:2]
    handles = np.asarray(handles, dtype=np.float64).reshape(-1, 2)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
    if len(handles) != len(targets):
        raise ValueError(f"{len(handles)} handles but {len(targets)} targets")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape[:2] != (h, w):
            raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}")
        outside = (mask if mask.ndim == 2 else mask.max(axis=2)) == 0
        out[outside] = (out[outside] * OUTSIDE_MASK_DIM).astype(np.uint8)

    side = min(h, w)
    radius = max(1.5, side / 80)           # dot radius: 1.5 px at 64 px, 6.4 px at 512 px
    width = max(1, round(side / 200))      # arrow line width
    head = max(3.0, 3 * radius)            # arrow-head length
    pil = Image.fromarray(out)
    draw = ImageDraw.Draw(pil)
    for (x0, y0), (x1, y1) in zip(handles, targets):
        d = np.array([x1 - x0, y1 - y0])
        length = float(np.hypot(*d))
        if length > radius:  # an arrow ending at the edge of the target dot
            u = d / length
            tip = np.array([x1, y1]) - u * radius
            base = tip - u * min(head, length - radius)
            normal = np.array([-u[1], u[0]]) * 0.5 * min(head, length - radius)
            for color, extra in ((OUTLINE_COLOR, 2), (ARROW_COLOR, 0)):
                draw.line([(x0, y0), tuple(base)], fill=color, width=width + extra)
                draw.polygon([tuple(tip), tuple(base + normal), tuple(base - normal)], fill=color,
                             outline=color, width=1 + extra // 2)
    for pts, color in ((handles, HANDLE_COLOR), (targets, TARGET_COLOR)):
        for x, y in pts:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)
    return np.asarray(pil).copy()


def side_by_side(images: list[np.ndarray], labels: list[str] | None = None,
                 gap: int = 4) -> np.ndarray:
    """Images left to right on white, `gap` px apart, bottom-padded to the tallest; with
    `labels`, a strip of small text above each image (the output grows by that strip)."""
    if not images:
        raise ValueError("side_by_side needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    images = [_rgb(im) for im in images]
    height = max(im.shape[0] for im in images)
    white_gap = np.full((height, gap, 3), 255, np.uint8)
    parts = []
    for i, im in enumerate(images):
        if i:
            parts.append(white_gap)
        pad = np.full((height - im.shape[0], im.shape[1], 3), 255, np.uint8)
        parts.append(np.concatenate([im, pad], axis=0))
    row = np.concatenate(parts, axis=1)
    if not labels:
        return row
    font = ImageFont.load_default()
    strip_h = max(_text_height(font, label) for label in labels) + 4
    canvas = Image.new("RGB", (row.shape[1], strip_h + height), (255, 255, 255))
    canvas.paste(Image.fromarray(row), (0, strip_h))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for im, label in zip(images, labels):
        draw.text((x + 2, 2), label, fill=(0, 0, 0), font=font)
        x += im.shape[1] + gap
    return np.asarray(canvas).copy()


def _text_height(font, text: str) -> int:
    return int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text or "A", font=font)[3])
