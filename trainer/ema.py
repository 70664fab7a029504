"""The exponential moving average of the trainable weights (`train.ema_decay`).

Kept whole on every rank, so not with ZeRO-3, which partitions the weights. A checkpoint holds
it as `ema.safetensors`; the checkpoint's inference export carries the averaged weights.
"""
from __future__ import annotations

import contextlib
import os

import torch
from safetensors.torch import load_file, save_file

from trainer.model import TrainModule

EMA_FILE = "ema.safetensors"


class EMA:
    def __init__(self, module: TrainModule, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: TrainModule) -> None:
        for k, v in module.state_dict().items():
            self.shadow[k].mul_(self.decay).add_(v.detach().float(), alpha=1 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self, module: TrainModule):
        """Context: the module holds the averaged weights inside, its own ones after."""
        saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict({k: v.to(saved[k].dtype) for k, v in self.shadow.items()})
        try:
            yield
        finally:
            module.load_state_dict(saved)

    def save(self, checkpoint: str) -> None:
        save_file(self.shadow, os.path.join(checkpoint, EMA_FILE))

    def load(self, checkpoint: str) -> None:
        self.shadow = load_file(os.path.join(checkpoint, EMA_FILE))
