"""LPIPS in plain torch: torchvision's AlexNet layout and LPIPS's keys, exact zero for identical
images, growth with noise, symmetry, regions, and bad weight files with their exact errors."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from model.checkpoint import CheckpointError
from trainer.evaluation.lpips import (LPIPS, LPIPS_SIZE, image_distance, load_lpips,
                                      region_distances)
from trainer.evaluation.tiny import random_alexnet_state, random_lpips_state

# torchvision.models.alexnet().features (conv layers) and the lpips package's v0.1 alex.pth.
EXPECTED_KEYS = [
    ("features.0.weight", (64, 3, 11, 11)), ("features.0.bias", (64,)),
    ("features.3.weight", (192, 64, 5, 5)), ("features.3.bias", (192,)),
    ("features.6.weight", (384, 192, 3, 3)), ("features.6.bias", (384,)),
    ("features.8.weight", (256, 384, 3, 3)), ("features.8.bias", (256,)),
    ("features.10.weight", (256, 256, 3, 3)), ("features.10.bias", (256,)),
    ("lin0.model.1.weight", (1, 64, 1, 1)), ("lin1.model.1.weight", (1, 192, 1, 1)),
    ("lin2.model.1.weight", (1, 384, 1, 1)), ("lin3.model.1.weight", (1, 256, 1, 1)),
    ("lin4.model.1.weight", (1, 256, 1, 1)),
]


@pytest.fixture(scope="module")
def lpips() -> LPIPS:
    model = LPIPS()
    model.load_state_dict({**random_alexnet_state(0), **random_lpips_state(0)})
    return model.eval()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A smooth image with some structure, 96x128."""
    y, x = np.mgrid[0:96, 0:128]
    image = np.stack([x * 2, y * 2, (x + y) % 256], axis=2).astype(np.uint8)
    image[30:60, 40:90] = (220, 180, 40)
    return image


def noisy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def test_layout_matches_torchvision_alexnet_and_lpips_keys():
    state = LPIPS().state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == EXPECTED_KEYS


def test_the_five_relu_outputs_have_alexnets_sizes_at_224():
    outputs = LPIPS().trunk(torch.zeros(1, 3, LPIPS_SIZE, LPIPS_SIZE))
    assert [tuple(o.shape[1:]) for o in outputs] == [(64, 55, 55), (192, 27, 27), (384, 13, 13),
                                                     (256, 13, 13), (256, 13, 13)]


def test_identical_images_are_exactly_zero_apart(lpips, photo):
    assert image_distance(lpips, photo, photo.copy()) == 0.0
    assert region_distances(lpips, photo, photo, np.ones(photo.shape[:2], np.uint8))[0] == 0.0


def test_distance_grows_with_noise_and_is_symmetric(lpips, photo):
    distances = [image_distance(lpips, photo, noisy(photo, s)) for s in (4, 16, 48, 96)]
    assert 0 < distances[0] < distances[1] < distances[2] < distances[3]
    other = noisy(photo, 16)
    assert image_distance(lpips, photo, other) == image_distance(lpips, other, photo)


def test_region_distances_see_where_the_images_differ(lpips, photo):
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[:, :64] = 255
    changed = photo.copy()
    changed[:, :64] = noisy(photo, 60)[:, :64]
    inside, outside = region_distances(lpips, photo, changed, mask)
    assert inside > 5 * outside > 0          # outside only near the boundary (receptive fields)
    inside, outside = region_distances(lpips, photo, changed, np.full_like(mask, 255))
    assert inside > 0 and np.isnan(outside)  # nothing outside a full mask


def test_loads_the_released_file_layouts(lpips, photo, tmp_path):
    alexnet = {**random_alexnet_state(0),                    # the full torchvision file also
               "classifier.1.weight": torch.zeros(8, 4),     # holds the classifier: ignored
               "classifier.1.bias": torch.zeros(8)}
    torch.save(alexnet, tmp_path / "alexnet.pth")
    torch.save(random_lpips_state(0), tmp_path / "alex.pth")
    loaded = load_lpips(str(tmp_path / "alexnet.pth"), str(tmp_path / "alex.pth"))
    other = noisy(photo, 30)
    assert image_distance(loaded, photo, other) == image_distance(lpips, photo, other)


def _write(tmp_path, name, state) -> str:
    path = str(tmp_path / name)
    torch.save(state, path)
    return path


def test_bad_alexnet_files_name_the_keys(tmp_path):
    heads = _write(tmp_path, "alex.pth", random_lpips_state(0))
    state = random_alexnet_state(0)
    del state["features.10.bias"]
    state["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    path = _write(tmp_path, "alexnet.pth", state)
    with pytest.raises(CheckpointError) as e:
        load_lpips(path, heads)
    assert str(e.value) == (f"AlexNet weights {path}: missing keys: features.10.bias; wrong "
                            "shapes: features.0.weight (64, 3, 5, 5) (expected (64, 3, 11, 11))")


def test_bad_lpips_files_name_the_keys(tmp_path):
    alexnet = _write(tmp_path, "alexnet.pth", random_alexnet_state(0))
    state = random_lpips_state(0)
    state["lin0.model.0.weight"] = state.pop("lin0.model.1.weight")   # not the v0.1 layout
    path = _write(tmp_path, "alex.pth", state)
    with pytest.raises(CheckpointError) as e:
        load_lpips(alexnet, path)
    assert str(e.value) == (f"LPIPS weights {path}: missing keys: lin0.model.1.weight; "
                            "unexpected keys: lin0.model.0.weight")
    missing = str(tmp_path / "nothing.pth")
    with pytest.raises(CheckpointError) as e:
        load_lpips(alexnet, missing)
    assert str(e.value) == f"{missing}: file not found"


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_weights_file_that_runs_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "alexnet.pth")
    with open(path, "wb") as f:
        pickle.dump({"features.0.weight": _Exploit(str(marker))}, f, protocol=2)
    heads = _write(tmp_path, "alex.pth", random_lpips_state(0))
    with pytest.raises(CheckpointError, match=r"not a weights-only torch file"):
        load_lpips(path, heads)
    assert not marker.exists()
