"""The tiny random base checkpoints load back offline with the standard loaders and run."""
from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from PIL import Image

from model.tiny_base import (
    TINY_CROSS_ATTENTION_DIM,
    TINY_IMAGE_EMBED_DIM,
    TINY_RESOLUTION,
    save_tiny_image_encoder,
    save_tiny_inpainting_base,
)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once at import; patch the value it already read too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("tiny_base")
    save_tiny_inpainting_base(str(d), seed=0)
    return str(d)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("tiny_image_encoder")
    save_tiny_image_encoder(str(d), seed=0)
    return str(d)


def test_layout_matches_real_checkpoints(base_dir, encoder_dir):
    base = Path(base_dir)
    for rel in ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                "text_encoder/config.json", "text_encoder/model.safetensors",
                "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
                "scheduler/scheduler_config.json"]:
        assert (base / rel).is_file(), rel
    index = json.loads((base / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInpaintPipeline"
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    assert (base / "tokenizer/merges.txt").read_text().startswith("#version: 0.2\n")
    for rel in ["config.json", "model.safetensors"]:
        assert (Path(encoder_dir) / rel).is_file(), rel
    # As IP-Adapter's models/image_encoder/: no preprocessor file (CLIP's 224 px defaults).
    assert not (Path(encoder_dir) / "preprocessor_config.json").exists()


def test_unet(base_dir):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet")
    assert unet.config.in_channels == 9 and unet.config.sample_size == TINY_RESOLUTION // 8
    with torch.no_grad():
        out = unet(torch.randn(1, 9, 8, 8), 10,
                   encoder_hidden_states=torch.randn(1, 77, TINY_CROSS_ATTENTION_DIM)).sample
    assert out.shape == (1, 4, 8, 8)


def test_vae(base_dir):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(base_dir, subfolder="vae")
    assert vae.config.scaling_factor == 0.18215
    with torch.no_grad():
        latents = vae.encode(torch.randn(1, 3, TINY_RESOLUTION, TINY_RESOLUTION)).latent_dist.sample()
        assert latents.shape == (1, 4, 8, 8)
        assert vae.decode(latents).sample.shape == (1, 3, TINY_RESOLUTION, TINY_RESOLUTION)


def test_tokenizer_and_text_encoder(base_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(base_dir, subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(base_dir, subfolder="text_encoder")
    assert tok.model_max_length == 77 and tok.pad_token == "<|endoftext|>"
    assert len(tok) == enc.config.vocab_size
    batch = tok(["a photo of a cat", ""], padding="max_length", max_length=77, truncation=True,
                return_tensors="pt")
    assert batch.input_ids.shape == (2, 77) and int(batch.input_ids.max()) < enc.config.vocab_size
    # The merges are used: "a photo of a cat" is 5 word tokens between the specials.
    assert tok.convert_ids_to_tokens(batch.input_ids[0, :7].tolist()) == [
        "<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>", "<|endoftext|>"]
    with torch.no_grad():
        hidden = enc(batch.input_ids[1:]).last_hidden_state
    assert hidden.shape == (1, 77, TINY_CROSS_ATTENTION_DIM)


def test_scheduler(base_dir):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_pretrained(base_dir, subfolder="scheduler")
    assert sched.config.beta_schedule == "scaled_linear" and sched.config.steps_offset == 1
    assert sched.config.prediction_type == "epsilon" and not sched.config.set_alpha_to_one


def test_image_encoder(encoder_dir):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    proc = CLIPImageProcessor()
    enc = CLIPVisionModelWithProjection.from_pretrained(encoder_dir)
    pixels = proc(images=Image.new("RGB", (100, 80), (120, 30, 200)), return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 224, 224) and enc.config.image_size == 224
    with torch.no_grad():
        assert enc(pixels).image_embeds.shape == (1, TINY_IMAGE_EMBED_DIM)


def test_whole_pipeline_loads_and_runs(base_dir):
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(base_dir)
    assert pipe.vae_scale_factor == 8 and pipe.safety_checker is None
    out = pipe("a photo of a cat", image=Image.new("RGB", (64, 64)),
               mask_image=Image.new("L", (64, 64), 255), height=TINY_RESOLUTION,
               width=TINY_RESOLUTION, num_inference_steps=1, output_type="np")
    assert out.images.shape == (1, TINY_RESOLUTION, TINY_RESOLUTION, 3)


def test_weights_are_deterministic_in_seed(tmp_path):
    def unet_bytes(name: str, seed: int) -> bytes:
        save_tiny_inpainting_base(str(tmp_path / name), seed=seed)
        return (tmp_path / name / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()

    first = unet_bytes("a", 0)
    assert unet_bytes("b", 0) == first
    assert unet_bytes("c", 1) != first
