"""Attention processors: how the backbone reads appearance tokens, points and the image prompt.

Everything here plugs into diffusers through its extension point, `Attention.processor`, and
receives per-call inputs through `cross_attention_kwargs={"drag": DragConditions(...)}`
(diffusers hands those kwargs to every processor of a UNet call).

Batch order: a backbone batch may be larger than the batch the appearance tokens and point
embeddings were computed for (several candidates, and the guidance branch). Those tensors are
tiled (`repeat`) to the backbone batch, so the backbone batch is laid out branch-major:
[uncond c0..cK, cond c0..cK].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DragConditions:
    """Per-call inputs of the attention processors.

    bank: layer name -> the normed input tokens of that self-attention layer in the appearance
        encoder, (b, n, c). The encoder's writer processors fill it; the backbone reads it.
    handle_embeddings / target_embeddings: one (b, c_s, h_s, w_s) map per UNet scale, from
        `PointEmbedding`; a layer picks the one whose h_s * w_s equals its token count.
    points_on: (B,) bool over the backbone batch. Rows that are False get exactly zero point
        terms: the unconditional branch of point-following guidance.
    cache: when a dict, each layer keeps the appearance keys/values and point terms it derives
        from the fields above and reuses them on later calls. They do not depend on the noisy
        latents, so inference computes them once per edit instead of once per step; training
        leaves it None (one call per set of inputs, gradients flow).
    """
    bank: dict[str, torch.Tensor] = field(default_factory=dict)
    handle_embeddings: list[torch.Tensor] | None = None
    target_embeddings: list[torch.Tensor] | None = None
    points_on: torch.Tensor | None = None
    cache: dict | None = None


def tile_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise ValueError(f"cannot tile a batch of {x.shape[0]} to {batch}")
    return x.repeat(batch // x.shape[0], *([1] * (x.ndim - 1)))


def _attend(attn, query, key, value):
    """Multi-head scaled dot-product attention, then the layer's output projection."""
    b, _, inner = query.shape
    d = inner // attn.heads
    q, k, v = (t.view(b, -1, attn.heads, d).transpose(1, 2) for t in (query, key, value))
    out = F.scaled_dot_product_attention(q, k, v)
    out = out.transpose(1, 2).reshape(b, -1, inner).to(query.dtype)
    return out


def _output(attn, hidden_states, residual):
    hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    return hidden_states / attn.rescale_output_factor


def _check_plain(attn, hidden_states, attention_mask):
    # The SD-1.5 family uses none of these; refusing them beats silently computing something else.
    if attention_mask is not None:
        raise ValueError("attention masks are not supported by the LightningDrag processors")
    if hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None:
        raise ValueError("LightningDrag processors expect (batch, tokens, channels) inputs without "
                         "spatial or group norm")


class Processor(nn.Module):
    """Base of our processors. diffusers reads `__call__`'s signature to choose which
    cross_attention_kwargs to pass, so it is spelled out; it goes through nn.Module.__call__ so
    module hooks (DeepSpeed ZeRO-3 gathers parameters in them) run. Subclasses define forward."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, drag: DragConditions | None = None):
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                drag)


class PlainAttnProcessor(Processor):
    """Ordinary attention (self or cross), for layers that take no drag inputs."""

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                temb=None, drag: DragConditions | None = None):
        _check_plain(attn, hidden_states, attention_mask)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        out = _attend(attn, attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context))
        return _output(attn, out, hidden_states)


class AppearanceWriteProcessor(PlainAttnProcessor):
    """Appearance-encoder self-attention that also stores its (normed) input tokens in the bank.

    compute=False is for the encoder's last self-attention: only its input is used, so nothing
    is computed; that layer has no projection weights (see `AppearanceEncoderModel`), as in the
    public layout.
    """

    def __init__(self, layer: str, compute: bool = True):
        super().__init__()
        self.layer, self.compute = layer, compute

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                temb=None, drag: DragConditions | None = None):
        if drag is not None:
            drag.bank[self.layer] = hidden_states
        if not self.compute:
            return torch.zeros_like(hidden_states)
        return super().forward(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class PointAttnProcessor(Processor):
    """Backbone self-attention that reads the appearance tokens and the point embeddings.

    Keys and values cover [own tokens, appearance tokens]. The point embedding of this layer's
    scale goes through LayerNorm and a zero-initialised projection: the target embedding is
    added to the queries and to the keys of the own tokens, the handle embedding to the keys of
    the appearance tokens. State-dict keys: norm.weight, norm.bias, proj.weight (public layout).
    """

    def __init__(self, layer: str, embed_dim: int, hidden_size: int):
        super().__init__()
        self.layer = layer
        self.norm = nn.LayerNorm(embed_dim)
        self.proj = nn.Linear(embed_dim, hidden_size, bias=False)
        nn.init.zeros_(self.proj.weight)  # a fresh model behaves exactly as without points

    def point_terms(self, embeddings: list[torch.Tensor], tokens: int, batch: int,
                    points_on: torch.Tensor | None) -> torch.Tensor:
        match = [e for e in embeddings if e.shape[2] * e.shape[3] == tokens]
        if not match:
            sizes = [tuple(e.shape[2:]) for e in embeddings]
            raise ValueError(f"{self.layer}: no point embedding has {tokens} positions "
                             f"(scales {sizes})")
        e = match[0].flatten(2).transpose(1, 2)  # (b, tokens, embed_dim)
        e = self.proj(self.norm(e.to(self.proj.weight.dtype)))
        e = tile_batch(e, batch)
        if points_on is not None:
            # where, not multiply: LayerNorm(0) is its bias, so only an explicit zero is zero.
            e = torch.where(points_on.view(-1, 1, 1).to(e.device), e, torch.zeros_like(e))
        return e

    def step_invariants(self, attn, drag: DragConditions | None, batch: int, tokens: int):
        """Appearance keys/values and point terms for a backbone batch (None where absent)."""
        if drag is None:
            return None, None, None, None
        key = (batch, tokens)
        if drag.cache is not None and (self.layer, key) in drag.cache:
            return drag.cache[self.layer, key]
        ref_key = ref_value = target = handle = None
        reference = drag.bank.get(self.layer)
        if reference is not None:
            # project the encoder's own batch, then tile: candidates and branches share it
            reference = reference.to(attn.to_k.weight.dtype)
            ref_key = tile_batch(attn.to_k(reference), batch)
            ref_value = tile_batch(attn.to_v(reference), batch)
        if drag.target_embeddings is not None:
            target = self.point_terms(drag.target_embeddings, tokens, batch, drag.points_on)
            if reference is not None:
                handle = self.point_terms(drag.handle_embeddings, reference.shape[1], batch,
                                          drag.points_on)
        if drag.cache is not None:
            drag.cache[self.layer, key] = (ref_key, ref_value, target, handle)
        return ref_key, ref_value, target, handle

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                temb=None, drag: DragConditions | None = None):
        _check_plain(attn, hidden_states, attention_mask)
        batch, tokens, _ = hidden_states.shape
        ref_key, ref_value, target, handle = self.step_invariants(attn, drag, batch, tokens)
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        if target is not None:
            query = query + target
            key = key + target
        if ref_key is not None:
            key = torch.cat([key, ref_key if handle is None else ref_key + handle], dim=1)
            value = torch.cat([value, ref_value], dim=1)
        return _output(attn, _attend(attn, query, key, value), hidden_states)


class IPAttnProcessor(Processor):
    """Cross-attention over the text tokens plus IP-Adapter's image-prompt tokens (the last
    `num_tokens` of encoder_hidden_states). State-dict keys: to_k_ip.weight, to_v_ip.weight."""

    def __init__(self, hidden_size: int, cross_attention_dim: int, num_tokens: int = 4,
                 scale: float = 1.0):
        super().__init__()
        self.num_tokens = num_tokens
        self.scale = scale
        self.to_k_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                temb=None, drag: DragConditions | None = None):
        _check_plain(attn, hidden_states, attention_mask)
        if encoder_hidden_states is None or encoder_hidden_states.shape[1] <= self.num_tokens:
            raise ValueError(f"IP-Adapter cross-attention needs text tokens followed by "
                             f"{self.num_tokens} image-prompt tokens")
        text = encoder_hidden_states[:, :-self.num_tokens]
        image = encoder_hidden_states[:, -self.num_tokens:]
        if attn.norm_cross:
            text = attn.norm_encoder_hidden_states(text)
        query = attn.to_q(hidden_states)
        out = _attend(attn, query, attn.to_k(text), attn.to_v(text))
        out = out + self.scale * _attend(attn, query, self.to_k_ip(image), self.to_v_ip(image))
        return _output(attn, out, hidden_states)
