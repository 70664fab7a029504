"""The training loop with the tiny model: learning, resume, data parallelism, ZeRO-3, export,
non-finite losses, config handling."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from model.layout import checkpoint_paths
from model.pipeline import DragEditPipeline
from schemas.typed_config import ConfigError
from tests.conftest import REPO, one_torch_thread
from tests.ray_cluster import clean_env, free_port
from tests.trainer.trainer_helpers import config, known_batches, rank_config
from trainer.config import load_config
from trainer.checkpoint import EXPORT_DIR, list_checkpoints
from trainer.loop import sample_generators, train
from trainer.model import TrainModule, diffusion_loss, noise_scheduler, prepare_inputs

pytestmark = pytest.mark.slow


def exported(run_dir, ckpt) -> DragEditPipeline:
    paths = checkpoint_paths(str(ckpt))
    last = list_checkpoints(str(run_dir))[-1]
    return DragEditPipeline.from_pretrained(os.path.join(last, EXPORT_DIR), paths["base"],
                                            paths["ip_adapter"])


def weights(pipe: DragEditPipeline) -> dict:
    return {k: v.clone() for k, v in TrainModule(pipe.model).state_dict().items()}


@torch.no_grad()
def eval_loss(pipe: DragEditPipeline) -> float:
    """Loss on fixed batches, noise and timesteps: comparable before and after training."""
    module, scheduler = TrainModule(pipe.model), noise_scheduler(pipe)
    batches, total = known_batches(4), 0.0
    for k in range(4):
        inputs, goal, t = prepare_inputs(pipe, scheduler, next(batches), "",
                                         sample_generators(123, k, 0, 4))
        total += diffusion_loss(module(**inputs), goal, t, scheduler).item()
    return total / 4


def test_loss_goes_down_when_overfitting_a_few_pairs(tmp_path, ckpt):
    cfg = config(tmp_path / "run", ckpt, optim={"lr": 3e-3}, train={"steps": 40},
                 checkpoint={"every": 40})
    paths = checkpoint_paths(str(ckpt))
    torch.manual_seed(cfg.train.seed)  # train() starts from the same fresh model
    before = eval_loss(DragEditPipeline.from_pretrained(None, paths["base"], paths["ip_adapter"],
                                                        point_embed_dim=2))
    out = train(cfg, batches=known_batches(2))
    after = eval_loss(exported(tmp_path / "run", ckpt))
    assert out["step"] == 40 and len(out["losses"]) == 40
    assert after < 0.95 * before, (before, after)  # a frozen random backbone limits the fit


def test_resume_equals_uninterrupted(tmp_path, ckpt):
    straight = train(config(tmp_path / "a", ckpt, train={"steps": 6}, checkpoint={"every": 3}),
                     batches=known_batches(2))
    cfg = config(tmp_path / "b", ckpt, train={"steps": 6}, checkpoint={"every": 3})
    first = train(cfg, batches=known_batches(2), stop_after=4)  # dies after step 4
    assert first["stopped_at"] == 4
    assert [os.path.basename(p) for p in list_checkpoints(cfg.run_dir)] == ["step_00000003"]
    # resumes at step 3, with other logging and checkpoint settings: the same weights
    resumed = config(tmp_path / "b", ckpt, train={"steps": 6},
                     checkpoint={"every": 2, "keep_last": 1}, log={"every": 2})
    second = train(resumed, batches=known_batches(2, start=3))
    assert second["step"] == 6 and second["batches"] == 6
    assert [os.path.basename(p) for p in list_checkpoints(cfg.run_dir)] == ["step_00000006"]
    assert load_config(str(tmp_path / "b" / "config.yaml")).to_dict() == resumed.to_dict()
    assert np.allclose(first["losses"][:3] + second["losses"], straight["losses"], atol=1e-6)
    a, b = weights(exported(tmp_path / "a", ckpt)), weights(exported(tmp_path / "b", ckpt))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, ckpt):
    # one process: what two_process_train.py runs as the only rank, here, on one intra-op
    # thread as torchrun's ranks (OMP_NUM_THREADS=1)
    with one_torch_thread():
        one = train(rank_config(tmp_path / "one", ckpt, 2, 1, 3, 2), batches=known_batches(2),
                    device="cpu")
    # two processes under torchrun, each training on its half of every global batch
    script = REPO / "tests" / "trainer" / "two_process_train.py"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={free_port()}", str(script), str(tmp_path / "two"), str(ckpt), "2",
         "3", "2"], cwd=REPO, env=clean_env(OMP_NUM_THREADS="1"), capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(tmp_path / "two" / "summary.json") as f:
        two = json.load(f)
    assert np.allclose(one["losses"], two["losses"], atol=1e-5), (one["losses"], two["losses"])
    a, b = weights(exported(tmp_path / "one", ckpt)), weights(exported(tmp_path / "two", ckpt))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_zero3_runs_and_resumes(tmp_path, ckpt):
    # a ZeRO-3 step is slow on CPU: the fewest steps that resume after one (which restores the
    # partitioned optimiser state of a step) and then step again
    kw = dict(train={"steps": 2, "zero_stage": 3}, checkpoint={"every": 1})
    straight = train(config(tmp_path / "a", ckpt, **kw), batches=known_batches(2))
    cfg = config(tmp_path / "b", ckpt, **kw)
    train(cfg, batches=known_batches(2), stop_after=1)
    resumed = train(cfg, batches=known_batches(2, start=1))
    assert resumed["step"] == 2
    assert np.allclose(straight["losses"][1:], resumed["losses"], atol=1e-6)
    a, b = weights(exported(tmp_path / "a", ckpt)), weights(exported(tmp_path / "b", ckpt))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_export_loads_in_jobs_edit(tmp_path, ckpt):
    train(config(tmp_path / "run", ckpt, train={"steps": 2}), batches=known_batches(2))
    export = os.path.join(list_checkpoints(str(tmp_path / "run"))[-1], EXPORT_DIR)
    image = tmp_path / "in.png"
    mask = tmp_path / "mask.png"
    from PIL import Image
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(image)
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(mask)
    # in this process: what is tested is that the export loads, not the job's process
    # (tests/jobs/test_edit.py runs jobs.edit as a process)
    from jobs import edit

    assert edit.main(["--checkpoints", str(ckpt), "--model-dir", export, "--image", str(image),
                      "--mask", str(mask), "--drag", "20,20->30,25", "--steps", "2", "--out",
                      str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "edited.png").size == (64, 64)


def test_a_non_finite_loss_is_skipped_and_not_applied(tmp_path, ckpt):
    def with_nan():
        stream = known_batches(2)
        for i, batch in enumerate(stream):
            if i == 1:
                batch = {**batch, "source": torch.full_like(batch["source"], float("nan"))}
            yield batch
    out = train(config(tmp_path / "run", ckpt, train={"steps": 2}), batches=with_nan())
    assert out["skipped_nonfinite"] == 1 and out["batches"] == 3 and out["step"] == 2
    assert all(np.isfinite(out["losses"]))
    assert all(torch.isfinite(v).all() for v in weights(exported(tmp_path / "run", ckpt)).values())


def test_config_is_written_and_a_config_that_changes_the_weights_is_refused(tmp_path, ckpt):
    cfg = config(tmp_path / "run", ckpt, train={"steps": 1})
    train(cfg, batches=known_batches(2))
    assert load_config(str(tmp_path / "run" / "config.yaml")).to_dict() == cfg.to_dict()
    changed = config(tmp_path / "run", ckpt, train={"steps": 1, "seed": 5}, optim={"lr": 0.5},
                     log={"every": 7})
    with pytest.raises(ValueError, match=r"these keys change the weights: optim.lr 0.001 -> "
                                         r"0.5, train.seed 0 -> 5; resume with the run's"):
        train(changed, batches=known_batches(2))
    assert load_config(str(tmp_path / "run" / "config.yaml")).to_dict() == cfg.to_dict()


def test_a_mistyped_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {shards: x}\nmodel: {checkpoints: y}\ntrain: {stepz: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) train\.stepz"):
        load_config(str(path))


def test_tensorboard_scalars_and_validation_images_are_written(tmp_path, ckpt):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = config(tmp_path / "run", ckpt, train={"steps": 2}, log={"tensorboard": True})
    out = train(cfg, batches=known_batches(2))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/lr", "train/samples_per_s", "train/data_wait_fraction"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2], tag
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(out["losses"])
    assert tags["images"] == ["validation"]
    grid = Image.open(tmp_path / "run" / "validation" / "step_00000002.png")
    assert grid.width == 3 * 64 + 2 * 4 and grid.height > 2 * 64  # 2 pairs x (source|edit|target)


def test_ema_is_exported_checkpointed_and_resumed(tmp_path, ckpt):
    from safetensors.torch import load_file

    kw = dict(train={"steps": 4, "ema_decay": 0.5}, checkpoint={"every": 2})
    straight = train(config(tmp_path / "a", ckpt, **kw), batches=known_batches(2))
    cfg = config(tmp_path / "b", ckpt, **kw)
    train(cfg, batches=known_batches(2), stop_after=3)
    train(cfg, batches=known_batches(2, start=2))
    a, b = weights(exported(tmp_path / "a", ckpt)), weights(exported(tmp_path / "b", ckpt))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    last = list_checkpoints(str(tmp_path / "a"))[-1]
    shadow = load_file(os.path.join(last, "ema.safetensors"))
    assert all(torch.equal(shadow[k], a[k].float()) for k in a)  # the export is the average
    raw = train(config(tmp_path / "c", ckpt, train={"steps": 4}, checkpoint={"every": 2}),
                batches=known_batches(2))
    assert raw["losses"] == pytest.approx(straight["losses"])  # EMA does not change training
    c = weights(exported(tmp_path / "c", ckpt))
    assert any(not torch.allclose(a[k], c[k]) for k in a)
    with pytest.raises(ValueError, match="ema_decay needs whole weights"):
        train(config(tmp_path / "d", ckpt, train={"steps": 1, "ema_decay": 0.5, "zero_stage": 3}),
              batches=known_batches(2))


def test_learning_rate_warms_up_then_follows_the_schedule():
    from trainer.loop import lr_factor
    cfg = config("unused", "unused", optim={"warmup_steps": 4, "schedule": "cosine",
                                            "min_lr_ratio": 0.1}, train={"steps": 14})
    f = lr_factor(cfg)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0) and f(9) == pytest.approx(0.55)
    assert f(14) == pytest.approx(0.1)
    flat = lr_factor(config("unused", "unused", optim={"schedule": "constant"}))
    assert {flat(s) for s in range(10)} == {1.0}


def test_accumulation_bf16_and_gradient_checkpointing_run(tmp_path, ckpt):
    out = train(config(tmp_path / "run", ckpt, train={
        "steps": 2, "grad_accum": 2, "precision": "bf16", "grad_checkpointing": True}),
        batches=known_batches(2))
    assert (out["step"], out["batches"], out["samples"]) == (2, 4, 8)
    assert all(np.isfinite(out["losses"]))
    assert exported(tmp_path / "run", ckpt).model.unet.dtype == torch.float32  # export loads
