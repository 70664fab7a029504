"""What the trainer fits: the trainable parts of a LightningDrag model, and the loss.

`TrainModule` is the one module DeepSpeed wraps. It registers only the trainable parts (the
appearance encoder, the point embedding, the point-attention processors; the backbone too with
`model.train_backbone`); the frozen backbone is reached through the LightningDrag model it
holds unregistered, so the backbone's weights stay outside the engine (no optimiser state, no
ZeRO partitioning). Frozen encoders (VAE,
text, CLIP image) run in `prepare_inputs`, under no_grad, before the engine's forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from model.attention import DragConditions
from model.lightning_drag import LightningDragModel
from model.pipeline import DragEditPipeline


class TrainModule(nn.Module):
    """train_backbone: register the backbone UNet as well (it holds the point processors, and
    IP-Adapter's cross-attention weights, as its attention modules' processors)."""

    def __init__(self, model: LightningDragModel, train_backbone: bool = False):
        super().__init__()
        model.requires_grad_(False)
        self.appearance_encoder = model.appearance_encoder
        self.point_embedding = model.point_embedding
        self.trains_backbone = train_backbone
        if train_backbone:
            self.unet = model.unet
        else:
            self.point_processors = nn.ModuleList(model.point_processors())
        self.requires_grad_(True)
        object.__setattr__(self, "drag_model", model)  # unregistered: the frozen parts

    def forward(self, noisy_latents, timesteps, mask, masked_latents, source_latents,
                prompt_embeds, empty_text, handle_map, target_map, points_on):
        model = self.drag_model
        bank = model.encode_appearance(source_latents, empty_text)
        handles, targets = model.embed_points(handle_map, target_map)
        sample = torch.cat([noisy_latents, mask, masked_latents], dim=1)
        drag = DragConditions(bank=bank, handle_embeddings=handles, target_embeddings=targets,
                              points_on=points_on)
        return model(sample, timesteps, prompt_embeds, drag)


def noise_scheduler(pipe: DragEditPipeline) -> DDPMScheduler:
    """The training noise schedule: the base model's betas."""
    return DDPMScheduler.from_config(pipe.scheduler_config)


@torch.no_grad()
def prepare_inputs(pipe: DragEditPipeline, scheduler: DDPMScheduler, batch: dict, prompt: str,
                   generators: list[torch.Generator], point_dropout: float = 0.0,
                   noise_offset: float = 0.0) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """A data batch -> (TrainModule inputs, the regression target, timesteps).

    The model denoises the *target* frame's latents given the source frame's appearance, the
    masked source, the mask and the points. Sample i's randomness (noise, timestep, point
    dropout) comes from generators[i] alone, so a sample is treated the same whichever rank
    and batch it lands in."""
    device, dtype = pipe.device, pipe.dtype
    source = batch["source"].to(device, dtype)
    target = batch["target"].to(device, dtype)
    mask = batch["mask"].to(device, dtype)
    b = source.shape[0]
    if len(generators) != b:
        raise ValueError(f"{len(generators)} generators for a batch of {b}")
    source_latents = pipe.encode_latents(source)
    target_latents = pipe.encode_latents(target)
    masked_latents = pipe.encode_latents(source * (mask < 0.5))
    latent_mask = F.interpolate(mask, size=source_latents.shape[2:], mode="nearest")
    text = pipe.encode_text(prompt).expand(b, -1, -1)
    prompt_embeds = torch.cat([text, pipe.encode_image_prompt(source)], dim=1)
    empty = pipe.encode_text("").expand(b, -1, -1)

    shape, steps = target_latents.shape[1:], scheduler.config.num_train_timesteps
    noise, timesteps, points_on = [], [], []
    for g in generators:
        n = torch.randn(shape, generator=g)
        if noise_offset:
            n = n + noise_offset * torch.randn(shape[0], 1, 1, generator=g)
        noise.append(n)
        timesteps.append(torch.randint(0, steps, (), generator=g))
        points_on.append(bool(torch.rand((), generator=g) >= point_dropout))
    noise, timesteps = torch.stack(noise), torch.stack(timesteps)
    points_on = torch.tensor(points_on)
    noise, timesteps = noise.to(device, dtype), timesteps.to(device)
    noisy = scheduler.add_noise(target_latents, noise, timesteps)
    prediction = scheduler.config.prediction_type
    if prediction == "v_prediction":
        goal = scheduler.get_velocity(target_latents, noise, timesteps)
    elif prediction == "sample":  # the clean target latents (small worlds learn this fastest)
        goal = target_latents
    else:
        goal = noise
    inputs = dict(noisy_latents=noisy, timesteps=timesteps, mask=latent_mask,
                  masked_latents=masked_latents, source_latents=source_latents,
                  prompt_embeds=prompt_embeds, empty_text=empty,
                  handle_map=batch["handle_map"].to(device, dtype),
                  target_map=batch["target_map"].to(device, dtype),
                  points_on=points_on.to(device))
    return inputs, goal, timesteps


def diffusion_loss(pred: torch.Tensor, goal: torch.Tensor, timesteps: torch.Tensor,
                   scheduler: DDPMScheduler, snr_gamma: float = 0.0) -> torch.Tensor:
    """Mean squared error, optionally with min-SNR weighting (Hang et al. 2023)."""
    per_sample = F.mse_loss(pred.float(), goal.float(), reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma > 0:
        alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
        snr = alphas / (1 - alphas)
        weight = torch.clamp(snr, max=snr_gamma) / snr
        if scheduler.config.prediction_type == "v_prediction":
            weight = torch.clamp(snr, max=snr_gamma) / (snr + 1)
        elif scheduler.config.prediction_type == "sample":
            weight = torch.clamp(snr, max=snr_gamma)
        per_sample = per_sample * weight
    return per_sample.mean()
