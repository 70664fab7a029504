"""Validation edits: the run's fixed pairs edited with the current weights.

The pairs (`data.val_pairs` of them, on rank 0) are fixed when a run starts: the first of the
first batch given to `trainer.loop.train`, else of the shard stream's first batch seen by one
rank without augmentation. Each validation writes one image, a row per pair (source with the
drags drawn | the edit | the real target frame), to `<run_dir>/validation/step_XXXXXXXX.png`
and to TensorBoard as `validation`.
"""
from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import torch

from model.images import tensor_to_images
from model.pipeline import DragEditPipeline
from schemas import storage
from trainer.config import Config


def pairs_from_batch(batch: dict, count: int) -> list[dict]:
    """The first `count` pairs of a batch as images and points (labels of the point maps)."""
    pairs = []
    sources, targets = tensor_to_images(batch["source"]), tensor_to_images(batch["target"])
    for i in range(min(count, batch["source"].shape[0])):
        points = []
        for key in ("handle_map", "target_map"):
            m = batch[key][i, 0]
            labels = range(1, int(m.max()) + 1)
            points.append(np.array([[float(x), float(y)] for y, x in
                                    (torch.nonzero(m == k)[0].tolist() for k in labels)]))
        pairs.append({"source": sources[i], "target": targets[i],
                      "mask": (batch["mask"][i, 0] > 0.5).numpy().astype(np.uint8) * 255,
                      "handles": points[0], "targets": points[1]})
    return pairs


def validation_pairs(cfg: Config, rank: int, first_batch: dict | None) -> list[dict]:
    """The fixed pairs (rank 0; none on the other ranks): from `first_batch` when the caller
    gives the batches, else from the shard stream (module doc)."""
    if rank != 0:
        return []
    if first_batch is None:
        from trainer.data import make_loader

        plain = replace(cfg.data, augment=False, num_workers=0)
        first_batch = next(iter(make_loader(plain, cfg.train.seed, 0, 1)))
    return pairs_from_batch(first_batch, cfg.data.val_pairs)


def validation_image(pipe: DragEditPipeline, pairs: list[dict], cfg: Config) -> np.ndarray:
    """One row per pair: source with the drags drawn | the edit | the real target frame."""
    from model.drawing import draw_drag, side_by_side
    rows = []
    for p in pairs:
        edited = pipe(p["source"], p["mask"], p["handles"], p["targets"], prompt=cfg.model.prompt,
                      steps=cfg.log.val_steps, seed=cfg.train.seed, scheduler="ddim",
                      resolution=cfg.data.resolution, resize_back=True).images[0]
        source = draw_drag(p["source"], p["handles"], p["targets"], p["mask"])
        rows.append(side_by_side([source, edited, p["target"]], ["source", "edit", "target"]))
    return np.concatenate(rows, axis=0)


def validate(pipe, module, pairs, cfg: Config, rank: int, step: int, writer) -> None:
    """Edit the pairs and publish the image (every rank calls this: under ZeRO-3 the weights
    are gathered from all of them; rank 0 edits)."""
    import deepspeed
    from PIL import Image

    with deepspeed.zero.GatheredParameters(list(module.parameters())):
        if rank == 0 and pairs:
            grid = validation_image(pipe, pairs, cfg)
            png = io.BytesIO()
            Image.fromarray(grid).save(png, format="PNG")
            storage.publish(storage.join(cfg.run_dir, "validation", f"step_{step:08d}.png"),
                            png.getvalue())
            if writer:
                writer.add_image("validation", grid, step)
