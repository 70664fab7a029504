"""The model side of the service: a loaded DragEditPipeline that edits batches of requests.

Requests that can share a backbone batch (the same run size and sampling settings) run as one
`DragEditPipeline.edit_batch`; the others in groups of their own, in arrival order. Free of
Ray and FastAPI: the service's replicas hold one Editor each, and tests drive it directly.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from serve.request import EditRequest


@dataclass
class EditResponse:
    images: list[bytes]             # one PNG per candidate
    size: tuple[int, int]           # (w, h) of the images
    handles: list                   # the drag in the images' pixels
    targets: list
    settings: dict                  # what ran, defaults resolved
    seconds: float                  # the backbone batch this edit ran in
    batch_size: int                 # edits in that batch


def png_bytes(image: np.ndarray) -> bytes:
    """PNG with PIL's defaults: the bytes `jobs.edit` writes for the same pixels."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class Editor:
    def __init__(self, pipe, paths: dict, dtype_name: str):
        self.pipe, self.paths, self.dtype_name = pipe, dict(paths), dtype_name

    @classmethod
    def load(cls, paths: dict, device: str = "cpu", dtype: str = "fp32",
             fusion: str | None = None) -> "Editor":
        """`paths`: model.layout.resolve_paths's (model_dir, base, ip_adapter, lcm_lora, vae)."""
        from model.options import torch_dtype
        from model.pipeline import DragEditPipeline

        pipe = DragEditPipeline.from_pretrained(
            paths["model_dir"], paths["base"], paths["ip_adapter"], lcm_lora=paths["lcm_lora"],
            vae_dir=paths["vae"], fusion=fusion, device=device, dtype=torch_dtype(dtype))
        return cls(pipe, paths, dtype)

    @property
    def lcm(self) -> bool:
        return self.pipe.lcm

    def info(self) -> dict:
        w, h = self.pipe.resolution
        return {"checkpoints": self.paths, "resolution": [w, h],
                "size_multiple": self.pipe.size_multiple, "device": str(self.pipe.device),
                "dtype": self.dtype_name, "fusion": self.pipe.model.fusion,
                "schedulers": ["ddim", "lcm"] if self.lcm else ["ddim"],
                "default_scheduler": self.pipe.sampling()[0]}

    def batch_key(self, request: EditRequest) -> tuple:
        """What edits must share to run in one backbone batch."""
        h, w = request.image.shape[:2]
        s = request.settings
        scheduler, steps, _ = self.pipe.sampling(s.scheduler, s.steps)
        return (self.pipe.run_size((w, h)), scheduler, steps, s.schedule, s.candidates,
                s.sequential, s.keep_unmasked, s.resize_back)

    def edit_many(self, requests: list[EditRequest]) -> list[EditResponse]:
        from model.pipeline import DragInput

        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(self.batch_key(r), []).append(i)
        responses: list[EditResponse | None] = [None] * len(requests)
        for members in groups.values():
            s = requests[members[0]].settings
            results = self.pipe.edit_batch(
                [DragInput(requests[i].image, requests[i].mask, requests[i].handles,
                           requests[i].targets, requests[i].settings.prompt,
                           requests[i].settings.seed, requests[i].settings.guidance)
                 for i in members],
                steps=s.steps, schedule=s.schedule, candidates=s.candidates,
                sequential=s.sequential, scheduler=s.scheduler,
                resize_back=s.resize_back, keep_unmasked=s.keep_unmasked)
            for i, result in zip(members, results):
                responses[i] = EditResponse(
                    images=[png_bytes(im) for im in result.images], size=result.size,
                    handles=np.asarray(result.handles).tolist(),
                    targets=np.asarray(result.targets).tolist(),
                    settings={**requests[i].settings.__dict__, "scheduler": result.scheduler,
                              "steps": result.steps, "guidance": result.guidance,
                              "resolution": list(result.resolution)},
                    seconds=result.seconds, batch_size=len(members))
        return responses
