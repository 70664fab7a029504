"""What happens around the network, as the public release does it: the run size, the points
and mask under that resize, per-scheduler defaults and the release's VAE directory."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from model.layout import checkpoint_paths
from model.options import DEFAULT_GUIDANCE, DEFAULT_STEPS
from model.pipeline import DragEditPipeline
from schemas.coords import area_size, resize_mask, scale_points


@pytest.mark.parametrize("size, side, multiple, expected", [
    ((1280, 853), 512, 64, (640, 448)),     # the photo
    ((512, 512), 512, 64, (512, 512)),
    ((853, 1280), 512, 64, (448, 640)),     # portrait: the same rule on the other side
    ((100, 100), 512, 64, (512, 512)),      # small inputs grow to the area
    ((4000, 10), 512, 64, (10240, 64)),     # at least one multiple on the short side
    ((1280, 853), 64, 64, (64, 64)),        # the tiny model: 64 px
    ((96, 80), 64, 8, (72, 56)),            # sqrt(4096/7680)=0.730: 70.1 -> 72, 58.4 -> 56
])
def test_area_size_is_the_release_rule(size, side, multiple, expected):
    assert area_size(size, side, multiple) == expected


def test_area_size_rounds_halves_to_even_as_numpy():
    # 9x4 at side 60 is exactly 90x40 (k = 10): 90/36 = 2.5 -> 2, 90/60 = 1.5 -> 2.
    assert area_size((9, 4), 60, 36) == (72, 36)
    assert area_size((9, 4), 60, 60) == (120, 60)


@pytest.fixture(scope="module")
def tiny(tiny_paths) -> DragEditPipeline:
    return DragEditPipeline.from_pretrained(tiny_paths["model_dir"], tiny_paths["base"],
                                            tiny_paths["ip_adapter"],
                                            lcm_lora=tiny_paths["lcm_lora"])


def photo(w: int, h: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    handles = np.array([[w * 0.4, h * 0.4], [w * 0.3 + 0.25, h * 0.6]])
    targets = np.array([[w * 0.6, h * 0.5], [w * 0.35, h * 0.55]])
    return image, mask, handles, targets


def test_default_run_size_keeps_the_aspect_ratio_and_maps_points_exactly(tiny, monkeypatch):
    # The tiny model is 64 px, multiples of 64: a 3:1 photo runs at 128x64 (sqrt(4096 / 786432)
    # = 0.0722: 110.9 -> 2 x 64, 37.0 -> 1 x 64).
    image, mask, handles, targets = photo(1536, 512)
    assert tiny.run_size((1536, 512)) == (128, 64)
    seen = {}
    original = tiny._edit

    def spy(source, mask_t, h, t, *rest):
        seen.update(source=tuple(source.shape), mask=mask_t[0, 0].cpu().numpy(), handles=h[0])
        return original(source, mask_t, h, t, *rest)

    monkeypatch.setattr(tiny, "_edit", spy)
    result = tiny(image, mask, handles, targets, steps=2)
    assert result.resolution == result.size == (128, 64)
    assert all(im.shape == (64, 128, 3) for im in result.images)
    assert seen["source"][2:] == (64, 128)
    expected = scale_points(handles, (1536, 512), (128, 64))
    np.testing.assert_array_equal(result.handles, expected)
    np.testing.assert_array_equal(seen["handles"], expected)
    np.testing.assert_array_equal(result.targets, scale_points(targets, (1536, 512), (128, 64)))
    # x' = (x + 0.5) * s - 0.5 with s = 1/12: handle 0 at x = 614.4 -> 50.7458...
    assert result.handles[0, 0] == pytest.approx((1536 * 0.4 + 0.5) / 12 - 0.5)
    np.testing.assert_array_equal(seen["mask"] > 0, resize_mask(mask, (128, 64)) > 0)


def test_resized_mask_covers_every_mapped_point(tiny, monkeypatch):
    # A one-pixel-wide mask column at x = 60: halving by nearest neighbour with pixel centres
    # samples the odd columns only, so the column is gone; the points must still sit on
    # editable pixels.
    h, w = 128, 128
    image = np.full((h, w, 3), 100, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[40:90, 60] = 255
    handles, targets = np.array([[60.0, 45.0]]), np.array([[60.0, 80.0]])
    assert not resize_mask(mask, (64, 64)).any()
    seen = {}
    original = tiny._edit

    def spy(source, mask_t, *rest):
        seen["mask"] = mask_t[0, 0].cpu().numpy()
        return original(source, mask_t, *rest)

    monkeypatch.setattr(tiny, "_edit", spy)
    result = tiny(image, mask, handles, targets, steps=1, resolution=64)
    for x, y in np.floor(np.concatenate([result.handles, result.targets]) + 0.5).astype(int):
        assert seen["mask"][y, x] == 1


def test_resize_back_returns_the_input_size_and_its_points(tiny):
    image, mask, handles, targets = photo(96, 80)
    result = tiny(image, mask, handles, targets, steps=1, resize_back=True)
    assert result.size == (96, 80) and result.images[0].shape == (80, 96, 3)
    assert result.resolution == (64, 64)
    np.testing.assert_array_equal(result.handles, handles)


def test_keep_unmasked_at_the_run_size_keeps_the_resized_source(tiny):
    from schemas.coords import resize_image
    image, mask, handles, targets = photo(128, 128)
    result = tiny(image, mask, handles, targets, steps=1, keep_unmasked=True)
    assert result.size == (64, 64)
    outside = resize_mask(mask, (64, 64)) == 0
    np.testing.assert_array_equal(result.images[0][outside], resize_image(image, (64, 64))[outside])


def test_explicit_resolution_w_by_h_and_bad_multiples(tiny):
    image, mask, handles, targets = photo(96, 80)
    result = tiny(image, mask, handles, targets, steps=1, resolution=(128, 64))
    assert result.resolution == result.size == (128, 64)
    with pytest.raises(ValueError, match="resolution 100x64 must be positive multiples of 64"):
        tiny(image, mask, handles, targets, steps=1, resolution=(100, 64))


@pytest.mark.parametrize("scheduler", ["ddim", "lcm"])
def test_steps_and_guidance_default_per_scheduler(tiny, scheduler):
    image, mask, handles, targets = photo(64, 64)
    result = tiny(image, mask, handles, targets, scheduler=scheduler)
    assert (result.steps, result.guidance) == {"ddim": (25, 4.0), "lcm": (8, 3.0)}[scheduler]
    assert (DEFAULT_STEPS[scheduler], DEFAULT_GUIDANCE[scheduler]) == (result.steps,
                                                                        result.guidance)
    assert result.unet_calls == result.steps


def test_checkpoints_root_takes_the_release_vae(tiny_paths, tmp_path):
    root = os.path.dirname(tiny_paths["base"])
    assert checkpoint_paths(root)["vae"] == os.path.join(tiny_paths["base"], "vae")
    copy = tmp_path / "ck"
    shutil.copytree(root, copy)
    shutil.copytree(copy / "stable-diffusion-inpainting" / "vae", copy / "sd-vae-ft-ema")
    assert checkpoint_paths(str(copy))["vae"] == str(copy / "sd-vae-ft-ema")
    shutil.copytree(copy / "stable-diffusion-inpainting" / "vae", copy / "sd-vae-ft-mse")
    assert checkpoint_paths(str(copy))["vae"] == str(copy / "sd-vae-ft-mse")  # run_ui.sh's
