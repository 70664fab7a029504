"""PixelVAE: exact space-to-depth latents, saved and loaded like a VAE, and a whole tiny
pixel-space LightningDrag model that edits and saves/loads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.checkpoint import latent_channels, load_vae, vae_scale_factor
from model.pipeline import DragEditPipeline
from model.pixel_vae import PixelVAE
from model.tiny import save_tiny_checkpoints
from tests.model.conftest import scene


def test_latents_fold_pixel_blocks_into_channels_and_back_exactly():
    vae = PixelVAE(factor=2)
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    z = vae.encode(x).latent_dist.mode()
    assert z.shape == (2, 12, 2, 3) and latent_channels(vae) == 12
    # channel c*4 + i*2 + j of latent (y, x) is pixel (2y + i, 2x + j) of channel c
    assert z[1, 2 * 4 + 1 * 2 + 0, 1, 2] == x[1, 2, 2 * 1 + 1, 2 * 2 + 0]
    assert torch.equal(vae.decode(z).sample, x)
    assert torch.equal(vae.encode(x).latent_dist.mean, z)
    with pytest.raises(ValueError, match=r"image size \(4, 6\) is not a multiple of 4"):
        PixelVAE(factor=4).encode(x)
    with pytest.raises(ValueError, match="factor must be >= 1, got 0"):
        PixelVAE(factor=0)


def test_saved_as_a_config_and_loaded_by_load_vae(tmp_path):
    PixelVAE(factor=4).save_pretrained(tmp_path / "vae")
    vae = load_vae(str(tmp_path), "vae", torch.bfloat16)
    assert isinstance(vae, PixelVAE) and vae.config.factor == 4 and vae_scale_factor(vae) == 4
    assert vae.dtype == torch.bfloat16


@pytest.fixture(scope="module")
def pixel_paths(tmp_path_factory):
    return save_tiny_checkpoints(str(tmp_path_factory.mktemp("pixel")), resolution=32,
                                 pixel_vae_factor=4, block_out_channels=(16, 32))


def test_a_pixel_space_model_edits_and_round_trips(pixel_paths, tmp_path):
    from model.checkpoint import save_lightning_drag

    pipe = DragEditPipeline.from_pretrained(pixel_paths["model_dir"], pixel_paths["base"],
                                            pixel_paths["ip_adapter"])
    assert pipe.resolution == (32, 32) and pipe.vae_factor == 4
    assert pipe.model.unet.config.in_channels == 2 * 48 + 1
    assert pipe.model.point_embedding.vae_scale == 4
    image, mask, h, t = scene(64, 48)
    out = pipe(image, mask, h, t, steps=2, seed=3)
    out_w, out_h = out.size
    assert out.size == pipe.run_size((64, 48)) and out.images[0].shape == (out_h, out_w, 3)
    save_lightning_drag(pipe.model, str(tmp_path / "ld"))
    again = DragEditPipeline.from_pretrained(str(tmp_path / "ld"), pixel_paths["base"],
                                             pixel_paths["ip_adapter"])
    assert np.array_equal(again(image, mask, h, t, steps=2, seed=3).images[0], out.images[0])


def test_resolution_must_fit_the_model(tmp_path):
    from model.tiny_base import save_tiny_inpainting_base
    with pytest.raises(ValueError, match="resolution 36 is not a multiple of the model's 8 "
                                         "pixels per UNet cell"):
        save_tiny_inpainting_base(str(tmp_path), resolution=36, pixel_vae_factor=4,
                                  block_out_channels=(16, 32))
