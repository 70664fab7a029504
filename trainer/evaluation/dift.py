"""DIFT features (Tang et al., 2023) from a Stable Diffusion 2.1 model directory, for Mean Distance.

The recipe of DIFT's SDFeaturizer as DragBench's evaluation runs it (stabilityai/
stable-diffusion-2-1, t=261, up_ft_index=1, ensemble_size=8):
  1. the image in [-1, 1], repeated `ensemble` times, is VAE-encoded (a sample of the latent
     distribution) and scaled by the VAE's scaling factor;
  2. noise is added at timestep 261 with the model's scheduler (`add_noise`);
  3. the UNet runs with the prompt embeddings, and the output of `up_blocks[1]` is kept (the
     rest of the UNet is skipped: a forward hook stops it there);
  4. the ensemble's features are averaged: (1, C, h, w), h = H/16 for SD-2.1.
The caller upsamples them to the image size (`matching.upsample_features`).

All randomness (VAE sample, noise) comes from one generator seeded per call, so the features of
an image depend on the image and the seed only, not on what ran before.

The directory is laid out like the real one: unet/, vae/, scheduler/, text_encoder/ and
tokenizer/. Instead of the text encoder, precomputed embeddings of the empty prompt can be
given (a safetensors file with one tensor `prompt_embeds` of shape (1, L, D)); then only the
empty prompt can be used.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer

from model.checkpoint import CheckpointError, load_pretrained
from model.images import images_to_tensor
from schemas.coords import crop_resize

DIFT_TIMESTEP = 261
DIFT_UP_BLOCK = 1
DIFT_ENSEMBLE = 8
PROMPT_EMBEDS_KEY = "prompt_embeds"


class _StopForward(Exception):
    """Raised by the hook on the last UNet block needed, to skip the rest of the UNet."""


class DiftFeaturizer:

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: DDIMScheduler,
                 tokenizer: CLIPTokenizer | None, text_encoder: CLIPTextModel | None,
                 empty_prompt_embeds: torch.Tensor | None = None):
        if text_encoder is None and empty_prompt_embeds is None:
            raise ValueError("DiftFeaturizer needs a text encoder or empty-prompt embeddings")
        self.unet, self.vae, self.scheduler = unet, vae, scheduler
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.empty_prompt_embeds = empty_prompt_embeds
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def from_pretrained(cls, model_dir: str, empty_prompt_embeds: str | None = None,
                        device="cpu") -> "DiftFeaturizer":
        """Load an SD-2.1-style directory; with `empty_prompt_embeds` (a file) the text encoder
        is not loaded. A missing part or a key mismatch is a CheckpointError."""
        if not os.path.isdir(model_dir):
            raise CheckpointError(f"DIFT model {model_dir}: not a directory")
        unet = load_pretrained(UNet2DConditionModel, model_dir, "unet")
        vae = load_pretrained(AutoencoderKL, model_dir, "vae")
        if not os.path.isdir(os.path.join(model_dir, "scheduler")):
            raise CheckpointError(f"{os.path.join(model_dir, 'scheduler')}: not a directory")
        scheduler = DDIMScheduler.from_pretrained(model_dir, subfolder="scheduler",
                                                  local_files_only=True)
        tokenizer = text_encoder = embeds = None
        if empty_prompt_embeds is not None:
            embeds = _load_prompt_embeds(empty_prompt_embeds, unet.config.cross_attention_dim)
        else:
            text_encoder = load_pretrained(CLIPTextModel, model_dir, "text_encoder")
            tokenizer = CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer",
                                                      local_files_only=True)
        featurizer = cls(unet, vae, scheduler, tokenizer, text_encoder, embeds)
        return featurizer.to(device)

    def to(self, device) -> "DiftFeaturizer":
        for m in (self.unet, self.vae, self.text_encoder):
            if m is not None:
                m.to(device).eval().requires_grad_(False)
        if self.empty_prompt_embeds is not None:
            self.empty_prompt_embeds = self.empty_prompt_embeds.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """(1, L, D) text embeddings, as SD pipelines encode a prompt (padded to max length)."""
        if self.text_encoder is None:
            if prompt:
                raise ValueError("this DIFT model was loaded with empty-prompt embeddings only; "
                                 f"it cannot encode the prompt {prompt!r}")
            return self.empty_prompt_embeds
        ids = self.tokenizer(prompt, padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length,
                             return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device))[0]

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """The VAE needs multiples of its scale factor (8): the nearest ones (at least 8)."""
        f = self.vae_factor
        return max(f, round(width / f) * f), max(f, round(height / f) * f)

    @torch.no_grad()
    def features(self, image: np.ndarray, prompt: str = "", seed: int = 0,
                 ensemble: int = DIFT_ENSEMBLE, size: tuple[int, int] | None = None,
                 timestep: int = DIFT_TIMESTEP, up_block: int = DIFT_UP_BLOCK) -> torch.Tensor:
        """(1, C, h, w) features of an HxWx3 uint8 image. `size` (w, h): the size the model
        sees (default: the image's own, rounded to multiples of 8); the features cover the
        whole image whatever it is."""
        if ensemble < 1:
            raise ValueError(f"ensemble must be at least 1, got {ensemble}")
        height, width = image.shape[:2]
        size = self.input_size(*(size or (width, height)))
        x = images_to_tensor([crop_resize(image, (0, 0, width, height), size)])
        x = x.to(self.device, self.vae.dtype).repeat(ensemble, 1, 1, 1)
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = self.vae.encode(x).latent_dist.sample(generator=generator)
        latents = latents * self.vae.config.scaling_factor
        noise = randn_tensor(latents.shape, generator=generator, device=self.device,
                             dtype=latents.dtype)
        t = torch.full((ensemble,), timestep, dtype=torch.long, device=self.device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        embeds = self.encode_prompt(prompt).to(self.unet.dtype).expand(ensemble, -1, -1)

        kept = {}

        def keep_and_stop(module, inputs, output):
            kept["features"] = output
            raise _StopForward

        handle = self.unet.up_blocks[up_block].register_forward_hook(keep_and_stop)
        try:
            self.unet(noisy, t, encoder_hidden_states=embeds)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return kept["features"].float().mean(dim=0, keepdim=True)


def _load_prompt_embeds(path: str, width: int) -> torch.Tensor:
    if not os.path.isfile(path):
        raise CheckpointError(f"empty-prompt embeddings {path}: file not found")
    try:
        state = load_file(path)
    except Exception as e:  # safetensors raises its own error type for a malformed file
        raise CheckpointError(f"empty-prompt embeddings {path}: not a safetensors file "
                              f"({type(e).__name__}: {e})") from None
    if set(state) != {PROMPT_EMBEDS_KEY}:
        raise CheckpointError(f"empty-prompt embeddings {path}: expected exactly one tensor "
                              f"{PROMPT_EMBEDS_KEY!r}, found {sorted(state)}")
    embeds = state[PROMPT_EMBEDS_KEY]
    if embeds.ndim != 3 or embeds.shape[0] != 1 or embeds.shape[2] != width:
        raise CheckpointError(f"empty-prompt embeddings {path}: shape {tuple(embeds.shape)}, "
                              f"expected (1, L, {width}) for this UNet")
    return embeds.float()
