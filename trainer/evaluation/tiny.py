"""Tiny random stand-ins for the evaluation's pretrained networks, in the real layouts.

    <root>/stable-diffusion-2-1/     DIFT model: unet/, vae/, scheduler/, text_encoder/,
                                     tokenizer/, model_index.json (SD-2.1's directory layout)
    <root>/alexnet.pth               torchvision AlexNet state dict, `features.*` keys
    <root>/lpips-alex-v0.1.pth       LPIPS v0.1 linear layers, `lin<i>.model.1.weight`

AlexNet is small, so it is built at its real size (seeded random weights). The DIFT UNet keeps
SD-2.1's block structure (4 blocks, attention head dims per block, linear projections,
upcast attention, v-prediction scheduler) at tiny widths. Random weights: good for plumbing,
shapes and the metrics' known answers, not for meaningful scores.
"""
from __future__ import annotations

import os

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from model.tiny_base import (TINY_CROSS_ATTENTION_DIM, save_scheduler_and_index,
                             save_tiny_text_encoder, save_tiny_vae)
from trainer.evaluation.lpips import ALEXNET_CHANNELS, alexnet_features

DIFT_DIR = "stable-diffusion-2-1"
ALEXNET_FILE = "alexnet.pth"
LPIPS_FILE = "lpips-alex-v0.1.pth"


def save_tiny_dift_model(out_dir: str, seed: int = 0) -> None:
    """A tiny random Stable Diffusion 2.1 directory (text-to-image, 4 latent channels)."""
    os.makedirs(out_dir, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            mid_block_type="UNetMidBlock2DCrossAttn",
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            block_out_channels=(32, 32, 64, 64),
            layers_per_block=1,
            norm_num_groups=8,
            attention_head_dim=(2, 2, 4, 4),   # SD-2.1 gives one head count per block too
            use_linear_projection=True,
            upcast_attention=True,
            cross_attention_dim=TINY_CROSS_ATTENTION_DIM,
        )
    unet.save_pretrained(os.path.join(out_dir, "unet"))
    save_tiny_vae(os.path.join(out_dir, "vae"), seed=seed + 1)
    save_tiny_text_encoder(out_dir, seed=seed + 2)
    # SD-2.1's scheduler_config.json: SD's DDIM betas, v-prediction
    save_scheduler_and_index(out_dir, "StableDiffusionPipeline", "AutoencoderKL", "v_prediction")


def random_alexnet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A real-size AlexNet `features` state dict in torchvision's keys (He-normal weights, so
    activations keep their scale through the five layers)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        features = alexnet_features()
        for m in features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.normal_(m.bias, std=0.01)
    return {f"features.{k}": v.clone() for k, v in features.state_dict().items()}


def random_lpips_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """LPIPS v0.1 linear layers: non-negative like the trained ones, uniform in [0, 0.2)."""
    generator = torch.Generator().manual_seed(seed)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator) * 0.2
            for i, c in enumerate(ALEXNET_CHANNELS)}


def save_tiny_extractors(root: str, seed: int = 0) -> dict[str, str]:
    """Write all three under root; returns {"dift_model", "alexnet", "lpips"} -> path. The
    weight files are torch pickles like the released ones (loaded with weights_only=True)."""
    paths = {"dift_model": os.path.join(root, DIFT_DIR),
             "alexnet": os.path.join(root, ALEXNET_FILE),
             "lpips": os.path.join(root, LPIPS_FILE)}
    save_tiny_dift_model(paths["dift_model"], seed=seed)
    torch.save(random_alexnet_state(seed), paths["alexnet"])
    torch.save(random_lpips_state(seed), paths["lpips"])
    return paths
