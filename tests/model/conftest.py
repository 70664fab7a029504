"""The tiny random checkpoints' paths (tests/conftest.py builds them once per session), and
helpers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.appearance_encoder import AppearanceEncoderModel
from model.lightning_drag import ImageProjection, LightningDragModel
from model.pipeline import DragEditPipeline
from model.point_embedding import PointEmbedding
from model.layout import checkpoint_paths


@pytest.fixture(scope="session")
def tiny_paths(tiny_checkpoints) -> dict[str, str]:
    return checkpoint_paths(str(tiny_checkpoints))


@pytest.fixture(scope="module")
def pipe(tiny_paths) -> DragEditPipeline:
    return DragEditPipeline.from_pretrained(tiny_paths["model_dir"], tiny_paths["base"],
                                            tiny_paths["ip_adapter"],
                                            lcm_lora=tiny_paths["lcm_lora"])


def fresh_model(pipe: DragEditPipeline, fusion: str, seed: int = 0) -> LightningDragModel:
    """A newly initialised LightningDrag model (zero point projections) on a copy of the
    pipeline's backbone, as training starts."""
    from diffusers import UNet2DConditionModel

    src = pipe.model.unet
    unet = UNet2DConditionModel.from_config(src.config)
    unet.load_state_dict({k: v for k, v in src.state_dict().items() if ".processor." not in k})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = AppearanceEncoderModel.from_backbone(unet)
        points = PointEmbedding(2, 8, 2 ** (len(unet.config.block_out_channels) - 1))
        proj = ImageProjection(unet.config.cross_attention_dim,
                               pipe.image_encoder.config.projection_dim)
        return LightningDragModel(unet, encoder, points, proj, fusion=fusion).eval()


def with_model(pipe: DragEditPipeline, model: LightningDragModel) -> DragEditPipeline:
    return DragEditPipeline(model, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.image_encoder,
                            pipe.feature_extractor, pipe.scheduler_config, lcm=pipe.lcm)


def scene(w: int = 96, h: int = 80, seed: int = 0):
    """A random image with a rectangular editable region and one drag inside it."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[10:70, 20:90] = 255
    return image, mask, np.array([[30.0, 30.0]]), np.array([[60.0, 45.0]])
