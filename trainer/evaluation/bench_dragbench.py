"""DragBench: Mean Distance (DIFT matching) and Image Fidelity (1 - LPIPS) of every method on
every sample folder under a root.

Per sample: read it safely (schemas.dragbench); compute the source's DIFT features once; for
each method edit the image (the pipeline resizes image, mask and points to the model
resolution and the result back), then
  MD  = mean over handles of |match - target|, where match is the pixel of the edited image
        whose DIFT feature is most similar to the source's feature at the handle;
  IF  = 1 - LPIPS(source, edited) at 224x224.
Points and distances are in the original image's pixels (DragBench's convention). Source and
edit get the same DIFT noise (one seed per sample), so the identity edit matches every handle
exactly and scores MD = mean |target - handle|. DIFT runs on the empty prompt by default;
DragBench's own script (DragDiffusion's run_eval_point_matching.py) gives the sample's prompt,
which `dift_prompt="sample"` selects.

A sample that cannot be read becomes a failed row for every method; a method that fails on a
sample becomes a failed row for that method; the run goes on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from model.drawing import draw_drag
from schemas.dragbench import find_samples, load_sample
from trainer.evaluation.dift import DIFT_ENSEMBLE, DiftFeaturizer
from trainer.evaluation.editors import Editor
from trainer.evaluation.lpips import LPIPS, image_distance
from trainer.evaluation.matching import match_points, point_distances, upsample_features
from trainer.evaluation.results import (BenchResult, Column, GalleryRow, describe, failed_row,
                                        failure, mean_metrics, ok_row)

COLUMNS = (Column("md", "MD ↓", 2, per_point=True), Column("image_fidelity", "IF ↑", 3))
DIFT_PROMPTS = ("empty", "sample")
DIFT_SEED = 42   # DragBench's evaluation seeds everything with 42


@dataclass(frozen=True)
class DiftSettings:
    prompt: str = "empty"                 # "empty" or "sample" (the sample's own prompt)
    ensemble: int = DIFT_ENSEMBLE
    size: tuple[int, int] | None = None   # (w, h) the DIFT model sees; None: the image's
    seed: int = DIFT_SEED


def sample_ids(root: str) -> list[tuple[str, str]]:
    """(id, folder) of every sample under root; the id is the folder relative to root
    (e.g. `animals/JH_2023-09-14-1823-59`), or its name when root is the sample itself."""
    root = os.path.abspath(root)
    out = []
    for folder in find_samples(root):
        rel = os.path.relpath(folder, root)
        out.append((os.path.basename(folder) if rel == "." else rel.replace(os.sep, "/"),
                    folder))
    return out


def evaluate_dragbench(root: str, editors: dict[str, Editor], dift: DiftFeaturizer,
                       lpips: LPIPS, settings: DiftSettings = DiftSettings(),
                       limit: int | None = None, gallery_rows: int = 8,
                       progress: Callable[[str], None] = print) -> BenchResult:
    if settings.prompt not in DIFT_PROMPTS:
        raise ValueError(f"DIFT prompt must be one of {DIFT_PROMPTS}, got {settings.prompt!r}")
    result = BenchResult("dragbench", COLUMNS, tuple(editors))
    samples = sample_ids(root)[:limit]
    for i, (sample_id, folder) in enumerate(samples):
        rows = _evaluate_sample(sample_id, folder, editors, dift, lpips, settings, result,
                                gallery_rows)
        result.rows.extend(rows)
        progress(f"[{i + 1}/{len(samples)}] {sample_id}: "
                 + "; ".join(describe(r, COLUMNS) for r in rows))
    return result


def _evaluate_sample(sample_id, folder, editors, dift, lpips, settings, result,
                     gallery_rows) -> list[dict]:
    try:
        sample = load_sample(folder)
        prompt = sample.prompt if settings.prompt == "sample" else ""
        h, w = sample.image.shape[:2]
        source_features = upsample_features(dift.features(
            sample.image, prompt, seed=settings.seed, ensemble=settings.ensemble,
            size=settings.size), (w, h))
    except Exception as e:  # noqa: BLE001 - nothing a sample does may stop the benchmark
        return [failed_row(sample_id, m, failure(e), COLUMNS) for m in editors]
    n = len(sample.handles)
    rows = []
    for method, editor in editors.items():
        try:
            edit = editor(sample.image, sample.mask, sample.handles, sample.targets,
                          sample.prompt)
            per_image = []
            for image in edit.images:
                edited_features = upsample_features(dift.features(
                    image, prompt, seed=settings.seed, ensemble=settings.ensemble,
                    size=settings.size), (w, h))
                matched = match_points(source_features, edited_features, sample.handles)
                per_image.append({
                    "md": point_distances(matched, sample.targets).mean(),
                    "image_fidelity": 1.0 - image_distance(lpips, sample.image, image)})
            metrics = mean_metrics(per_image)
        except Exception as e:  # noqa: BLE001 - one method failing leaves the others
            rows.append(failed_row(sample_id, method, failure(e), COLUMNS, num_points=n))
            continue
        rows.append(ok_row(sample_id, method, n, edit.seconds, metrics))
        if method == result.methods[0] and len(result.gallery) < gallery_rows:
            result.gallery.append(GalleryRow(
                [draw_drag(sample.image, sample.handles, sample.targets, sample.mask),
                 edit.images[0]], [sample_id, method]))
    return rows
