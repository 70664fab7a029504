"""The appearance encoder: a UNet of the backbone's config with 4 input channels.

It runs once per edit on the clean source latents at timestep 0 with empty-prompt embeddings;
its writer processors store the normed input of each fused self-attention layer in a bank that
the backbone's `PointAttnProcessor`s read. Its output is never used, so everything after the
last stored input is dropped: the last transformer block's self-attention projections, its
cross-attention, feed-forward and norms, the last `proj_out`, and the output head. This is the
parameter set of the public `appearance_encoder/diffusion_pytorch_model.safetensors`.
"""
from __future__ import annotations

import functools

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from model.attention import DragConditions


class AppearanceEncoderModel(UNet2DConditionModel):

    @functools.wraps(UNet2DConditionModel.__init__)  # keeps the config signature for ConfigMixin
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        attention = self.up_blocks[-1].attentions[-1]
        last = attention.transformer_blocks[-1]
        for name in ("to_q", "to_k", "to_v", "to_out"):
            delattr(last.attn1, name)
        last.norm2, last.norm3, last.ff = nn.Identity(), nn.Identity(), nn.Identity()
        last.attn2 = None
        attention.proj_out = nn.Identity()
        self.conv_norm_out, self.conv_act, self.conv_out = None, None, nn.Identity()

    @property
    def last_layer(self) -> str:
        """Name of the self-attention whose input is the encoder's last useful output."""
        i, j = len(self.up_blocks) - 1, len(self.up_blocks[-1].attentions) - 1
        k = len(self.up_blocks[-1].attentions[-1].transformer_blocks) - 1
        return f"up_blocks.{i}.attentions.{j}.transformer_blocks.{k}.attn1"

    @classmethod
    def from_backbone(cls, unet: UNet2DConditionModel) -> "AppearanceEncoderModel":
        """An encoder initialised from the backbone's weights (its input channels that take the
        noisy latents, as many as the latents have: 4 for SD's VAE)."""
        latent = unet.config.out_channels
        config = dict(unet.config)
        config["in_channels"] = latent
        encoder = cls.from_config(config)
        state = {k: v for k, v in unet.state_dict().items() if ".processor." not in k}
        state["conv_in.weight"] = state["conv_in.weight"][:, :latent]
        own = encoder.state_dict()
        encoder.load_state_dict({k: state[k] for k in own})
        return encoder if unet.dtype == encoder.dtype else encoder.to(dtype=unet.dtype)

    def encode(self, latents: torch.Tensor,
               text_embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """Clean source latents (b, c, h, w) -> bank {layer name: (b, tokens, channels)}."""
        drag = DragConditions()
        timestep = torch.zeros(latents.shape[0], device=latents.device, dtype=torch.long)
        self(latents, timestep, encoder_hidden_states=text_embeddings,
             cross_attention_kwargs={"drag": drag}, return_dict=False)
        return drag.bank
