"""DIFT features on the tiny random SD-2.1-style model: shape, determinism in the seed, the
recipe step by step (VAE sample, noise at t=261, UNet on the empty prompt, up_blocks[1],
ensemble mean), precomputed empty-prompt embeddings, and the identity edit's exact match.

What does not hold with random weights: matching features of a shifted image does not recover
the shift. The random VAE's posterior is wide (the sampled latents are mostly noise) and the
noise at t=261 is not shifted with the image, so the random UNet's features follow the noise,
not the content (measured: matches stay at the handles). Shift recovery is tested on synthetic
feature maps instead (test_matching.py); with the real SD-2.1 weights it is DIFT's result.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from model.checkpoint import CheckpointError
from model.images import images_to_tensor
from schemas.dragbench import load_sample
from tests.conftest import REPO
from trainer.evaluation.dift import DiftFeaturizer
from trainer.evaluation.matching import match_points, point_distances, upsample_features

SAMPLE = REPO / "tests" / "fixtures" / "dragbench" / "land_scape" / "PJC_2023-09-14-1925-41"


@pytest.fixture(scope="module")
def dift(extractors) -> DiftFeaturizer:
    return DiftFeaturizer.from_pretrained(extractors["dift_model"])


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)   # H=64, W=96


def test_feature_shape_is_a_sixteenth_of_the_input(dift, image):
    features = dift.features(image, seed=0, ensemble=2)
    channels = dift.unet.config.block_out_channels[-2]       # up_blocks[1]'s output width
    assert features.shape == (1, channels, 64 // 16, 96 // 16)
    assert dift.features(image, seed=0, ensemble=2, size=(128, 64)).shape == (1, channels, 4, 8)
    assert dift.input_size(510, 383) == (512, 384)           # VAE needs multiples of 8


def test_same_seed_same_features_other_seed_other_features(dift, image):
    a = dift.features(image, seed=3, ensemble=2)
    assert torch.equal(a, dift.features(image, seed=3, ensemble=2))
    assert not torch.allclose(a, dift.features(image, seed=4, ensemble=2))


def test_features_follow_the_dift_recipe(dift, image):
    """The same steps written out plainly, on the whole UNet with a non-stopping hook."""
    seed, ensemble = 5, 3
    generator = torch.Generator().manual_seed(seed)
    x = images_to_tensor([image]).repeat(ensemble, 1, 1, 1)
    latents = dift.vae.encode(x).latent_dist.sample(generator=generator)
    latents = latents * dift.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    t = torch.full((ensemble,), 261)
    noisy = dift.scheduler.add_noise(latents, noise, t)
    ids = dift.tokenizer("", padding="max_length", max_length=dift.tokenizer.model_max_length,
                         return_tensors="pt").input_ids
    empty = dift.text_encoder(ids)[0].expand(ensemble, -1, -1)
    kept = []
    hook = dift.unet.up_blocks[1].register_forward_hook(lambda m, i, o: kept.append(o))
    with torch.no_grad():
        dift.unet(noisy, t, encoder_hidden_states=empty)
    hook.remove()
    expected = kept[0].mean(dim=0, keepdim=True)
    torch.testing.assert_close(dift.features(image, seed=seed, ensemble=ensemble), expected)


def test_precomputed_empty_prompt_embeddings_give_the_same_features(dift, extractors, image,
                                                                    tmp_path):
    path = str(tmp_path / "empty.safetensors")
    save_file({"prompt_embeds": dift.encode_prompt("").contiguous()}, path)
    without_text = tmp_path / "sd21"
    shutil.copytree(extractors["dift_model"], without_text,
                    ignore=shutil.ignore_patterns("text_encoder", "tokenizer"))
    light = DiftFeaturizer.from_pretrained(str(without_text), empty_prompt_embeds=path)
    assert light.text_encoder is None
    assert torch.equal(light.features(image, seed=1, ensemble=2),
                       dift.features(image, seed=1, ensemble=2))
    with pytest.raises(ValueError, match="empty-prompt embeddings only"):
        light.encode_prompt("a photo of a cat")


def test_bad_prompt_embeddings_and_missing_parts_are_named(extractors, tmp_path):
    model = extractors["dift_model"]
    wrong = str(tmp_path / "wrong.safetensors")
    save_file({"prompt_embeds": torch.zeros(1, 77, 7)}, wrong)
    with pytest.raises(CheckpointError) as e:
        DiftFeaturizer.from_pretrained(model, empty_prompt_embeds=wrong)
    assert str(e.value) == (f"empty-prompt embeddings {wrong}: shape (1, 77, 7), expected "
                            "(1, L, 32) for this UNet")
    other_key = str(tmp_path / "other.safetensors")
    save_file({"embeds": torch.zeros(1, 77, 32)}, other_key)
    with pytest.raises(CheckpointError) as e:
        DiftFeaturizer.from_pretrained(model, empty_prompt_embeds=other_key)
    assert str(e.value) == (f"empty-prompt embeddings {other_key}: expected exactly one tensor "
                            "'prompt_embeds', found ['embeds']")
    no_unet = tmp_path / "no_unet"
    shutil.copytree(model, no_unet, ignore=shutil.ignore_patterns("unet"))
    with pytest.raises(CheckpointError) as e:
        DiftFeaturizer.from_pretrained(str(no_unet))
    assert str(e.value) == f"{os.path.join(no_unet, 'unet')}: not a directory"


def test_the_identity_edit_matches_every_handle_exactly(dift):
    """Source and edit get the same noise, so an unchanged image has the same features and
    every handle matches itself: MD is the handle-target distance (a real DragBench sample,
    features upsampled to its 512x512 pixels)."""
    sample = load_sample(SAMPLE)
    features = upsample_features(dift.features(sample.image, seed=42, ensemble=2,
                                               size=(128, 128)), (512, 512))
    matched = match_points(features, features.clone(), sample.handles)
    np.testing.assert_array_equal(matched, sample.handles)
    np.testing.assert_allclose(point_distances(matched, sample.targets),
                               [np.hypot(45, 30), np.hypot(33, 37)])
