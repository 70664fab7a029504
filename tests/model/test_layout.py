"""model.layout.resolve_paths: which path each part is loaded from, and every refusal."""
from __future__ import annotations

import os

import pytest

from model.layout import LayoutError, resolve_paths


@pytest.fixture
def root(tmp_path):
    """A checkpoints root in the public layout, holding directories and files only."""
    for d in ("stable-diffusion-inpainting/vae", "IP-Adapter/models", "lightning-drag-sd15",
              "lcm-lora-sdv1-5"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "lcm-lora-sdv1-5" / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    return tmp_path


def test_the_root_gives_every_part_and_a_given_part_wins(root, tmp_path_factory):
    paths = resolve_paths(str(root))
    assert paths == {"model_dir": f"{root}/lightning-drag-sd15",
                     "base": f"{root}/stable-diffusion-inpainting",
                     "ip_adapter": f"{root}/IP-Adapter/models", "lcm_lora": None,
                     "vae": f"{root}/stable-diffusion-inpainting/vae"}
    other = tmp_path_factory.mktemp("other-model")
    paths = resolve_paths(str(root), lcm=True, model_dir=str(other))
    assert paths["model_dir"] == str(other)
    assert paths["lcm_lora"] == f"{root}/lcm-lora-sdv1-5/pytorch_lora_weights.safetensors"
    (root / "sd-vae-ft-ema").mkdir()
    assert resolve_paths(str(root))["vae"] == f"{root}/sd-vae-ft-ema"
    assert resolve_paths(str(root), vae=str(other))["vae"] == str(other)


def test_without_a_root_every_required_part_is_given(root):
    parts = {"model_dir": f"{root}/lightning-drag-sd15",
             "base": f"{root}/stable-diffusion-inpainting",
             "ip_adapter": f"{root}/IP-Adapter/models"}
    assert resolve_paths(**parts)["vae"] == f"{root}/stable-diffusion-inpainting/vae"
    with pytest.raises(LayoutError) as e:
        resolve_paths(model_dir=parts["model_dir"])
    assert (e.value.part, e.value.missing) == (None, ("base", "ip_adapter"))
    with pytest.raises(LayoutError) as e:
        resolve_paths(lcm=True, **parts)
    assert (e.value.part, e.value.path) == ("lcm_lora", None)


@pytest.mark.parametrize("ask, part, from_root", [
    ({"root": "nowhere"}, "root", False),
    ({"base": "nowhere"}, "base", False),
    ({"lcm_lora": "nowhere.safetensors"}, "lcm_lora", False),
    ({"vae": "nowhere"}, "vae", False),
    ({"drop": "IP-Adapter/models"}, "ip_adapter", True),
    ({"drop": "lcm-lora-sdv1-5/pytorch_lora_weights.safetensors", "lcm": True}, "lcm_lora", True),
])
def test_a_part_that_is_not_there_is_named_with_where_it_came_from(root, ask, part, from_root):
    ask = dict(ask)
    if "drop" in ask:
        target = root / ask.pop("drop")
        os.remove(target) if target.is_file() else os.rmdir(target)
    where = ask.pop("root", str(root))
    with pytest.raises(LayoutError) as e:
        resolve_paths(where, **ask)
    assert (e.value.part, e.value.from_root) == (part, from_root)
    assert e.value.problem == ("file not found" if part == "lcm_lora" else "not a directory")
