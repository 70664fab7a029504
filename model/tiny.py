"""A complete tiny random checkpoint tree in the public layout, for tests, the trainer and demos.

    <root>/stable-diffusion-inpainting/        base (diffusers layout)
    <root>/IP-Adapter/models/image_encoder/    CLIP vision encoder
    <root>/IP-Adapter/models/ip-adapter_sd15.bin
    <root>/lightning-drag-sd15/                appearance_encoder/, point_embedding/, attn .bin
    <root>/lcm-lora-sdv1-5/pytorch_lora_weights.safetensors   (kohya keys, as released)

The names mirror the public checkpoints directory (model.layout), so every tool takes
`--checkpoints <root>` for either. Weights are seeded random: the point projections and LoRA
are non-zero, so points and LCM-LoRA visibly change outputs.
"""
from __future__ import annotations

import os

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from torch import nn

from model.appearance_encoder import AppearanceEncoderModel
from model.checkpoint import save_ip_adapter_file, save_lightning_drag
from model.layout import checkpoint_paths
from model.lightning_drag import ImageProjection, LightningDragModel
from model.point_embedding import PointEmbedding
from model.tiny_base import (TINY_IMAGE_EMBED_DIM, save_tiny_image_encoder,
                             save_tiny_inpainting_base)

def random_lora(unet: nn.Module, rank: int = 4, std: float = 0.05) -> dict[str, torch.Tensor]:
    """A kohya-format LoRA over the attention and feed-forward linears (as LCM-LoRA has)."""
    state = {}
    for name, m in unet.named_modules():
        in_blocks = ".transformer_blocks." in name and ".processor." not in name
        if isinstance(m, nn.Linear) and in_blocks:
            stem = "lora_unet_" + name.replace(".", "_")
            state[f"{stem}.lora_down.weight"] = torch.randn(rank, m.in_features) * std
            state[f"{stem}.lora_up.weight"] = torch.randn(m.out_features, rank) * std
            state[f"{stem}.alpha"] = torch.tensor(float(rank))
    return state


def save_tiny_checkpoints(root: str, seed: int = 0, point_embed_dim: int = 2,
                          fusion: str = "full", **base) -> dict[str, str]:
    """`base`: options of `save_tiny_inpainting_base` (resolution, pixel_vae_factor,
    block_out_channels, prediction_type)."""
    paths = checkpoint_paths(root)
    save_tiny_inpainting_base(paths["base"], seed=seed, **base)
    save_tiny_image_encoder(os.path.join(paths["ip_adapter"], "image_encoder"), seed=seed + 1)
    unet = UNet2DConditionModel.from_pretrained(paths["base"], subfolder="unet",
                                                local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        encoder = AppearanceEncoderModel.from_backbone(unet)
        scales = len(unet.config.block_out_channels)
        points = PointEmbedding(point_embed_dim, vae_scale=base.get("pixel_vae_factor") or 8,
                                unet_scale=2 ** (scales - 1))
        image_proj = ImageProjection(unet.config.cross_attention_dim, TINY_IMAGE_EMBED_DIM)
        model = LightningDragModel(unet, encoder, points, image_proj, fusion=fusion)
        for p in model.point_processors():  # a trained model's points do something
            nn.init.normal_(p.proj.weight, std=0.5)
        lora = random_lora(unet)
    save_ip_adapter_file(model, paths["ip_adapter"])
    save_lightning_drag(model, paths["model_dir"])
    os.makedirs(os.path.dirname(paths["lcm_lora"]), exist_ok=True)
    save_file(lora, paths["lcm_lora"])
    return paths
