"""A complete tiny random checkpoint tree in the public layout, for tests, the trainer and demos.

    <root>/stable-diffusion-inpainting/        base (diffusers layout)
    <root>/IP-Adapter/models/image_encoder/    CLIP vision encoder
    <root>/IP-Adapter/models/ip-adapter_sd15.bin
    <root>/lightning-drag-sd15/                appearance_encoder/, point_embedding/, attn .bin
    <root>/lcm-lora-sdv1-5/pytorch_lora_weights.safetensors   (kohya keys, as released)
    <root>/sd-vae-ft-mse/                      release_compatible only: the VAE the release runs with

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
from model.layout import VAE_ALTERNATIVES, checkpoint_paths
from model.lightning_drag import ImageProjection, LightningDragModel
from model.point_embedding import PointEmbedding
from model.tiny_base import (TINY_IMAGE_EMBED_DIM, TINY_RESOLUTION, save_tiny_image_encoder,
                             save_tiny_inpainting_base, save_tiny_vae)

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
                          fusion: str = "full", release_compatible: bool = False,
                          **base) -> dict[str, str]:
    """`base`: options of `save_tiny_inpainting_base` (resolution, pixel_vae_factor,
    block_out_channels, prediction_type, layers_per_block). release_compatible: a tree the
    public release's code loads (see `release_problem`), with two layers per UNet block, a
    point embedding of width 16 and ROOT/sd-vae-ft-mse; a ValueError says what stands in the
    way. Returns the tree's `checkpoint_paths`."""
    if release_compatible:
        point_embed_dim, base = 16, {**base, "layers_per_block": 2}
        problem = release_problem(**base)
        if problem:
            raise ValueError(f"--release-compatible: {problem}")
    paths = checkpoint_paths(root)
    save_tiny_inpainting_base(paths["base"], seed=seed, **base)
    if release_compatible:  # the release's --vae_path; its "default" does not load
        save_tiny_vae(os.path.join(root, VAE_ALTERNATIVES[0]), seed=seed + 3,
                      resolution=base.get("resolution", TINY_RESOLUTION))
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
    return checkpoint_paths(root)


def release_problem(pixel_vae_factor: int = 0, block_out_channels: tuple = (32, 32, 64, 64),
                    **_) -> str | None:
    """Why a tiny tree of these options would not load in the public release's code, or None:
    it builds an AutoencoderKL, and PointEmbeddingModel(embed_dim=16) with its 8x VAE and 8x
    UNet scales (four UNet scales)."""
    if pixel_vae_factor:
        return "the release's code builds an AutoencoderKL (no pixel-space VAE)"
    if len(block_out_channels) != 4:
        return (f"the release's model has 4 UNet scales; block_out_channels "
                f"{','.join(map(str, block_out_channels))} has {len(block_out_channels)}")
    return None
