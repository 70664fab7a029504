"""Drag-edit inference with the tiny model: flow, counts, determinism, candidates, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.options import FUSION_MODES, SCHEDULES
from model.pipeline import DragEditPipeline, DragInput, guidance_scale
from model.points import DragInputError
from tests.model.conftest import fresh_model, scene, with_model


def count_calls(module):
    calls = []
    handle = module.register_forward_pre_hook(lambda m, a: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("fusion", FUSION_MODES)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_fusion_mode_and_schedule_edits(pipe, fusion, schedule):
    p = with_model(pipe, fresh_model(pipe, fusion))
    image, mask, h, t = scene()
    appearance, hook_a = count_calls(p.model.appearance_encoder)
    backbone, hook_b = count_calls(p.model.unet)
    try:
        r = p(image, mask, h, t, steps=3, schedule=schedule, scheduler="ddim")
    finally:
        hook_a.remove()
        hook_b.remove()
    batch = 1 if schedule == "none" else 2
    assert r.size == r.resolution == (64, 64)  # 96x80 at the tiny model's area, multiples of 64
    assert [im.shape for im in r.images] == [(64, 64, 3)]
    assert r.images[0].dtype == np.uint8
    assert (r.unet_calls, r.unet_samples, r.appearance_calls) == (3, 3 * batch, 1)
    assert (len(backbone), len(appearance)) == (3, 1)  # the encoder runs once per edit


def test_guidance_schedules_decay_from_the_scale_to_one():
    g = 5.0
    assert guidance_scale("constant", g, 7, 10) == g
    for s in ("linear", "square", "inverse-square"):
        assert guidance_scale(s, g, 0, 10) == g
    assert guidance_scale("linear", g, 5, 10) == 3.0
    assert guidance_scale("square", g, 5, 10) == 5 * 0.75 + 0.25
    assert guidance_scale("inverse-square", g, 5, 10) == 4 * 0.25 + 1
    assert guidance_scale("inverse-square", g, 10, 10) == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        guidance_scale("cosine", g, 0, 10)


@pytest.mark.parametrize("scheduler", ["ddim", "lcm"])
def test_same_seed_same_edit_other_seed_other_edit(pipe, scheduler):
    image, mask, h, t = scene()
    a = pipe(image, mask, h, t, steps=3, seed=3, scheduler=scheduler).images[0]
    b = pipe(image, mask, h, t, steps=3, seed=3, scheduler=scheduler).images[0]
    c = pipe(image, mask, h, t, steps=3, seed=4, scheduler=scheduler).images[0]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("scheduler, sequential", [("ddim", 1), ("lcm", 1), ("ddim", 2)])
def test_batched_candidates_equal_separate_calls(pipe, scheduler, sequential):
    image, mask, h, t = scene()
    kw = dict(steps=3, scheduler=scheduler, sequential=sequential)
    batched = pipe(image, mask, h, t, seed=10, candidates=3, **kw)
    assert batched.appearance_calls == sequential and batched.unet_calls == 3 * sequential
    for k in range(3):
        alone = pipe(image, mask, h, t, seed=10 + k, **kw).images[0]
        diff = np.abs(batched.images[k].astype(int) - alone.astype(int)).max()
        assert diff <= 1, f"candidate {k} differs by {diff} levels"
    assert not np.array_equal(batched.images[0], batched.images[1])


def test_sequential_drag_is_several_edits_in_a_row(pipe):
    image, mask, h, t = scene()
    one = pipe(image, mask, h, t, steps=2, sequential=1, scheduler="ddim")
    three = pipe(image, mask, h, t, steps=2, sequential=3, scheduler="ddim")
    assert (three.unet_calls, three.appearance_calls) == (6, 3)
    assert not np.array_equal(one.images[0], three.images[0])


def test_points_guidance_and_scheduler_each_change_the_result(pipe):
    image, mask, h, t = scene()
    base = pipe(image, mask, h, t, steps=3, scheduler="ddim").images[0]
    moved = pipe(image, mask, h, t + [[5, 5]], steps=3, scheduler="ddim").images[0]
    unguided = pipe(image, mask, h, t, steps=3, schedule="none", scheduler="ddim").images[0]
    lcm = pipe(image, mask, h, t, steps=3, scheduler="lcm").images[0]
    for other in (moved, unguided, lcm):
        assert not np.array_equal(base, other)


@pytest.mark.parametrize("candidates", [1, 2])
def test_keep_unmasked_keeps_the_input_outside_the_mask_and_the_edit_inside(pipe, candidates):
    image, mask, h, t = scene()
    kw = dict(steps=2, scheduler="ddim", seed=5, candidates=candidates, resize_back=True)
    edited = pipe(image, mask, h, t, **kw).images
    kept = pipe(image, mask, h, t, keep_unmasked=True, **kw).images
    inside = mask > 0
    for plain, pasted in zip(edited, kept):
        assert np.array_equal(pasted[~inside], image[~inside])
        assert np.array_equal(pasted[inside], plain[inside])
        assert not np.array_equal(plain[~inside], image[~inside])  # the model alone changes it


def test_bf16_edit_runs(tiny_paths):
    p = DragEditPipeline.from_pretrained(tiny_paths["model_dir"], tiny_paths["base"],
                                         tiny_paths["ip_adapter"], dtype=torch.bfloat16)
    image, mask, h, t = scene()
    r = p(image, mask, h, t, steps=2)
    assert p.model.unet.dtype == torch.bfloat16 and r.images[0].shape == (64, 64, 3)


@pytest.mark.parametrize("change, error, message", [
    (dict(handles=[[200, 30]]), DragInputError, "handle point 0 (x=200, y=30) outside the 96x80 image"),
    (dict(targets=[[5, 5]]), DragInputError, "target point 0 (5, 5) is outside the mask; handles "
                                             "and targets must lie in the editable region"),
    (dict(targets=[[60, 45], [61, 45]]), DragInputError,
     "1 handles but 2 targets; every handle needs exactly one target"),
    (dict(handles=[], targets=[]), DragInputError,
     "empty point list: 0 handles, 0 targets; a drag needs at least one handle->target pair"),
    (dict(mask=np.ones((64, 64), np.uint8)), DragInputError, "mask is 64x64 but the image is 96x80"),
    (dict(image=np.zeros((80, 96), np.uint8)), DragInputError,
     "image must be HxWx3 RGB, got shape (80, 96)"),
    (dict(resolution=100), DragInputError, "resolution 100x100 must be positive multiples of 64"),
    (dict(schedule="cosine"), ValueError,
     "schedule must be one of ('none', 'constant', 'linear', 'square', 'inverse-square'), got 'cosine'"),
    (dict(scheduler="euler"), ValueError, "scheduler must be one of ('ddim', 'lcm'), got 'euler'"),
    (dict(candidates=0), ValueError, "steps, candidates and sequential must be at least 1"),
])
def test_bad_inputs_give_clear_errors(pipe, change, error, message):
    image, mask, h, t = scene()
    kw = dict(image=image, mask=mask, handles=h, targets=t, steps=1) | change
    with pytest.raises(error) as e:
        pipe(**kw)
    assert str(e.value) == message


def test_lcm_needs_an_lcm_lora(pipe):
    plain = with_model(pipe, pipe.model)
    plain.lcm = False
    image, mask, h, t = scene()
    with pytest.raises(ValueError, match="the LCM scheduler needs an LCM-LoRA"):
        plain(image, mask, h, t, scheduler="lcm")


def test_mask_reaches_the_model_as_the_trainer_resizes_it(pipe, monkeypatch):
    """At the model resolution the edit sees the mask the trainer's resize_pair makes (nearest
    neighbour with pixel centres), here on a 192 px mask whose 3x downsampling differs between
    cv2's INTER_NEAREST and INTER_NEAREST_EXACT."""
    from trainer.augment import resize_pair

    image = np.full((192, 192, 3), 255, np.uint8)
    mask = np.zeros((192, 192), np.uint8)
    mask[31:98, 40:131] = 255
    masked_inputs = []
    encode = pipe.encode_latents

    def spy(images):
        masked_inputs.append(images.clone())
        return encode(images)

    monkeypatch.setattr(pipe, "encode_latents", spy)
    handles, targets = np.array([[60.0, 60.0]]), np.array([[90.0, 70.0]])
    pipe(image, mask, handles, targets, steps=1, resolution=64)
    seen = (masked_inputs[1][0] < 0.5).all(dim=0).numpy()   # white source, zeroed in the mask
    _, _, expected, _, _ = resize_pair(image, image, mask, handles, targets, 64)
    np.testing.assert_array_equal(seen, expected > 0)


@pytest.mark.parametrize("scheduler, sequential", [("ddim", 1), ("lcm", 1), ("ddim", 2)])
def test_a_batch_of_edits_equals_each_edit_alone(pipe, scheduler, sequential):
    """Three users' edits in one backbone batch (another image, drag, prompt, seed and
    guidance each; two candidates each) give each user what their edit alone gives."""
    inputs = []
    for r in range(3):
        image, mask, h, t = scene(seed=r)
        inputs.append(DragInput(image, mask, h + r, t + r, prompt=["", "a cat", "a dog"][r],
                                seed=7 * r, guidance=[None, 2.0, 5.0][r]))
    kw = dict(steps=3, scheduler=scheduler, sequential=sequential, candidates=2)
    batched = pipe.edit_batch(inputs, **kw)
    assert [len(b.images) for b in batched] == [2, 2, 2]
    assert batched[0].unet_calls == 3 * sequential and batched[0].unet_samples == 3 * 3 * 2 * 2 \
        * sequential
    for x, together in zip(inputs, batched):
        alone = pipe(x.image, x.mask, x.handles, x.targets, prompt=x.prompt, seed=x.seed,
                     guidance=x.guidance, **kw)
        assert together.guidance == alone.guidance and together.size == alone.size
        np.testing.assert_array_equal(together.handles, alone.handles)
        for k in range(2):
            diff = np.abs(together.images[k].astype(int) - alone.images[k].astype(int)).max()
            assert diff <= 1, f"candidate {k} differs by {diff} levels"
    assert not np.array_equal(batched[0].images[0], batched[1].images[0])


def test_a_batch_runs_at_one_size(pipe):
    image, mask, h, t = scene()
    wide = np.concatenate([image, image], axis=1)
    wide_mask = np.concatenate([mask, mask], axis=1)
    with pytest.raises(ValueError, match="a batch of edits runs at one size"):
        pipe.edit_batch([DragInput(image, mask, h, t), DragInput(wide, wide_mask, h, t)], steps=1)
    assert pipe.edit_batch([], steps=1) == []
