"""The LightningDrag model: frozen inpainting backbone + appearance encoder + point embedding.

Plain PyTorch: no parallelism, launch or data loading here. The pipeline (inference) and the
trainer both call `encode_appearance`, `embed_points` and `forward`.
"""
from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from model.appearance_encoder import AppearanceEncoderModel
from model.attention import (AppearanceWriteProcessor, DragConditions, IPAttnProcessor,
                             PlainAttnProcessor, PointAttnProcessor)
from model.options import FUSION_MODES
from model.point_embedding import PointEmbedding


def is_fused(layer: str, fusion: str) -> bool:
    """Whether a self-attention layer reads appearance tokens and points in this fusion mode."""
    if fusion not in FUSION_MODES:
        raise ValueError(f"fusion must be one of {FUSION_MODES}, got {fusion!r}")
    if fusion == "full":
        return True
    if fusion == "midup":
        return layer.startswith(("mid_block.", "up_blocks."))
    return layer.startswith("up_blocks.")


def layer_scale(layer: str, num_scales: int) -> int:
    """Index of a layer's resolution, 0 = latent resolution, from its place in the UNet."""
    if layer.startswith("down_blocks."):
        return int(layer.split(".")[1])
    if layer.startswith("mid_block."):
        return num_scales - 1
    return num_scales - 1 - int(layer.split(".")[1])


class ImageProjection(nn.Module):
    """IP-Adapter's image projection: a CLIP image embedding -> `num_tokens` prompt tokens.
    State-dict keys: proj.weight, proj.bias, norm.weight, norm.bias (`image_proj` in the file)."""

    def __init__(self, cross_attention_dim: int, image_embed_dim: int, num_tokens: int = 4):
        super().__init__()
        self.cross_attention_dim, self.num_tokens = cross_attention_dim, num_tokens
        self.proj = nn.Linear(image_embed_dim, num_tokens * cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(image_embeds).reshape(-1, self.num_tokens, self.cross_attention_dim)
        return self.norm(tokens)


class LightningDragModel(nn.Module):

    def __init__(self, unet: UNet2DConditionModel, appearance_encoder: AppearanceEncoderModel,
                 point_embedding: PointEmbedding, image_proj: ImageProjection,
                 fusion: str = "full"):
        super().__init__()
        num_scales = len(unet.config.block_out_channels)
        if len(point_embedding.output_dims) != num_scales:
            raise ValueError(f"point embedding has {len(point_embedding.output_dims)} scales but "
                             f"the UNet has {num_scales}")
        latent = unet.config.out_channels  # 4 for SD's VAE
        if unet.config.in_channels != 2 * latent + 1 or \
                appearance_encoder.config.in_channels != latent:
            raise ValueError(
                f"the backbone must be an inpainting UNet ({2 * latent + 1} input channels: "
                f"noisy latents, mask, masked-image latents; has {unet.config.in_channels}) and "
                f"the appearance encoder take the {latent} latent channels (takes "
                f"{appearance_encoder.config.in_channels})")
        self.unet, self.appearance_encoder = unet, appearance_encoder
        self.point_embedding, self.image_proj = point_embedding, image_proj
        self.fusion = fusion
        dims = point_embedding.output_dims
        backbone = {}
        for key in unet.attn_processors:
            layer = key[: -len(".processor")]
            width = unet.get_submodule(layer).to_q.out_features
            if layer.endswith("attn2"):
                backbone[key] = IPAttnProcessor(width, unet.config.cross_attention_dim,
                                                image_proj.num_tokens)
            elif is_fused(layer, fusion):
                dim = dims[layer_scale(layer, num_scales)]
                backbone[key] = PointAttnProcessor(layer, dim, width)
            else:
                backbone[key] = PlainAttnProcessor()
        writer = {}
        for key in appearance_encoder.attn_processors:
            layer = key[: -len(".processor")]
            if layer == appearance_encoder.last_layer:
                writer[key] = AppearanceWriteProcessor(layer, compute=False)
            elif layer.endswith("attn1") and is_fused(layer, fusion):
                writer[key] = AppearanceWriteProcessor(layer)
            else:
                writer[key] = PlainAttnProcessor()
        unet.set_attn_processor(backbone)
        appearance_encoder.set_attn_processor(writer)
        self.to(unet.device, unet.dtype)

    @property
    def attention_processors(self) -> nn.ModuleList:
        """The backbone's processors in `unet.attn_processors` order: the layout of
        `lightning-drag-sd15-attn.bin` (point processors: norm/proj; cross: to_k_ip/to_v_ip)."""
        return nn.ModuleList(self.unet.attn_processors.values())

    def point_processors(self) -> list[PointAttnProcessor]:
        return [p for p in self.unet.attn_processors.values() if isinstance(p, PointAttnProcessor)]

    def encode_appearance(self, latents: torch.Tensor, text_embeddings: torch.Tensor):
        return self.appearance_encoder.encode(latents, text_embeddings)

    def embed_points(self, handle_map: torch.Tensor, target_map: torch.Tensor):
        return self.point_embedding(handle_map, target_map)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor, drag: DragConditions) -> torch.Tensor:
        """sample: (B, 9, h, w) = [noisy latents, mask, masked-image latents];
        encoder_hidden_states: (B, text + image-prompt tokens, dim).
        Returns the noise prediction."""
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                         cross_attention_kwargs={"drag": drag}, return_dict=False)[0]
