"""Training the backbone too (model.train_backbone), on a pixel-space tiny model that predicts
clean samples: what small worlds trained from scratch use."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from model.checkpoint import BACKBONE_DIR
from model.layout import checkpoint_paths
from model.pipeline import DragEditPipeline
from model.tiny import save_tiny_checkpoints
from schemas.typed_config import ConfigError
from tests.trainer.trainer_helpers import config, known_batches
from trainer.checkpoint import EXPORT_DIR, list_checkpoints
from trainer.loop import load_pipeline, train
from trainer.model import TrainModule, noise_scheduler, prepare_inputs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pixel_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixel")
    save_tiny_checkpoints(str(root), point_embed_dim=2, resolution=64, pixel_vae_factor=4,
                          block_out_channels=(16, 32), prediction_type="sample")
    return root


def backbone_config(run_dir, ckpt, lr=1e-3, **train):
    return config(run_dir, ckpt, model={"checkpoints": str(ckpt), "point_embed_dim": 2,
                                        "train_backbone": True},
                  optim={"lr": lr, "schedule": "constant"},
                  train={"steps": 3, "point_dropout": 0.0, **train})


def test_the_backbone_is_trained_exported_and_loaded(tmp_path, pixel_ckpt):
    cfg = backbone_config(tmp_path / "run", pixel_ckpt)
    before = {k: v.clone() for k, v in load_pipeline(cfg, "cpu").model.unet.state_dict().items()
              if ".processor." not in k}
    train(cfg, batches=known_batches(2))
    export = os.path.join(list_checkpoints(str(tmp_path / "run"))[-1], EXPORT_DIR)
    assert sorted(os.listdir(os.path.join(export, BACKBONE_DIR))) == [
        "config.json", "diffusion_pytorch_model.safetensors"]
    saved = UNet2DConditionModel.from_pretrained(export, subfolder=BACKBONE_DIR).state_dict()
    assert saved.keys() == before.keys()  # plain UNet weights: the processors are elsewhere
    assert any(not torch.equal(saved[k], before[k]) for k in before), "backbone did not train"
    paths = checkpoint_paths(str(pixel_ckpt))
    pipe = DragEditPipeline.from_pretrained(export, paths["base"], paths["ip_adapter"])
    loaded = pipe.model.unet.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)  # the export's, not the base's


def test_a_sample_predicting_model_regresses_the_clean_target(pixel_ckpt):
    paths = checkpoint_paths(str(pixel_ckpt))
    pipe = DragEditPipeline.from_pretrained(None, paths["base"], paths["ip_adapter"],
                                            point_embed_dim=2)
    scheduler = noise_scheduler(pipe)
    assert scheduler.config.prediction_type == "sample"
    batch = next(known_batches(2))
    _, goal, _ = prepare_inputs(pipe, scheduler, batch, "",
                                [torch.Generator().manual_seed(i) for i in range(2)])
    assert torch.equal(goal, pipe.encode_latents(batch["target"]))


def test_overfitting_with_the_backbone_lowers_the_loss(tmp_path, pixel_ckpt):
    out = train(backbone_config(tmp_path / "run", pixel_ckpt, lr=3e-3, steps=30),
                batches=known_batches(2))
    first, last = np.mean(out["losses"][:5]), np.mean(out["losses"][-5:])
    assert last < 0.5 * first, (first, last)


def test_point_projections_of_a_fresh_model_start_at_zero_or_random(pixel_ckpt):
    """zero: the fresh model computes what its backbone does, whatever the points; random
    (for a backbone trained from scratch): the points change the output from the start."""
    paths = checkpoint_paths(str(pixel_ckpt))
    batch = next(known_batches(2))
    outputs = {}
    for init in ("zero", "random"):
        torch.manual_seed(0)
        pipe = DragEditPipeline.from_pretrained(None, paths["base"], paths["ip_adapter"],
                                                point_embed_dim=2, point_proj_init=init)
        weights = [p.proj.weight for p in pipe.model.point_processors()]
        assert all(bool((w == 0).all()) == (init == "zero") for w in weights)
        inputs, _, _ = prepare_inputs(pipe, noise_scheduler(pipe), batch, "",
                                      [torch.Generator().manual_seed(i) for i in range(2)])
        module = TrainModule(pipe.model)
        with torch.no_grad():
            on = module(**inputs)
            off = module(**{**inputs, "points_on": torch.zeros(2, dtype=torch.bool)})
        outputs[init] = (on, off)
    assert torch.equal(*outputs["zero"])
    assert (outputs["random"][0] - outputs["random"][1]).abs().max() > 1e-3
    assert torch.equal(outputs["zero"][1], outputs["random"][1])  # same model without points
    with pytest.raises(ValueError, match=r"point_proj_init must be one of \('zero', 'random'\), "
                                         r"got 'ones'"):
        DragEditPipeline.from_pretrained(None, paths["base"], paths["ip_adapter"],
                                         point_embed_dim=2, point_proj_init="ones")
    with pytest.raises(ConfigError, match=r"^invalid config: model.point_proj_init: "
                                          r"zero\|random$"):
        config("run", pixel_ckpt, model={"point_proj_init": "ones"})
