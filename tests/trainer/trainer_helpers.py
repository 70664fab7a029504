"""Shared by the trainer tests and the two-process script: tiny checkpoints, known batches, the
config of the two-rank runs on the pair shards."""
from __future__ import annotations

import json

import numpy as np
import torch

from model.points import point_maps
from trainer.config import from_dict


def known_batches(global_batch: int, rank: int = 0, world: int = 1, start: int = 0, seed: int = 0):
    """An endless stream of this rank's slice of fixed global batches: a textured square moved
    right by 6 px between source and target, with the drag saying so."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(4):
        src = torch.full((3, 64, 64), -0.6)
        x, y = (int(v) for v in rng.integers(12, 36, 2))
        src[:, y:y + 16, x:x + 16] = torch.from_numpy(rng.uniform(-1, 1, (3, 16, 16))).float()
        tgt = torch.full((3, 64, 64), -0.6)
        tgt[:, y:y + 16, x + 6:x + 22] = src[:, y:y + 16, x:x + 16]
        mask = torch.zeros(1, 64, 64)
        mask[:, y - 4:y + 20, x - 4:x + 26] = 1
        h, t = point_maps([[x + 8, y + 8]], [[x + 14, y + 8]], (64, 64))
        pool.append((src, tgt, mask, h[0], t[0]))
    per_rank = global_batch // world
    i = start
    while True:
        rows = [pool[(i * global_batch + j) % len(pool)] for j in range(global_batch)]
        mine = rows[rank * per_rank:(rank + 1) * per_rank]
        yield {k: torch.stack([r[n] for r in mine]) for n, k in
               enumerate(["source", "target", "mask", "handle_map", "target_map"])}
        i += 1


def config(run_dir, checkpoints, **sections):
    data = {"run_dir": str(run_dir), "data": {"shards": "unused"},
            "model": {"checkpoints": str(checkpoints), "point_embed_dim": 2},
            "optim": {"lr": 1e-3, "schedule": "constant"},
            "train": {"steps": 4, "point_dropout": 0.0},
            "checkpoint": {"every": 2}, "log": {"every": 1, "tensorboard": False}}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return from_dict(data)



def rank_config(run_dir, checkpoints, global_batch: int, world: int, steps: int, zero: int):
    """The config of one of `world` ranks training on their slices of the known global batches
    (two_process_train.py)."""
    # Adam's eps well above float noise: elements with near-zero gradients would otherwise turn
    # reduction-order noise (one rank's mean vs two ranks' all-reduce) into full-size updates.
    return config(run_dir, checkpoints, data={"batch_size": global_batch // world},
                  optim={"eps": 1e-4}, train={"steps": steps, "zero_stage": zero})

# --- the two-rank runs on the pair shards (torchrun, the deepspeed launcher, Ray Train) ------

STEPS = 3  # a checkpoint after every step, the newest one kept


def two_rank_config(path, run_dir, checkpoints, shards, tensorboard: bool = False) -> str:
    """Writes the config that every two-rank run on the pair shards trains (the session's
    torchrun reference, tests/trainer/conftest.py, is compared with the others); returns its
    path."""
    cfg = config(run_dir, checkpoints, data={"shards": shards, "batch_size": 1, "val_pairs": 1},
                 train={"steps": STEPS}, checkpoint={"every": 1, "keep_last": 1},
                 log={"val_steps": 2, "tensorboard": tensorboard})
    path.write_text(cfg.to_yaml())
    return str(path)


def summary_of(output: str) -> dict:
    """The summary a jobs.train run printed (its last `train: {...}` line)."""
    line = [x for x in output.splitlines() if x.startswith("train: ")][-1]
    return json.loads(line.removeprefix("train: "))
