"""An exact, weightless stand-in for the VAE: pixels folded into channels (space-to-depth).

Small worlds (the toy proof of `configs/toy.yaml`, tests) train the whole model from scratch on
a CPU in minutes; a VAE that must itself be trained first would spend that time learning to
reconstruct. `PixelVAE` turns an image (B, 3, H, W) in [-1, 1] into "latents"
(B, 3 * f * f, H / f, W / f) by folding each f x f pixel block into channels, and back,
exactly. It offers the slice of `AutoencoderKL`'s interface the drag pipeline uses
(`encode(x).latent_dist.mode()`, `decode(z).sample`, `config.scaling_factor`) and saves as a
diffusers model (config only: it has no weights), so a base model directory may hold one in
`vae/` and every loader takes it (`model.checkpoint.load_vae`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


@dataclass
class _Folded:
    """What `encode(...).latent_dist` is for AutoencoderKL: here a point mass."""
    value: torch.Tensor

    def mode(self) -> torch.Tensor:
        return self.value

    @property
    def mean(self) -> torch.Tensor:
        return self.value


@dataclass
class _Encoded:
    latent_dist: _Folded


@dataclass
class _Decoded:
    sample: torch.Tensor


class PixelVAE(ModelMixin, ConfigMixin):

    @register_to_config
    def __init__(self, factor: int = 2, in_channels: int = 3, scaling_factor: float = 1.0):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        # ModelMixin reads dtype and device from a parameter; this one is never trained.
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels * self.config.factor ** 2

    def encode(self, images: torch.Tensor) -> _Encoded:
        f = self.config.factor
        if images.shape[-1] % f or images.shape[-2] % f:
            raise ValueError(f"image size {tuple(images.shape[-2:])} is not a multiple of {f}")
        return _Encoded(_Folded(F.pixel_unshuffle(images, f)))

    def decode(self, latents: torch.Tensor) -> _Decoded:
        return _Decoded(F.pixel_shuffle(latents, self.config.factor))
