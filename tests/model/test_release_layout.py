"""`jobs.make_tiny_model --release-compatible`: every file holds the key names and shapes the
public release's code reads, derived here from what that code builds (not from our modules),
and the tree runs here too."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from jobs import make_tiny_model
from model.layout import checkpoint_paths
from model.pipeline import DragEditPipeline


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("release") / "ck")
    assert make_tiny_model.main(["--out", out, "--release-compatible", "--seed", "4"]) == 0
    return out


@pytest.fixture(scope="module")
def unet_config(root) -> dict:
    with open(os.path.join(root, "stable-diffusion-inpainting", "unet", "config.json")) as f:
        return json.load(f)


def torch_file(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_the_backbone_has_the_blocks_the_release_indexes(root, unet_config):
    assert unet_config["layers_per_block"] == 2 and len(unet_config["block_out_channels"]) == 4
    keys = load_file(os.path.join(root, "stable-diffusion-inpainting", "unet",
                                  "diffusion_pytorch_model.safetensors"))
    assert any(k.startswith("up_blocks.3.attentions.2.") for k in keys)


def test_point_embedding_is_the_release_width_16_model(root):
    # PointEmbeddingModel(embed_dim=16): conv_in 2 -> 32, three stride-2 blocks doubling to
    # 256 (8x VAE), then three more from 256 (8x UNet); bias-free 3x3 convs.
    state = torch_file(os.path.join(root, "lightning-drag-sd15", "point_embedding",
                                    "point_embedding.pt"))
    expected = {"conv_in.weight": (32, 2, 3, 3)}
    for group, base in (("downsample_blocks_vae", 32), ("downsample_blocks_unet", 256)):
        for i in range(3):
            c_in, c_out = base * 2 ** i, base * 2 ** (i + 1)
            expected[f"{group}.{i}.conv1.weight"] = (c_out, c_in, 3, 3)
            expected[f"{group}.{i}.conv2.weight"] = (c_out, c_out, 3, 3)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


def test_appearance_encoder_is_the_unet_without_the_releases_removed_tail(root, unet_config):
    with torch.device("meta"):
        full = UNet2DConditionModel(**{k: v for k, v in unet_config.items()
                                       if not k.startswith("_")} | {"in_channels": 4})
    last = "up_blocks.3.attentions.2."
    removed = (f"{last}transformer_blocks.0.attn1.to_", f"{last}transformer_blocks.0.norm2.",
               f"{last}transformer_blocks.0.attn2.", f"{last}transformer_blocks.0.norm3.",
               f"{last}transformer_blocks.0.ff.", f"{last}proj_out.", "conv_norm_out.",
               "conv_out.")
    expected = {k: tuple(v.shape) for k, v in full.state_dict().items()
                if not k.startswith(removed)}
    d = os.path.join(root, "lightning-drag-sd15", "appearance_encoder")
    state = load_file(os.path.join(d, "diffusion_pytorch_model.safetensors"))
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    with open(os.path.join(d, "config.json")) as f:
        assert json.load(f)["in_channels"] == 4


def test_attention_file_and_ip_adapter_index_the_processors_in_diffusers_order(root,
                                                                             unet_config):
    with torch.device("meta"):
        unet = UNet2DConditionModel(**{k: v for k, v in unet_config.items()
                                       if not k.startswith("_")})
    widths, cross = unet_config["block_out_channels"], unet_config["cross_attention_dim"]
    expected, ip = {}, {}
    for i, name in enumerate(unet.attn_processors):
        block, index = name.split(".")[:2]
        scale = 3 if block == "mid_block" else \
            int(index) if block == "down_blocks" else 3 - int(index)
        hidden = widths[scale]
        if ".attn1." in name:  # the point terms: LayerNorm + projection of scale's embedding
            points = 16 * 8 * 2 ** scale
            expected |= {f"{i}.norm.weight": (points,), f"{i}.norm.bias": (points,),
                         f"{i}.proj.weight": (hidden, points)}
        else:
            ip |= {f"{i}.to_k_ip.weight": (hidden, cross), f"{i}.to_v_ip.weight": (hidden, cross)}
    attn = torch_file(os.path.join(root, "lightning-drag-sd15", "lightning-drag-sd15-attn.bin"))
    assert {k: tuple(v.shape) for k, v in attn.items()} == expected | ip
    adapter = torch_file(os.path.join(root, "IP-Adapter", "models", "ip-adapter_sd15.bin"))
    assert {k: tuple(v.shape) for k, v in adapter["ip_adapter"].items()} == ip
    with open(os.path.join(root, "IP-Adapter", "models", "image_encoder", "config.json")) as f:
        embed = json.load(f)["projection_dim"]
    assert {k: tuple(v.shape) for k, v in adapter["image_proj"].items()} == {
        "proj.weight": (4 * cross, embed), "proj.bias": (4 * cross,),
        "norm.weight": (cross,), "norm.bias": (cross,)}


def test_text_and_image_encoders_are_what_transformers_4_reads(root):
    text = os.path.join(root, "stable-diffusion-inpainting", "text_encoder")
    keys = load_file(os.path.join(text, "model.safetensors"))
    assert keys and all(k.startswith("text_model.") for k in keys)
    with open(os.path.join(text, "config.json")) as f:
        assert json.load(f)["architectures"] == ["CLIPTextModel"]
    image = os.path.join(root, "IP-Adapter", "models", "image_encoder")
    with open(os.path.join(image, "config.json")) as f:
        assert json.load(f)["image_size"] == 224  # what CLIPImageProcessor() feeds
    assert not os.path.exists(os.path.join(image, "preprocessor_config.json"))
    keys = load_file(os.path.join(image, "model.safetensors"))
    assert all(k.startswith(("vision_model.", "visual_projection.")) for k in keys)


def test_the_tree_has_the_release_vae_and_edits_here(root):
    paths = checkpoint_paths(root)
    assert paths["vae"] == os.path.join(root, "sd-vae-ft-mse")
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        assert os.path.isfile(os.path.join(paths["vae"], name))
    pipe = DragEditPipeline.from_pretrained(paths["model_dir"], paths["base"],
                                            paths["ip_adapter"], vae_dir=paths["vae"])
    assert pipe.model.point_embedding.embed_dim == 16
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.full((64, 64), 255, np.uint8)
    result = pipe(image, mask, [[20, 20]], [[30, 25]], steps=1)
    assert result.images[0].shape == (64, 64, 3)


@pytest.mark.parametrize("flags, message", [
    (["--pixel-vae-factor", "4"], "error: --release-compatible: the release's code builds an "
                                  "AutoencoderKL (no pixel-space VAE)"),
    (["--block-out-channels", "32,64"], "error: --release-compatible: the release's model has "
                                        "4 UNet scales; block_out_channels 32,64 has 2"),
])
def test_release_compatible_refuses_what_the_release_cannot_build(flags, message, tmp_path,
                                                                  capsys):
    out = tmp_path / "ck"
    assert make_tiny_model.main(["--out", str(out), "--release-compatible", *flags]) == 2
    assert capsys.readouterr().err.strip() == message
    assert not out.exists()
