"""The training loop: DeepSpeed around `TrainModule`, checkpoints, resume, logging, validation.

Launch: one process (no RANK in the environment: a single-rank gloo/nccl group is set up here),
`torchrun`, or the `deepspeed` launcher (both set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

Reproducibility: each sample's randomness (noise, timestep, point dropout) comes from a
generator seeded by (seed, optimiser step, the sample's place in the step's global batch), and
the data stream is deterministic and resumable by the number of batches it has delivered. A
resumed run therefore repeats exactly what the uninterrupted run would have done, and N ranks
with batch B, or K accumulation micro-steps of batch B, draw what one rank with batch N*K*B
draws.

Checkpoints: `step_XXXXXXXX/` holds DeepSpeed's state (`state/`, every rank writes its part),
each rank's data position (`data/`), `trainer.json` (step, batches consumed, counters, world
size) and the inference export `lightning-drag-sd15/` (public layout, loads in jobs.edit with the
run's base model and IP-Adapter). Where they are kept is a small pluggable piece
(trainer.checkpoint): `<run_dir>/checkpoints/` on a filesystem every rank shares or on object
storage; under Ray Train `trainer.ray_train.RayTrainCheckpoints`, Ray's storage. A checkpoint
resumes only with the world size that wrote it (each rank's data stream and optimizer shard
belong to its rank).

run_dir may be a URL (s3://bucket/runs/exp1): the resolved config, checkpoints, TensorBoard
event files and validation images all go there.
"""
from __future__ import annotations

import io
import itertools
import json
import logging
import math
import os
import socket
import time
from dataclasses import replace
from typing import Iterable

import numpy as np
import torch

from model.checkpoint import save_lightning_drag
from model.layout import checkpoint_paths
from model.images import tensor_to_images
from model.pipeline import DragEditPipeline
from schemas import storage
from schemas.dataset import config_diff, format_config_diff
from trainer.checkpoint import (CHECKPOINT_PREFIX, check_world_size, checkpoint_store,
                                data_position_file, read_trainer_state, write_trainer_state)
from trainer.config import Config, from_dict
from trainer.model import TrainModule, diffusion_loss, noise_scheduler, prepare_inputs

log = logging.getLogger("trainer")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
EXPORT_DIR = "lightning-drag-sd15"


# --- distributed set-up ----------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(device: str) -> tuple[int, int, int]:
    """(rank, world size, local rank); a single-rank group when not launched by a launcher."""
    import deepspeed

    if "RANK" not in os.environ:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0",
                          WORLD_SIZE="1", LOCAL_RANK="0")
    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
    return (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
            int(os.environ.get("LOCAL_RANK", 0)))


def deepspeed_config(cfg: Config) -> dict:
    return {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": cfg.train.grad_accum,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": cfg.train.zero_stage},
        "bf16": {"enabled": cfg.train.precision == "bf16"},
        "fp16": {"enabled": cfg.train.precision == "fp16"},
        "zero_allow_untested_optimizer": True,  # torch's AdamW: no fused op to compile
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def lr_factor(cfg: Config):
    """Warm-up, then constant or cosine decay to min_lr_ratio, per optimiser step."""
    o, total = cfg.optim, cfg.train.steps

    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        progress = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def sample_generators(seed: int, step: int, first: int, count: int) -> list:
    """One generator per sample, keyed by the optimiser step and the sample's place in that
    step's global batch ((micro * world + rank) * batch + i): one rank with batch 2B draws
    what two ranks with B draw, and what one rank with batch B and two accumulation
    micro-steps draws."""
    out = []
    for i in range(first, first + count):
        mixed = np.random.SeedSequence([seed, step, i]).generate_state(1, np.uint64)[0]
        out.append(torch.Generator().manual_seed(int(mixed)))
    return out


class EMA:
    """Exponential moving average of the trainable weights (kept whole on every rank, so not
    with ZeRO-3, which partitions them). Checkpointed; the export uses the averaged weights."""

    def __init__(self, module: TrainModule, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: TrainModule) -> None:
        for k, v in module.state_dict().items():
            self.shadow[k].mul_(self.decay).add_(v.detach().float(), alpha=1 - self.decay)

    def swapped_in(self, module: TrainModule):
        """Context: the module holds the averaged weights inside, its own ones after."""
        ema = self

        class _Swap:
            def __enter__(self):
                self.saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
                module.load_state_dict({k: v.to(self.saved[k].dtype) for k, v in ema.shadow.items()})

            def __exit__(self, *exc):
                module.load_state_dict(self.saved)
        return _Swap()


# --- checkpoints -----------------------------------------------------------------------------

def save_checkpoint(engine, module: TrainModule, rank: int, state: dict, store,
                    ema: EMA | None = None, loader=None) -> None:
    import deepspeed

    name = f"{CHECKPOINT_PREFIX}{state['step']:08d}"
    folder = store.begin(name, rank)
    engine.save_checkpoint(folder, tag="state")  # every rank writes its shard of the state
    if loader is not None:  # each rank's stream has its own position
        os.makedirs(os.path.dirname(data_position_file(folder, rank)), exist_ok=True)
        with open(data_position_file(folder, rank), "w") as f:
            json.dump(loader.state_dict(), f)
    # The export needs whole parameters: gathered from every rank under ZeRO-3, a no-op else.
    with deepspeed.zero.GatheredParameters(list(module.parameters())):
        if rank == 0:
            export = os.path.join(folder, EXPORT_DIR)
            with_backbone = module.trains_backbone
            if ema is None:
                save_lightning_drag(module.drag_model, export, with_backbone)
            else:
                from safetensors.torch import save_file
                save_file(ema.shadow, os.path.join(folder, "ema.safetensors"))
                with ema.swapped_in(module):
                    save_lightning_drag(module.drag_model, export, with_backbone)
    if rank == 0:
        write_trainer_state(folder, state)
    store.commit(name, folder, rank, state)


# --- validation edits ------------------------------------------------------------------------

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


# --- the run ---------------------------------------------------------------------------------

def write_run_config(cfg: Config) -> str:
    """The resolved config beside the checkpoints (storage secrets redacted). A resumed run
    must have the same content (trainer.config.RUN_KEYS may differ: the file is then
    rewritten); anything else is refused naming the keys. Returns what happened, for the log."""
    import yaml

    path = storage.join(cfg.run_dir, "config.yaml")
    data = cfg.to_dict()
    data["storage"] = storage.redact(data["storage"])
    why = "new run"
    if storage.exists(path):
        saved = yaml.safe_load(storage.read_text(path))
        changed = config_diff(from_dict(saved).content(), cfg.content())
        if changed:
            raise ValueError(
                f"{path}: this run was started with another config, and these keys change "
                f"the weights: {format_config_diff(changed)}; resume with the run's values "
                "(only run_dir, logging, validation, checkpoint cadence and retention and "
                "storage may change) or start a new run_dir")
        run_changes = config_diff(saved, data)
        if not run_changes:
            return "same config: resuming"
        why = f"resuming with other run settings: {format_config_diff(run_changes)}"
    storage.publish_text(path, yaml.safe_dump(data, sort_keys=True))
    return why


def load_pipeline(cfg: Config, device: str) -> DragEditPipeline:
    paths = checkpoint_paths(cfg.model.checkpoints)
    return DragEditPipeline.from_pretrained(
        cfg.model.init or None, paths["base"], paths["ip_adapter"], vae_dir=paths["vae"],
        fusion=cfg.model.fusion, device=device, dtype=DTYPES[cfg.train.precision],
        point_embed_dim=cfg.model.point_embed_dim, point_proj_init=cfg.model.point_proj_init)


def build_engine(cfg: Config, device: str):
    """The pipeline (frozen parts and the trainable model), the DeepSpeed engine around the
    trainable parts, its learning-rate schedule and the EMA (or None)."""
    import deepspeed

    if cfg.train.ema_decay and cfg.train.zero_stage == 3:
        raise ValueError("train.ema_decay needs whole weights on every rank: use zero_stage <= 2")
    torch.manual_seed(cfg.train.seed)  # a fresh model starts the same on every rank and run
    pipe = load_pipeline(cfg, device)
    module = TrainModule(pipe.model, cfg.model.train_backbone)
    if cfg.train.grad_checkpointing:
        pipe.model.unet.enable_gradient_checkpointing()
        pipe.model.appearance_encoder.enable_gradient_checkpointing()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer,
                                           lr_scheduler=lr_schedule,
                                           config=deepspeed_config(cfg))
    ema = EMA(module, cfg.train.ema_decay) if cfg.train.ema_decay else None
    return pipe, module, engine, lr_schedule, ema


def train(cfg: Config, batches: Iterable[dict] | None = None, stop_after: int | None = None,
          device: str | None = None, checkpoints=None) -> dict:
    """Run (or resume) the training described by cfg; returns a summary.

    batches: an iterator of data batches to use instead of the shard stream (tests use it to
    give every rank its slice of one global batch); it must start where the run resumes.
    stop_after: stop (without a final checkpoint) after this many optimiser steps of this call,
    as a crash would; for resume tests.
    checkpoints: where checkpoints are kept and resumed from (see LocalCheckpoints, the
    default)."""
    import torch.distributed as dist

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rank, world, local_rank = init_distributed(device)
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    storage.configure(cfg.storage)
    if rank == 0:
        log.info("run config: %s", write_run_config(cfg))
    dist.barrier()

    store = checkpoints or checkpoint_store(cfg.run_dir, cfg.checkpoint.keep_last)
    state = {"step": 0, "batches": 0, "skipped_nonfinite": 0, "samples": 0, "world_size": world}
    position = None
    with store.latest() as latest:
        if latest is not None:  # refused before anything is built when it cannot resume
            state = read_trainer_state(latest)
            check_world_size(state, world, latest)
            if batches is None:
                path = data_position_file(latest, rank)
                if not os.path.isfile(path):
                    raise ValueError(f"{latest} has no data position for rank {rank}")
                with open(path) as f:
                    position = json.load(f)
        pipe, module, engine, lr_schedule, ema = build_engine(cfg, device)
        if latest is not None:
            engine.load_checkpoint(latest, tag="state")
            if ema is not None:
                from safetensors.torch import load_file
                ema.shadow = load_file(os.path.join(latest, "ema.safetensors"))
            log.info("resumed from %s at step %d", latest, state["step"])
    scheduler = noise_scheduler(pipe)
    loader = None
    if batches is None:
        from trainer.data import make_loader
        loader = make_loader(cfg.data, cfg.train.seed, rank, world, position)
        batches = iter(loader)
        plain = replace(cfg.data, augment=False, num_workers=0)
        val_source = iter(make_loader(plain, cfg.train.seed, 0, 1))
    else:  # given batches: validate on the first one this run sees
        batches = iter(batches)
        first = next(batches)
        batches, val_source = itertools.chain([first], batches), iter([first])
    val_pairs = pairs_from_batch(next(val_source), cfg.data.val_pairs) if rank == 0 else []

    writer = None
    if rank == 0 and cfg.log.tensorboard:
        from trainer.tensorboard import TensorBoardLog
        writer = TensorBoardLog(cfg.run_dir, cfg.log.sync_every_s)
    losses, started_at = [], state["step"]
    wait = busy = 0.0
    clock, samples_at_start = time.perf_counter(), state["samples"]
    while state["step"] < cfg.train.steps:
        if stop_after is not None and state["step"] - started_at >= stop_after:
            return {"stopped_at": state["step"], "losses": losses, **state}
        step_loss, micro = 0.0, 0
        while micro < cfg.train.grad_accum:
            t0 = time.perf_counter()
            batch = next(batches)
            t1 = time.perf_counter()
            size = batch["source"].shape[0]
            gens = sample_generators(cfg.train.seed, state["step"],
                                     (micro * world + rank) * size, size)
            state["batches"] += 1
            inputs, goal, timesteps = prepare_inputs(pipe, scheduler, batch, cfg.model.prompt,
                                                     gens, cfg.train.point_dropout,
                                                     cfg.train.noise_offset)
            pred = engine(**inputs)
            loss = diffusion_loss(pred, goal, timesteps, scheduler, cfg.train.snr_gamma)
            finite = torch.tensor([float(torch.isfinite(loss))])
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if finite.item() < 1:  # skipped on every rank alike: never applied
                state["skipped_nonfinite"] += 1
                log.warning("step %d: non-finite loss, micro-batch skipped", state["step"])
                continue
            engine.backward(loss)
            engine.step()
            step_loss += loss.item() / cfg.train.grad_accum
            micro += 1
            state["samples"] += batch["source"].shape[0] * world
            wait += t1 - t0
            busy += time.perf_counter() - t0
        state["step"] += 1
        if ema is not None:
            ema.update(module)
        mean = torch.tensor([step_loss])
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
        if rank == 0 and (state["step"] % cfg.log.every == 0 or state["step"] == cfg.train.steps):
            lr = lr_schedule.get_last_lr()[0]
            norm = engine.get_global_grad_norm()
            rate = (state["samples"] - samples_at_start) / max(time.perf_counter() - clock, 1e-9)
            log.info("step %d/%d loss %.5f lr %.3g %.2f samples/s data wait %.1f%%",
                     state["step"], cfg.train.steps, losses[-1], lr, rate,
                     100 * wait / max(busy, 1e-9))
            if writer:
                writer.add_scalar("train/loss", losses[-1], state["step"])
                writer.add_scalar("train/lr", lr, state["step"])
                if norm is not None:
                    writer.add_scalar("train/grad_norm", float(norm), state["step"])
                writer.add_scalar("train/data_wait_fraction", wait / max(busy, 1e-9),
                                  state["step"])
                writer.add_scalar("train/samples_per_s", rate, state["step"])
                if loader is not None:  # bad data the stream skipped so far (this rank)
                    for key in ("skipped_samples", "skipped_shards"):
                        writer.add_scalar(f"data/{key}", loader.stats.as_dict()[key],
                                          state["step"])
                writer.sync()
        last = state["step"] == cfg.train.steps
        if last or (cfg.log.val_every and state["step"] % cfg.log.val_every == 0):
            validate(pipe, module, val_pairs, cfg, rank, state["step"], writer)
        if state["step"] % cfg.checkpoint.every == 0 or last:
            save_checkpoint(engine, module, rank, state, store, ema, loader)
            if writer:
                writer.sync(force=True)
    if writer:
        writer.close()
    elapsed = time.perf_counter() - clock
    return {"losses": losses, **state, "data_wait": wait / max(busy, 1e-9),
            "samples_per_s": (state["samples"] - samples_at_start) / max(elapsed, 1e-9),
            "data": loader.stats.as_dict() if loader is not None else None}
