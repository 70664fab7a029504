"""The methods a benchmark compares: each edits (image, mask, handles, targets, prompt) into one
image of the input's size and says how long that took.

`PipelineEditor` runs the drag-edit model (model.pipeline.DragEditPipeline); `identity_edit`
returns the input unchanged, the baseline that shows what "doing nothing" scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from model.pipeline import DragEditPipeline


@dataclass
class Edit:
    image: np.ndarray   # HxWx3 uint8, the input's size
    seconds: float      # time of the edit itself (model loading excluded)


Editor = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str], Edit]


class PipelineEditor:
    """One candidate per edit; `settings` are DragEditPipeline.__call__ keywords (steps,
    guidance, schedule, scheduler, seed, resolution, ...). The pipeline resizes the image, the
    mask and the points to the model resolution and the result back to the input size."""

    def __init__(self, pipe: DragEditPipeline, **settings):
        self.pipe, self.settings = pipe, settings

    def __call__(self, image, mask, handles, targets, prompt) -> Edit:
        result = self.pipe(image, mask, handles, targets, prompt=prompt, candidates=1,
                           **self.settings)
        return Edit(image=result.images[0], seconds=result.seconds)


def identity_edit(image, mask, handles, targets, prompt) -> Edit:
    return Edit(image=np.array(image, dtype=np.uint8, copy=True), seconds=0.0)


BASELINES: dict[str, Editor] = {"identity": identity_edit}
