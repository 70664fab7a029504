"""The point embedding network: two point maps -> handle and target features at every UNet scale.

Input: a handle map and a target map, (b, 1, H, W) at image resolution, where pair i's pixel
holds the label i (1..N) and every other pixel 0 (see `model.points.point_maps`).
A 3x3 conv makes 2*embed_dim channels; each following block halves the resolution and doubles
the channels, first down to the latent scale (the VAE factor), then once per UNet downsampling.
The output at each scale is split in two halves along channels: handle, target.

The module and parameter names are those of the public `point_embedding/point_embedding.pt`
(a plain state dict), so that file loads here and ours loads there; the architecture
hyper-parameters are read back from the tensor shapes (`for_state_dict`).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class ConvBlock(nn.Module):
    """Two 3x3 convs with SiLU; the first one strides by 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.conv2(self.act(self.conv1(x))))


class PointEmbedding(nn.Module):
    def __init__(self, embed_dim: int = 16, vae_scale: int = 8, unet_scale: int = 8):
        super().__init__()
        n_vae, n_unet = int(math.log2(vae_scale)), int(math.log2(unet_scale))
        if 2 ** n_vae != vae_scale or 2 ** n_unet != unet_scale:
            raise ValueError(f"scales must be powers of two, got vae_scale={vae_scale}, "
                             f"unet_scale={unet_scale}")
        self.embed_dim, self.vae_scale, self.unet_scale = embed_dim, vae_scale, unet_scale
        c = 2 * embed_dim
        self.conv_in = nn.Conv2d(2, c, 3, padding=1, bias=False)
        self.downsample_blocks_vae = nn.Sequential(
            *[ConvBlock(c * 2 ** i, c * 2 ** (i + 1)) for i in range(n_vae)])
        c *= vae_scale
        self.downsample_blocks_unet = nn.ModuleList(
            [ConvBlock(c * 2 ** i, c * 2 ** (i + 1)) for i in range(n_unet)])

    @property
    def output_dims(self) -> list[int]:
        """Channels of the handle (and of the target) embedding at each scale, finest first."""
        base = self.embed_dim * self.vae_scale
        return [base * 2 ** i for i in range(int(math.log2(self.unet_scale)) + 1)]

    def forward(self, handle_map: torch.Tensor, target_map: torch.Tensor):
        x = self.conv_in(torch.cat([handle_map, target_map], dim=1).to(self.conv_in.weight.dtype))
        x = self.downsample_blocks_vae(x)
        scales = [x]
        for block in self.downsample_blocks_unet:
            x = block(x)
            scales.append(x)
        handles = [s.chunk(2, dim=1)[0] for s in scales]
        targets = [s.chunk(2, dim=1)[1] for s in scales]
        return handles, targets

    @classmethod
    def for_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> "PointEmbedding":
        """The architecture a state dict describes (the file carries no config)."""
        if "conv_in.weight" not in state_dict:
            raise KeyError("missing key conv_in.weight")
        embed_dim = state_dict["conv_in.weight"].shape[0] // 2
        def blocks(prefix):
            return len({k.split(".")[1] for k in state_dict if k.startswith(prefix)})
        n_vae, n_unet = blocks("downsample_blocks_vae."), blocks("downsample_blocks_unet.")
        return cls(embed_dim, 2 ** n_vae, 2 ** n_unet)
