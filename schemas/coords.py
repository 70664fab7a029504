"""The one module that owns coordinate conversions.

Convention everywhere: points are (x, y) = (column, row), x right, y down, origin top-left,
pixel centres at integer coordinates. Resizing follows the half-pixel-centre rule that
cv2.resize uses, so a point maps between two sizes as  x' = (x + 0.5) * s - 0.5.

Frames pass through three spaces:
  decoded  - as stored in the video stream (before display rotation)
  upright  - after the display rotation; crop boxes live here (x0, y0, w, h, integers)
  stored   - the crop resized to the dataset resolution; drag points live here

Affines are 2x3 arrays [A | b] taking a point p to A p + b (`apply_affine`). A pair's target
may be aligned to its source frame's background (a moving camera's motion undone): its
`target_transform` takes upright points of frame t1 to upright points of frame t0, and its crop
box then lives in frame t0's upright space (`crop_resize(..., transform=)`).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image


def rotate_frame(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Decoded -> upright. `rotation` is the clockwise turn (0/90/180/270) a player applies."""
    k = {0: 0, 90: -1, 180: 2, 270: 1}[rotation % 360]
    return np.ascontiguousarray(np.rot90(frame, k)) if k else frame


def upright_size(decoded_w: int, decoded_h: int, rotation: int) -> tuple[int, int]:
    return (decoded_h, decoded_w) if rotation % 180 == 90 else (decoded_w, decoded_h)


def scale_points(pts: np.ndarray, from_size: tuple, to_size: tuple) -> np.ndarray:
    """Points of an image of size from_size=(w, h) to the same image resized to to_size."""
    pts = np.asarray(pts, dtype=np.float64)
    s = np.array([to_size[0] / from_size[0], to_size[1] / from_size[1]])
    return (pts + 0.5) * s - 0.5


def upright_to_stored(pts: np.ndarray, crop_box: tuple, out_size: tuple) -> np.ndarray:
    x0, y0, w, h = crop_box
    return scale_points(np.asarray(pts, dtype=np.float64) - (x0, y0), (w, h), out_size)


def stored_to_upright(pts: np.ndarray, crop_box: tuple, out_size: tuple) -> np.ndarray:
    x0, y0, w, h = crop_box
    return scale_points(pts, out_size, (w, h)) + (x0, y0)


IDENTITY = np.eye(2, 3)


def apply_affine(pts: np.ndarray, affine: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64).reshape(2, 3)
    return pts @ affine[:, :2].T + affine[:, 2]


def invert_affine(affine: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64).reshape(2, 3))


def compose_affines(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The affine p -> outer(inner(p))."""
    o, i = (np.vstack([np.asarray(a, np.float64).reshape(2, 3), [0, 0, 1]])
            for a in (outer, inner))
    return (o @ i)[:2]


def rescale_affine(affine: np.ndarray, from_size: tuple, to_size: tuple) -> np.ndarray:
    """An affine between two images of size from_size=(w, h), expressed for the same images
    resized to to_size (the half-pixel rule of scale_points)."""
    s = np.array([to_size[0] / from_size[0], to_size[1] / from_size[1]])
    scale = np.array([[s[0], 0, 0.5 * s[0] - 0.5], [0, s[1], 0.5 * s[1] - 0.5]])
    return compose_affines(scale, compose_affines(affine, invert_affine(scale)))


def crop_resize(frame: np.ndarray, crop_box: tuple, out_size: tuple,
                transform: np.ndarray | None = None) -> np.ndarray:
    """Upright frame -> stored image. crop_box is (x0, y0, w, h) in integer pixels. With a
    `transform` (this frame's upright points -> the reference frame's), the box is in the
    reference frame's upright space and the frame is resampled into it (bilinear); a box
    that would need pixels outside this frame is a ValueError."""
    x0, y0, w, h = (int(v) for v in crop_box)
    if transform is not None and not np.allclose(transform, IDENTITY, rtol=0, atol=1e-9):
        # crop pixel (a, b) is reference point (x0 + a, y0 + b), this frame's inverse(transform)
        to_frame = compose_affines(invert_affine(transform), [[1, 0, x0], [0, 1, y0]])
        corners = apply_affine([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], to_frame)
        if not inside_image(corners, (frame.shape[1], frame.shape[0])).all():
            raise ValueError(f"crop box {crop_box} aligned to this frame leaves the "
                             f"{frame.shape[1]}x{frame.shape[0]} frame")
        crop = cv2.warpAffine(frame, to_frame, (w, h),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
    else:
        if x0 < 0 or y0 < 0 or w <= 0 or h <= 0 or x0 + w > frame.shape[1] \
                or y0 + h > frame.shape[0]:
            raise ValueError(f"crop box {crop_box} outside frame {frame.shape[1]}x{frame.shape[0]}")
        crop = frame[y0:y0 + h, x0:x0 + w]
    if (w, h) == tuple(out_size):
        return np.ascontiguousarray(crop)
    interp = cv2.INTER_AREA if w >= out_size[0] else cv2.INTER_LINEAR
    return cv2.resize(crop, tuple(out_size), interpolation=interp)


def area_size(size: tuple, side: int, multiple: int) -> tuple[int, int]:
    """The public release's editing size for an image of size=(w, h): about side x side pixels
    in area with the image's aspect ratio, each side rounded to the nearest multiple of
    `multiple` (a half to even, as numpy rounds), and at least one multiple. SD-1.5 at 512 and
    64: a 1280x853 photo runs at 640x448, 512x512 stays 512x512."""
    w, h = size
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {w}x{h}")
    k = math.sqrt(side * side / (w * h))
    return tuple(max(1, round(v * k / multiple)) * multiple for v in (w, h))


def resize_image(image: np.ndarray, size: tuple) -> np.ndarray:
    """HxWx3 uint8 -> the same image at size=(w, h), Lanczos-resampled as the public release
    does (PIL's filter: antialiased when shrinking, pixel centres on the half-pixel rule)."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(image).resize(tuple(size), Image.LANCZOS))


def resize_mask(mask: np.ndarray, size: tuple) -> np.ndarray:
    """HxW uint8 mask -> the same values at size=(w, h), by nearest neighbour with pixel centres
    (the half-pixel rule the points follow; cv2.INTER_NEAREST would shift the mask by up to half
    a pixel)."""
    mask = np.asarray(mask)
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    return cv2.resize(mask, tuple(size), interpolation=cv2.INTER_NEAREST_EXACT)


def inside_image(pts: np.ndarray, size: tuple) -> np.ndarray:
    """(N,) bool: whether each (x, y) point lies on a pixel of an image of size=(w, h), i.e.
    -0.5 <= x < w - 0.5 and the same for y (NaN is outside)."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    w, h = size
    return ((pts[:, 0] >= -0.5) & (pts[:, 0] < w - 0.5)
            & (pts[:, 1] >= -0.5) & (pts[:, 1] < h - 0.5))   # NaN compares False


def round_to_pixel(pts: np.ndarray, size: tuple) -> np.ndarray:
    """(x, y) points of an image of size=(w, h) -> integer (x, y) indices of their pixels.

    Rounds to the nearest pixel centre (centres at integers; a half rounds up, so 0.5 -> 1,
    -0.5 -> 0). A point outside the image (x < -0.5 or x >= w - 0.5, the same for y, or not
    finite) is a ValueError naming the first such point. Accepts one point (2,) or (N, 2).
    """
    pts = np.asarray(pts, dtype=np.float64)
    if pts.shape[-1:] != (2,) or pts.ndim > 2:
        raise ValueError(f"points must have shape (2,) or (N, 2), got {pts.shape}")
    w, h = size
    flat = pts.reshape(-1, 2)
    inside = inside_image(flat, size)
    if not inside.all():
        i = int(np.argmin(inside))
        x, y = flat[i]
        raise ValueError(f"point {i} (x={x:g}, y={y:g}) outside the {w}x{h} image")
    return np.floor(pts + 0.5).astype(np.int64)
