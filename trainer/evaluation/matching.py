"""Mean Distance by feature matching (DragBench's run_eval_point_matching.py), and its pixel
analogue for worlds without a feature network (`PatchMatcher`).

For every handle point, take the source image's feature at the handle's pixel, find the pixel of
the edited image whose feature is most cosine-similar, and measure how far that pixel lies from
the target point. Feature maps are upsampled to the image size first, so matches are pixels of
the image and distances are in its pixels.

Points follow `schemas.coords`: (x, y), x right, y down, pixel centres at integers. A handle is
read at its nearest pixel (`round_to_pixel`); a feature map (C, H, W) is indexed [:, y, x].
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from schemas.coords import round_to_pixel

COSINE_EPS = 1e-8   # torch.nn.CosineSimilarity's default


def upsample_features(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, C, h, w) features -> (C, H, W) at size=(W, H), bilinear with half-pixel centres
    (align_corners=False), as DragBench's evaluation does."""
    w, h = size
    return F.interpolate(features.float(), size=(h, w), mode="bilinear",
                         align_corners=False)[0]


def match_points(source_features: torch.Tensor, edited_features: torch.Tensor,
                 handles: np.ndarray) -> np.ndarray:
    """(N, 2) float (x, y): for each handle, the pixel of `edited_features` (C, H, W) whose
    feature has the largest cosine similarity with `source_features` at the handle (the first
    such pixel in row-major order on ties). Both maps have the image's size."""
    if source_features.shape != edited_features.shape:
        raise ValueError(f"feature maps differ in shape: {tuple(source_features.shape)} and "
                         f"{tuple(edited_features.shape)}")
    c, h, w = edited_features.shape
    pix = round_to_pixel(np.asarray(handles, dtype=np.float64).reshape(-1, 2), (w, h))
    xs, ys = (torch.from_numpy(pix[:, i]).to(source_features.device) for i in (0, 1))
    queries = F.normalize(source_features[:, ys, xs], dim=0, eps=COSINE_EPS)       # (C, N)
    norms = edited_features.norm(dim=0).clamp_min(COSINE_EPS)                      # (H, W)
    similarity = torch.einsum("cn,chw->nhw", queries, edited_features) / norms     # (N, H, W)
    best = similarity.flatten(1).argmax(dim=1).cpu().numpy()
    return np.stack([best % w, best // w], axis=1).astype(np.float64)


def point_distances(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(N,) Euclidean distances in pixels between matched (or tracked) points and targets."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
    return np.linalg.norm(points - targets, axis=1)


class PatchMatcher:
    """Follows points by matching image patches: each query's `size` x `size` RGB patch around
    its pixel in frame 0 is looked for in every later frame, over the whole frame (borders
    reflected), and the point goes to the window whose pixels differ least (sum of squared
    differences; the first such window in row-major order on ties). The pixel analogue of DIFT
    matching: colour and brightness count, as they do in DIFT features; it always answers
    (every point is reported visible); and a large jump costs it nothing, unlike a two-frame
    optical-flow tracker, which loses points that jump far. Implements the `pipeline.tracking`
    Tracker protocol (`track`)."""

    name = "patch"

    def __init__(self, size: int = 15):
        if size < 3 or size % 2 == 0:
            raise ValueError(f"patch size must be odd and at least 3, got {size}")
        self.size = size

    def track(self, clips: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """clips (B, T, H, W, 3) uint8, queries (B, N, 2) x/y in frame 0 -> tracks (B, T, N, 2),
        visible (B, T, N)."""
        b, t, h, w = clips.shape[:4]
        r = self.size // 2
        tracks = np.repeat(np.asarray(queries, np.float64)[:, None], t, axis=1)
        for i in range(b):
            frames = [cv2.copyMakeBorder(f, r, r, r, r, cv2.BORDER_REFLECT_101)
                      .astype(np.float32) for f in clips[i]]
            pixels = round_to_pixel(np.asarray(queries[i], np.float64), (w, h))
            for n, (x, y) in enumerate(pixels):
                patch = frames[0][y:y + self.size, x:x + self.size]
                for k in range(1, t):
                    cost = cv2.matchTemplate(frames[k], patch, cv2.TM_SQDIFF)   # (h, w)
                    best = int(np.argmin(cost))
                    tracks[i, k, n] = (best % w, best // w)
        return tracks, np.ones(tracks.shape[:3], bool)
