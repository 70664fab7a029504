"""The methods a benchmark compares: each edits (image, mask, handles, targets, prompt) into one
or more images of the input's size (one per sampling seed) and says how long that took.

`PipelineEditor` runs the drag-edit model (model.pipeline.DragEditPipeline); `identity_edit`
returns the input unchanged, the baseline that shows what "doing nothing" scores. A benchmark
averages a sample's metrics over the images of its edit (`results.mean_metrics`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from model.pipeline import DragEditPipeline


@dataclass
class Edit:
    images: list[np.ndarray]   # HxWx3 uint8 at the input's size: one per seed, at least one
    seconds: float             # time per image of the edit itself (model loading excluded)


Editor = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str], Edit]


class PipelineEditor:
    """`seeds` images per edit, seeded seed, seed + 1, ... and made as one batch (the pipeline's
    candidates), so `seconds` is the batch's time over `seeds`; `settings` are the other
    DragEditPipeline.__call__ keywords (steps, guidance, schedule, scheduler, seed, resolution,
    ...). The pipeline resizes the image, the mask and the points to the run size (the
    `resolution` setting, by default the release's rule) and the result back to the input size,
    where the benchmark's references are."""

    def __init__(self, pipe: DragEditPipeline, seeds: int = 1, **settings):
        self.pipe, self.seeds, self.settings = pipe, seeds, settings

    def __call__(self, image, mask, handles, targets, prompt) -> Edit:
        result = self.pipe(image, mask, handles, targets, prompt=prompt, candidates=self.seeds,
                           resize_back=True, **self.settings)
        return Edit(images=result.images, seconds=result.seconds / len(result.images))


def identity_edit(image, mask, handles, targets, prompt) -> Edit:
    return Edit(images=[np.array(image, dtype=np.uint8, copy=True)], seconds=0.0)


BASELINES: dict[str, Editor] = {"identity": identity_edit}
