"""Tiny random stand-ins for the pretrained checkpoints LightningDrag builds on.

Offline tests cannot download SD-1.5-inpainting or the IP-Adapter image encoder, so these
functions build the same model classes from tiny configs with seeded random weights and save
them in the directory layouts the real checkpoints use. Code under test then loads them with
its normal `from_pretrained` calls. Random weights: good for plumbing and shapes, not images.
"""
from __future__ import annotations

import contextlib
import json
import os

import diffusers
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from model.pixel_vae import PixelVAE

# Sizes that other code (adapters, tests) must agree with.
TINY_CROSS_ATTENTION_DIM = 32  # text encoder hidden size == UNet cross_attention_dim
TINY_IMAGE_EMBED_DIM = 32  # CLIP vision projection_dim (IP-Adapter image_embeds width)
TINY_RESOLUTION = 64  # pixel size: VAE scale factor 8 -> UNet sample_size 8

_MAX_LENGTH = 77  # CLIP context length, as in SD-1.5
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
# A few merges so the BPE actually merges something ("a photo of a cat" uses all of them).
_MERGES = [("c", "a"), ("ca", "t</w>"), ("o", "f</w>"), ("p", "h"), ("ph", "o"), ("t", "o</w>"),
           ("pho", "to</w>")]


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch for one model build without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins for bytes used by GPT-2/CLIP byte-level BPE, in CLIP's order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _tiny_vocab() -> dict[str, int]:
    """CLIP's vocab layout in small: bytes, bytes+</w>, merge results, then the two specials.

    <|endoftext|> gets the largest id as in real CLIP, since CLIPTextModel's legacy pooling
    takes argmax(input_ids) as the end-of-text position.
    """
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in _MERGES] + [_BOS, _EOS]
    return {tok: i for i, tok in enumerate(tokens)}


def _save_tokenizer(out_dir: str) -> int:
    """Write vocab.json, merges.txt and configs like SD-1.5's tokenizer/; return vocab size."""
    os.makedirs(out_dir, exist_ok=True)
    vocab = _tiny_vocab()
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": _MAX_LENGTH,
        "bos_token": _BOS,
        "eos_token": _EOS,
        "unk_token": _EOS,
        "pad_token": _EOS,  # SD-1.5 pads with <|endoftext|>
        "do_lower_case": True,
        "add_prefix_space": False,
        "errors": "replace",
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    special = {"bos_token": _BOS, "eos_token": _EOS, "unk_token": _EOS, "pad_token": _EOS}
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special, f, indent=2)
    return len(vocab)


def save_tiny_inpainting_base(out_dir: str, seed: int = 0, resolution: int = TINY_RESOLUTION,
                              pixel_vae_factor: int = 0,
                              block_out_channels: tuple = (32, 32, 64, 64),
                              prediction_type: str = "epsilon",
                              layers_per_block: int = 1) -> None:
    """Write a tiny random StableDiffusionInpaintPipeline directory (SD-1.5-inpainting layout).

    pixel_vae_factor=0: a random AutoencoderKL with SD's 8x scale factor. pixel_vae_factor=f:
    an exact space-to-depth `PixelVAE` of factor f instead (3*f*f latent channels), for small
    worlds trained from scratch. The UNet has SD's block pattern (cross-attention blocks, then
    one plain block at the coarsest scale) with `block_out_channels`. prediction_type: what
    the UNet predicts (the scheduler's setting: epsilon as SD-1.5, v_prediction, sample).
    layers_per_block: SD-1.5 has 2 (up blocks then hold 3 attentions, which the public
    release's code indexes); 1 is half the work for tests."""
    factor = pixel_vae_factor or 8
    cell = factor * 2 ** (len(block_out_channels) - 1)
    if resolution % cell:
        raise ValueError(f"resolution {resolution} is not a multiple of the model's {cell} "
                         "pixels per UNet cell")
    os.makedirs(out_dir, exist_ok=True)
    latent = 3 * pixel_vae_factor ** 2 if pixel_vae_factor else 4
    levels = len(block_out_channels)

    # UNet: input = noisy latents + mask + masked-image latents (9 channels with SD's VAE).
    with _seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=resolution // factor,
            in_channels=2 * latent + 1,
            out_channels=latent,
            down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
            mid_block_type="UNetMidBlock2DCrossAttn",
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            norm_num_groups=8,
            attention_head_dim=8,  # diffusers' SD naming: this is the number of heads
            cross_attention_dim=TINY_CROSS_ATTENTION_DIM,
        )
    unet.save_pretrained(os.path.join(out_dir, "unet"))

    if pixel_vae_factor:
        PixelVAE(factor=pixel_vae_factor).save_pretrained(os.path.join(out_dir, "vae"))
    else:
        save_tiny_vae(os.path.join(out_dir, "vae"), seed=seed, resolution=resolution)
    save_tiny_text_encoder(out_dir, seed=seed)

    save_scheduler_and_index(out_dir, "StableDiffusionInpaintPipeline",
                             "PixelVAE" if pixel_vae_factor else "AutoencoderKL", prediction_type)


def save_scheduler_and_index(out_dir: str, pipeline_class: str, vae_class: str,
                             prediction_type: str) -> None:
    """SD's DDIM scheduler config (with `prediction_type`) and the pipeline's model_index.json.
    Components are saved one by one (keeping the tokenizer's vocab.json/merges.txt layout of
    real SD repos), so the index is written by hand; no safety checker."""
    DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    ).save_pretrained(os.path.join(out_dir, "scheduler"))
    model_index = {
        "_class_name": pipeline_class,
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", vae_class],
    }
    with open(os.path.join(out_dir, "model_index.json"), "w", encoding="utf-8") as f:
        json.dump(model_index, f, indent=2)


def save_tiny_vae(out_dir: str, seed: int = 0, resolution: int = TINY_RESOLUTION) -> None:
    """Write a tiny random SD VAE: 4 blocks -> 3 downsamples -> scale factor 8, as in SD."""
    with _seeded(seed):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            norm_num_groups=8,
            latent_channels=4,
            sample_size=resolution,
            scaling_factor=0.18215,
        )
    vae.save_pretrained(out_dir)


def save_tiny_text_encoder(out_dir: str, seed: int = 0) -> None:
    """Write out_dir/tokenizer/ and out_dir/text_encoder/ (a tiny random CLIP text model with a
    hidden size of TINY_CROSS_ATTENTION_DIM), as an SD pipeline directory holds them."""
    vocab = _tiny_vocab()
    vocab_size = _save_tokenizer(os.path.join(out_dir, "tokenizer"))
    with _seeded(seed):
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=TINY_CROSS_ATTENTION_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=_MAX_LENGTH,
            projection_dim=32,
            bos_token_id=vocab[_BOS],
            eos_token_id=vocab[_EOS],
            pad_token_id=vocab[_EOS],
        ))
    text_encoder.save_pretrained(os.path.join(out_dir, "text_encoder"))
    # transformers 5 saves the keys without the model's `text_model.` prefix; 4.x, which the
    # public release runs, initialises such a file at random. Both read the prefixed keys.
    weights = os.path.join(out_dir, "text_encoder", "model.safetensors")
    state = load_file(weights)
    save_file({k if k.startswith("text_model.") else f"text_model.{k}": v
               for k, v in state.items()}, weights, metadata={"format": "pt"})


def save_tiny_image_encoder(out_dir: str, seed: int = 0) -> None:
    """Write a tiny random CLIP image encoder like IP-Adapter's models/image_encoder/: 224 px
    input (CLIP's, which the public release feeds whatever the directory says) and, as there,
    no preprocessor_config.json."""
    with _seeded(seed):
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,
            patch_size=32,
            projection_dim=TINY_IMAGE_EMBED_DIM,
        ))
    encoder.save_pretrained(out_dir)
