"""The trainer's typed configuration, loaded from YAML (`schemas.typed_config`), and the run's
copy of it.

A mistyped key is an error naming it. Every run writes its resolved config to
`<run_dir>/config.yaml` (storage secrets redacted; `write_run_config`). Its content, everything
but the keys of RUN_KEYS, is what the weights depend on: resuming with other content is
refused, naming the keys. The RUN_KEYS (logging, validation and checkpoint cadence and
retention, storage) may change when a run is resumed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import yaml

from model.options import DTYPE_NAMES, FUSION_MODES, POINT_PROJ_INITS
from schemas import storage
from schemas.dataset import config_diff, format_config_diff
from schemas.storage import StorageSettings, settings_problem
from schemas.typed_config import TypedConfig, build, load_yaml, require

# Where a run lives and how it logs, validates, checkpoints and reaches storage: none of it
# changes the weights, so a resumed run may change these (whole sections, or section.key).
RUN_KEYS = ("run_dir", "log", "checkpoint", "storage", "data.val_pairs")
LR_SCHEDULES = ("cosine", "constant")


@dataclass
class DataConfig:
    shards: str = ""                # pairs shards: a directory, glob or URL (jobs.build_pairs)
    resolution: int = 64            # training crops are resolution x resolution pixels
    batch_size: int = 2             # per rank and micro-step
    num_workers: int = 0            # DataLoader worker processes per rank
    augment: bool = True            # random crop/scale/flip, points transformed with pixels
    crop_scale: tuple = (0.8, 1.0)  # crop side as a fraction of the short side
    flip_p: float = 0.5
    val_pairs: int = 2              # fixed pairs edited for the validation images (0: none);
                                    # data.val_pairs is a run key (RUN_KEYS)


@dataclass
class ModelConfig:
    checkpoints: str = ""           # a public-layout root (see model.layout)
    init: str = ""                  # LightningDrag directory to start from; "" = fresh
    fusion: str = "full"
    point_embed_dim: int = 16       # a fresh point embedding's width (the release uses 16)
    point_proj_init: str = "zero"   # a fresh model's point projections: zero (as its backbone)
                                    # | random (a backbone trained from scratch)
    prompt: str = ""                # the text every pair is trained with
    train_backbone: bool = False    # also train the backbone UNet (small worlds trained from
                                    # scratch); exported as lightning-drag-sd15/unet/


@dataclass
class OptimConfig:
    lr: float = 1e-5
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0          # 0 = no clipping
    warmup_steps: int = 0
    schedule: str = "cosine"        # cosine | constant (after warm-up)
    min_lr_ratio: float = 0.0       # cosine ends at lr * min_lr_ratio


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 100                # optimiser steps
    grad_accum: int = 1             # micro-steps per optimiser step
    precision: str = "fp32"         # fp32 | fp16 | bf16 (trainable weights and frozen parts)
    zero_stage: int = 2
    grad_checkpointing: bool = False
    point_dropout: float = 0.1      # drop a pair's points with this probability (point CFG)
    noise_offset: float = 0.0
    snr_gamma: float = 0.0          # min-SNR loss weighting; 0 = off
    ema_decay: float = 0.0          # EMA of the trainable weights; 0 = off


@dataclass
class CheckpointConfig:
    every: int = 100                # optimiser steps between checkpoints (and at the end)
    keep_last: int = 3


@dataclass
class LogConfig:
    every: int = 10                 # steps between scalar logs
    val_every: int = 0              # steps between validation edits; 0 = only at the end
    val_steps: int = 8              # denoising steps of a validation edit
    tensorboard: bool = True
    sync_every_s: float = 60.0      # a URL run_dir: TensorBoard files are uploaded at most
                                    # this often (and at every checkpoint and the end)


@dataclass
class Config(TypedConfig):
    run_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    storage: StorageSettings = field(default_factory=StorageSettings)

    def content(self) -> dict:
        """What the weights depend on: the config without its RUN_KEYS."""
        data = self.to_dict()
        for key in RUN_KEYS:
            section, _, name = key.partition(".")
            if name:
                data[section].pop(name)
            else:
                data.pop(section)
        return data

    def validate(self) -> "Config":
        checks = [
            (bool(self.data.shards), "data.shards: required"),
            (bool(self.model.checkpoints), "model.checkpoints: required"),
            (self.model.fusion in FUSION_MODES, f"model.fusion: {'|'.join(FUSION_MODES)}"),
            (self.model.point_proj_init in POINT_PROJ_INITS,
             f"model.point_proj_init: {'|'.join(POINT_PROJ_INITS)}"),
            (self.train.precision in DTYPE_NAMES, f"train.precision: {'|'.join(DTYPE_NAMES)}"),
            (self.train.zero_stage in (0, 1, 2, 3), "train.zero_stage: 0..3"),
            (self.optim.schedule in LR_SCHEDULES, f"optim.schedule: {'|'.join(LR_SCHEDULES)}"),
            (self.train.steps >= 1 and self.train.grad_accum >= 1, "train.steps, grad_accum >= 1"),
            (self.data.batch_size >= 1, "data.batch_size >= 1"),
            (self.data.resolution % 64 == 0, "data.resolution: a multiple of 64"),
            (0 <= self.train.point_dropout <= 1, "train.point_dropout: 0..1"),
            (0 <= self.train.ema_decay < 1, "train.ema_decay: 0 (off) or in (0, 1)"),
            (self.checkpoint.every >= 1 and self.checkpoint.keep_last >= 1,
             "checkpoint.every, keep_last >= 1"),
            (self.log.every >= 1 and self.log.val_every >= 0 and self.log.sync_every_s >= 0,
             "log.every >= 1, log.val_every and log.sync_every_s >= 0"),
            (settings_problem(self.storage) is None, settings_problem(self.storage)),
        ]
        require(checks)
        return self


def load_config(path: Optional[str] = None, overrides: Optional[list[str]] = None) -> Config:
    return build(Config, load_yaml(path, overrides)).validate()


def from_dict(data: dict) -> Config:
    return build(Config, data).validate()


def write_run_config(cfg: Config) -> str:
    """The resolved config beside the checkpoints (storage secrets redacted). A resumed run
    must have the same content (RUN_KEYS may differ: the file is then rewritten); anything
    else is refused naming the keys. Returns what happened, for the log."""
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
