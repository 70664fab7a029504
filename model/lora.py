"""Fusing a LoRA file (LCM-LoRA) into the backbone UNet's weights.

Two key formats are understood:
  kohya (the LCM-LoRA release):  lora_unet_<module path with '_' for '.'>.{lora_down,lora_up}.weight
                                 and .alpha  -> W += (alpha / rank) * up @ down
  peft / diffusers:              unet.<module path>.lora_A.weight / .lora_B.weight -> W += B @ A
Every key must name a Linear or Conv2d of the UNet; anything else is an error naming it.
"""
from __future__ import annotations

import torch
from torch import nn


class LoRAError(ValueError):
    pass


def _targets(unet: nn.Module) -> dict[str, nn.Module]:
    # Attention processors are ours, not part of the base model a LoRA was trained on.
    return {name: m for name, m in unet.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d)) and ".processor." not in name}


def _group(state: dict[str, torch.Tensor], targets: dict[str, nn.Module]) -> dict[str, dict]:
    kohya = {name.replace(".", "_"): name for name in targets}
    groups: dict[str, dict] = {}
    for key, value in state.items():
        if key.startswith("lora_unet_"):
            stem, _, part = key[len("lora_unet_"):].partition(".")
            name = kohya.get(stem)
            part = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}.get(part)
        elif key.startswith("unet."):
            stem, _, part = key[len("unet."):].rpartition(".lora_")
            name = stem if stem in targets else None
            part = {"A.weight": "down", "B.weight": "up"}.get(part)
        else:
            raise LoRAError(f"LoRA key {key} is neither kohya (lora_unet_*) nor peft (unet.*)")
        if name is None or part is None:
            raise LoRAError(f"LoRA key {key} names no Linear/Conv2d layer of the UNet")
        groups.setdefault(name, {})[part] = value
    return groups


@torch.no_grad()
def fuse_lora(unet: nn.Module, state: dict[str, torch.Tensor], scale: float = 1.0) -> int:
    """Add the LoRA deltas into the weights in place; returns the number of layers changed."""
    targets = _targets(unet)
    groups = _group(state, targets)
    for name, g in sorted(groups.items()):
        if "down" not in g or "up" not in g:
            part = "down" if "down" not in g else "up"
            raise LoRAError(f"LoRA for {name} lacks its {part} matrix")
        down, up = g["down"].float(), g["up"].float()
        rank = down.shape[0]
        factor = scale * (float(g["alpha"]) / rank if "alpha" in g else 1.0)
        weight = targets[name].weight
        delta = (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])
        if delta.shape != weight.shape:
            raise LoRAError(f"LoRA for {name} has shape {tuple(delta.shape)}, the layer "
                            f"{tuple(weight.shape)}")
        weight += (factor * delta).to(weight.device, weight.dtype)
    return len(groups)
