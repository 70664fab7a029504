"""The training run: the DeepSpeed engine around `TrainModule`, and `train()`, the loop.

Reproducibility: each sample's randomness (noise, timestep, point dropout) comes from a
generator seeded by (seed, optimiser step, the sample's place in the step's global batch), and
the data stream is deterministic and resumable by the number of batches it has delivered. A
resumed run therefore repeats exactly what the uninterrupted run would have done, and N ranks
with batch B, or K accumulation micro-steps of batch B, draw what one rank with batch N*K*B
draws.

The components: trainer.distributed (ranks and launch), trainer.checkpoint (writing,
resuming, where checkpoints are kept), trainer.ema, trainer.validation, trainer.metrics (the
log line and TensorBoard). run_dir may be a URL (s3://bucket/runs/exp1): the resolved config,
checkpoints, TensorBoard event files and validation images all go there.
"""
from __future__ import annotations

import itertools
import logging
import math
from typing import Iterable

import numpy as np
import torch

from model.layout import checkpoint_paths
from model.options import torch_dtype
from model.pipeline import DragEditPipeline
from schemas import storage
from trainer.checkpoint import CheckpointStore, checkpoint_store, resume_from, save_checkpoint
from trainer.config import Config, write_run_config
from trainer.distributed import init_distributed
from trainer.ema import EMA
from trainer.metrics import StepLogger
from trainer.model import TrainModule, diffusion_loss, noise_scheduler, prepare_inputs
from trainer.validation import validate, validation_pairs

log = logging.getLogger("trainer")


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


def load_pipeline(cfg: Config, device: str) -> DragEditPipeline:
    paths = checkpoint_paths(cfg.model.checkpoints)
    return DragEditPipeline.from_pretrained(
        cfg.model.init or None, paths["base"], paths["ip_adapter"], vae_dir=paths["vae"],
        fusion=cfg.model.fusion, device=device, dtype=torch_dtype(cfg.train.precision),
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
          device: str | None = None, checkpoints: CheckpointStore | None = None) -> dict:
    """Run (or resume) the training described by cfg; returns a summary.

    batches: an iterator of data batches to use instead of the shard stream (tests use it to
    give every rank its slice of one global batch); it must start where the run resumes.
    stop_after: stop (without a final checkpoint) after this many optimiser steps of this call,
    as a crash would; for resume tests.
    checkpoints: where checkpoints are kept and resumed from (default: checkpoint_store of
    run_dir)."""
    import torch.distributed as dist

    rank, world, device = init_distributed(device)
    storage.configure(cfg.storage)
    if rank == 0:
        log.info("run config: %s", write_run_config(cfg))
    dist.barrier()

    store = checkpoints or checkpoint_store(cfg.run_dir, cfg.checkpoint.keep_last)
    with store.latest() as latest:
        # Refused before anything is built when it cannot resume.
        resume = resume_from(latest, rank, world, data_position=batches is None)
        pipe, module, engine, lr_schedule, ema = build_engine(cfg, device)
        resume.load(engine, ema)
    state = resume.state
    scheduler = noise_scheduler(pipe)
    loader = first = None
    if batches is None:
        from trainer.data import make_loader
        loader = make_loader(cfg.data, cfg.train.seed, rank, world, resume.data_position)
        batches = iter(loader)
    else:  # given batches: validate on the first one this run sees
        batches = iter(batches)
        first = next(batches)
        batches = itertools.chain([first], batches)
    val_pairs = validation_pairs(cfg, rank, first)

    metrics = StepLogger(cfg, rank, state["samples"], engine, lr_schedule, loader)
    losses, started_at = [], state["step"]
    while state["step"] < cfg.train.steps:
        if stop_after is not None and state["step"] - started_at >= stop_after:
            return {"stopped_at": state["step"], "losses": losses, **state}
        step_loss, micro = 0.0, 0
        while micro < cfg.train.grad_accum:
            batch = metrics.next_batch(batches)
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
            state["samples"] += size * world
            metrics.micro_step_done()
        state["step"] += 1
        if ema is not None:
            ema.update(module)
        mean = torch.tensor([step_loss])
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
        metrics.step_done(state["step"], losses[-1], state["samples"])
        last = state["step"] == cfg.train.steps
        if last or (cfg.log.val_every and state["step"] % cfg.log.val_every == 0):
            validate(pipe, module, val_pairs, cfg, rank, state["step"], metrics.writer)
        if state["step"] % cfg.checkpoint.every == 0 or last:
            save_checkpoint(engine, module, rank, state, store, ema, loader)
            metrics.checkpoint_saved()
    return {"losses": losses, **state, **metrics.close(state["samples"]),
            "data": loader.stats.as_dict() if loader is not None else None}
