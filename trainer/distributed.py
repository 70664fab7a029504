"""This process among the ranks: the process group, its device, and DeepSpeed's environment.

Launch: one process (no RANK in the environment: a single-rank gloo/nccl group is set up here),
`torchrun`, or the `deepspeed` launcher (both set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*);
under Ray Train, TorchTrainer sets them and the group (trainer.ray_train).
"""
from __future__ import annotations

import os
import socket


def quiet_deepspeed() -> None:
    """On a machine without a GPU, DeepSpeed (imported by accelerate whenever diffusers loads
    a model) prints an accelerator auto-detection warning to *stdout*, into the jobs' own
    output. Naming the CPU accelerator up front skips the detection and its warning."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(device: str | None) -> tuple[int, int, str]:
    """(rank, world size, this rank's device): joins the launcher's process group, or sets up a
    single-rank one when not launched by a launcher. device: cpu, cuda (this rank's local GPU
    is then made current) or None (cuda when available)."""
    import deepspeed
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if "RANK" not in os.environ:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0",
                          WORLD_SIZE="1", LOCAL_RANK="0")
    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), device
