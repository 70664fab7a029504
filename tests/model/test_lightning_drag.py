"""Model internals: point processors, reference attention, fusion modes, public layouts."""
from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from model.appearance_encoder import AppearanceEncoderModel
from model.architectures import PUBLIC_POINT_EMBED_DIM, SD15_INPAINT_UNET
from model.attention import DragConditions, PointAttnProcessor
from model.lightning_drag import ImageProjection, LightningDragModel
from model.options import FUSION_MODES
from model.point_embedding import PointEmbedding
from model.points import point_maps
from tests.model.conftest import fresh_model


def inputs(pipe, batch=2, seed=0):
    """Backbone inputs for the tiny model: 64x64 pixels, 8x8 latents."""
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 9, 8, 8, generator=g)
    states = torch.randn(batch, 77 + 4, 32, generator=g)
    source = torch.randn(1, 4, 8, 8, generator=g)
    maps = point_maps([[10, 12], [40, 30]], [[20, 22], [50, 33]], (64, 64))
    return sample, torch.tensor([500] * batch), states, source, maps


def run(model, sample, t, states, source, maps, points=True, points_on=None):
    empty = torch.zeros(1, 77, 32)
    bank = model.encode_appearance(source, empty)
    handles, targets = model.embed_points(*maps) if points else (None, None)
    return model(sample, t, states, DragConditions(bank, handles, targets, points_on))


@pytest.mark.parametrize("fusion", FUSION_MODES)
def test_fresh_point_processors_leave_the_output_unchanged(pipe, fusion):
    model = fresh_model(pipe, fusion)
    args = inputs(pipe)
    with torch.no_grad():
        assert torch.equal(run(model, *args, points=True), run(model, *args, points=False))
        for p in model.point_processors():  # trained (non-zero) projections do change it
            torch.nn.init.normal_(p.proj.weight)
        assert not torch.allclose(run(model, *args, points=True), run(model, *args, points=False))


def test_unconditional_rows_get_exactly_zero_point_terms(pipe):
    model = pipe.model
    sample, t, states, source, maps = inputs(pipe)
    handles, targets = model.embed_points(*maps)
    on = torch.tensor([False, True])
    with torch.no_grad():
        for p in model.point_processors():
            tokens = next(e.shape[2] * e.shape[3] for e in targets
                          if e.shape[1] == p.norm.normalized_shape[0])
            terms = p.point_terms(targets, tokens, 2, on)
            assert torch.count_nonzero(terms[0]) == 0
            assert torch.count_nonzero(terms[1]) > 0
        same = torch.cat([sample[:1], sample[:1]])
        guided = run(model, same, t, states, source, maps, points_on=on)
        plain = run(model, same, t, states, source, maps, points=False)
    assert torch.equal(guided[0], plain[0])
    assert not torch.allclose(guided[1], plain[1])


EXPECTED_FUSED = {  # tiny UNet: 3 cross-attn down blocks x 1 layer, mid, 3 up blocks x 2 layers
    "full": 10, "midup": 7, "up": 6,
}


@pytest.mark.parametrize("fusion", FUSION_MODES)
def test_fusion_mode_decides_which_layers_read_appearance_and_points(pipe, fusion):
    model = fresh_model(pipe, fusion)
    point_layers = {p.layer for p in model.point_processors()}
    bank = model.encode_appearance(torch.randn(1, 4, 8, 8), torch.zeros(1, 77, 32))
    assert set(bank) == point_layers
    assert len(point_layers) == EXPECTED_FUSED[fusion]
    prefixes = {"full": ("down_blocks.", "mid_block.", "up_blocks."),
                "midup": ("mid_block.", "up_blocks."), "up": ("up_blocks.",)}[fusion]
    assert all(layer.startswith(prefixes) and layer.endswith("attn1") for layer in point_layers)


@pytest.mark.parametrize("fusion", FUSION_MODES)
def test_backbone_reads_the_source_appearance(pipe, fusion):
    model = fresh_model(pipe, fusion)
    sample, t, states, source, maps = inputs(pipe)
    with torch.no_grad():
        a = run(model, sample, t, states, source, maps)
        b = run(model, sample, t, states, source + 1.0, maps)
    assert not torch.allclose(a, b)


# --- public layouts, checked on the real SD-1.5 architecture (meta tensors, no memory) -------

def sd15_model():
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_INPAINT_UNET)
        encoder = AppearanceEncoderModel(**{**SD15_INPAINT_UNET, "in_channels": 4})
        points = PointEmbedding(PUBLIC_POINT_EMBED_DIM, 8, 8)
        return LightningDragModel(unet, encoder, points, ImageProjection(768, 1024))


def test_appearance_encoder_parameters_are_the_public_set():
    with torch.device("meta"):
        full = UNet2DConditionModel(**{**SD15_INPAINT_UNET, "in_channels": 4}).state_dict()
        encoder = AppearanceEncoderModel(**{**SD15_INPAINT_UNET, "in_channels": 4}).state_dict()
    last = "up_blocks.3.attentions.2."
    block = last + "transformer_blocks.0."
    dropped = {"conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias",
               last + "proj_out.weight", last + "proj_out.bias"}
    dropped |= {block + k for k in (
        "attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight", "attn1.to_out.0.weight",
        "attn1.to_out.0.bias", "norm2.weight", "norm2.bias", "attn2.to_q.weight",
        "attn2.to_k.weight", "attn2.to_v.weight", "attn2.to_out.0.weight", "attn2.to_out.0.bias",
        "norm3.weight", "norm3.bias", "ff.net.0.proj.weight", "ff.net.0.proj.bias",
        "ff.net.2.weight", "ff.net.2.bias")}
    assert set(encoder) <= set(full)
    assert set(full) - set(encoder) == dropped
    assert block + "norm1.weight" in encoder


# (hidden size, point embedding dim) of each self-attention in the public release
PUBLIC_WIDTHS = {"down_blocks.0": (320, 128), "down_blocks.1": (640, 256),
                 "down_blocks.2": (1280, 512), "mid_block": (1280, 1024),
                 "up_blocks.1": (1280, 512), "up_blocks.2": (640, 256), "up_blocks.3": (320, 128)}


def test_attention_processor_file_has_the_public_keys_and_shapes():
    model = sd15_model()
    names = list(model.unet.attn_processors)
    state = model.attention_processors.state_dict()
    assert len(names) == 32 and len(state) == 16 * 3 + 16 * 2
    assert names[0] == "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor"
    expected = {}
    for i, name in enumerate(names):
        block = next(b for b in PUBLIC_WIDTHS if name.startswith(b + "."))
        hidden, dim = PUBLIC_WIDTHS[block]
        if ".attn1." in name:
            expected |= {f"{i}.norm.weight": (dim,), f"{i}.norm.bias": (dim,),
                         f"{i}.proj.weight": (hidden, dim)}
        else:
            expected |= {f"{i}.to_k_ip.weight": (hidden, 768), f"{i}.to_v_ip.weight": (hidden, 768)}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


def test_point_embedding_has_the_public_keys_and_scales():
    emb = PointEmbedding(PUBLIC_POINT_EMBED_DIM, 8, 8)
    shapes = {k: tuple(v.shape) for k, v in emb.state_dict().items()}
    assert shapes["conv_in.weight"] == (32, 2, 3, 3)
    assert shapes["downsample_blocks_vae.0.conv1.weight"] == (64, 32, 3, 3)
    assert shapes["downsample_blocks_vae.2.conv2.weight"] == (256, 256, 3, 3)
    assert shapes["downsample_blocks_unet.0.conv1.weight"] == (512, 256, 3, 3)
    assert shapes["downsample_blocks_unet.2.conv2.weight"] == (2048, 2048, 3, 3)
    assert len(shapes) == 1 + 3 * 2 + 3 * 2
    assert emb.output_dims == [128, 256, 512, 1024]
    rebuilt = PointEmbedding.for_state_dict(emb.state_dict())
    assert (rebuilt.embed_dim, rebuilt.vae_scale, rebuilt.unet_scale) == (16, 8, 8)
    with torch.device("meta"):
        handles, targets = emb.to("meta")(torch.zeros(1, 1, 512, 512), torch.zeros(1, 1, 512, 512))
    assert [tuple(h.shape[1:]) for h in handles] == [(128, 64, 64), (256, 32, 32),
                                                     (512, 16, 16), (1024, 8, 8)]
    assert [t.shape for t in targets] == [h.shape for h in handles]


def test_point_processor_rejects_a_layer_without_a_matching_scale():
    p = PointAttnProcessor("down_blocks.0.attentions.0.transformer_blocks.0.attn1", 4, 8)
    with pytest.raises(ValueError, match=r"no point embedding has 100 positions \(scales \[\(8, 8\)\]\)"):
        p.point_terms([torch.zeros(1, 4, 8, 8)], 100, 1, None)


def test_cached_step_invariants_give_the_same_output(pipe):
    model = pipe.model
    sample, t, states, source, maps = inputs(pipe)
    bank = model.encode_appearance(source, torch.zeros(1, 77, 32))
    handles, targets = model.embed_points(*maps)
    on = torch.tensor([False, True])
    with torch.no_grad():
        plain = model(sample, t, states, DragConditions(bank, handles, targets, on))
        cached = DragConditions(bank, handles, targets, on, cache={})
        first = model(sample, t, states, cached)
        assert len(cached.cache) == len(model.point_processors())
        second = model(sample, t, states, cached)
    assert torch.equal(plain, first) and torch.equal(plain, second)
