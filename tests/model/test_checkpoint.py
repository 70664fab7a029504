"""Public-layout save/load round trips, strict key checking, weights-only loading, LoRA."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from model.checkpoint import (ATTN_FILE, CheckpointError, POINT_EMBEDDING_FILE,
                              save_ip_adapter_file, save_lightning_drag)
from model.lora import LoRAError, fuse_lora
from model.pipeline import DragEditPipeline
from tests.model.conftest import fresh_model, scene


def load(paths, **kw) -> DragEditPipeline:
    return DragEditPipeline.from_pretrained(paths["model_dir"], paths["base"], paths["ip_adapter"],
                                            **kw)


@pytest.fixture
def copy(tiny_paths, tmp_path):
    """A private copy of the tiny checkpoints that a test may damage."""
    root = os.path.dirname(tiny_paths["base"])
    shutil.copytree(root, tmp_path / "ck")
    return {k: v.replace(root, str(tmp_path / "ck")) for k, v in tiny_paths.items()}


def test_save_then_load_gives_the_same_weights_and_the_same_edit(pipe, tiny_paths, tmp_path):
    model_dir, ip_dir = tmp_path / "ld", tmp_path / "ip"
    save_lightning_drag(pipe.model, str(model_dir))
    save_ip_adapter_file(pipe.model, str(ip_dir))
    shutil.copytree(os.path.join(tiny_paths["ip_adapter"], "image_encoder"), ip_dir / "image_encoder")
    again = DragEditPipeline.from_pretrained(str(model_dir), tiny_paths["base"], str(ip_dir),
                                             lcm_lora=tiny_paths["lcm_lora"])
    a, b = pipe.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    image, mask, h, t = scene()
    for scheduler in ("ddim", "lcm"):
        x = pipe(image, mask, h, t, steps=3, seed=1, scheduler=scheduler).images[0]
        y = again(image, mask, h, t, steps=3, seed=1, scheduler=scheduler).images[0]
        assert np.array_equal(x, y)
    assert sorted(os.listdir(model_dir)) == ["appearance_encoder", ATTN_FILE, "point_embedding"]
    assert sorted(os.listdir(model_dir / "appearance_encoder")) == [
        "config.json", "diffusion_pytorch_model.safetensors"]


def test_saving_the_same_weights_twice_gives_the_same_bytes(pipe, tmp_path):
    for name in ("a", "b"):
        save_lightning_drag(pipe.model, str(tmp_path / name / "ld"))
        save_ip_adapter_file(pipe.model, str(tmp_path / name / "ip"))
    files = sorted(os.path.relpath(os.path.join(d, n), tmp_path / "a")
                   for d, _, names in os.walk(tmp_path / "a") for n in names)
    assert len(files) == 5
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def _edit_torch_file(path, change):
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("0.proj.weight"), "missing keys: 0.proj.weight"),
    (lambda s: s.__setitem__("0.extra", torch.zeros(1)), "unexpected keys: 0.extra"),
    (lambda s: s.__setitem__("0.proj.weight", torch.zeros(3, 3)),
     "wrong shapes: 0.proj.weight (3, 3) (expected (32, 16))"),
])
def test_attention_file_keys_are_checked_strictly(copy, change, message):
    path = os.path.join(copy["model_dir"], ATTN_FILE)
    _edit_torch_file(path, change)
    with pytest.raises(CheckpointError) as e:
        load(copy)
    assert str(e.value) == f"{path} (+ IP-Adapter): {message}"


def test_appearance_and_point_embedding_keys_are_checked(copy):
    weights = os.path.join(copy["model_dir"], "appearance_encoder",
                           "diffusion_pytorch_model.safetensors")
    state = load_file(weights)
    state["conv_out.weight"] = torch.zeros(4, 32, 3, 3)  # the public file has no output head
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=r"unexpected keys: conv_out\.weight$"):
        load(copy)
    state.pop("conv_out.weight")
    state.pop("conv_in.bias")
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=r"missing keys: conv_in\.bias$"):
        load(copy)
    state["conv_in.bias"] = torch.zeros(32)
    save_file(state, weights)
    points = os.path.join(copy["model_dir"], POINT_EMBEDDING_FILE)
    _edit_torch_file(points, lambda s: s.pop("downsample_blocks_unet.0.conv2.weight"))
    with pytest.raises(CheckpointError) as e:
        load(copy)
    assert str(e.value) == f"{points}: missing keys: downsample_blocks_unet.0.conv2.weight"


def test_base_model_keys_are_checked(copy):
    weights = os.path.join(copy["base"], "unet", "diffusion_pytorch_model.safetensors")
    state = load_file(weights)
    state["bogus.weight"] = state.pop("conv_out.weight")
    save_file(state, weights)
    with pytest.raises(CheckpointError) as e:
        load(copy)
    assert str(e.value) == (f"{os.path.join(copy['base'], 'unet')}: missing keys: conv_out.weight; "
                            "unexpected keys: bogus.weight")


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_files_that_are_not_plain_tensors_are_refused(copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = os.path.join(copy["model_dir"], ATTN_FILE)
    torch.save({"0.proj.weight": Payload()}, path)
    with pytest.raises(CheckpointError, match="not a weights-only torch file"):
        load(copy)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("missing, message", [
    ("model_dir", "LightningDrag directory {}: not a directory"),
    ("base", "base model {}: not a directory"),
])
def test_missing_directories_are_named(copy, missing, message):
    shutil.rmtree(copy[missing])
    with pytest.raises(CheckpointError) as e:
        load(copy)
    assert str(e.value) == message.format(copy[missing])


# --- LoRA ------------------------------------------------------------------------------------

def _toy():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Conv2d(2, 5, 3))


def test_kohya_lora_adds_alpha_over_rank_times_up_down():
    net = _toy()
    w0, c0 = net[0].weight.clone(), net[1].weight.clone()
    down, up = torch.randn(2, 4), torch.randn(3, 2)
    cdown, cup = torch.randn(2, 2, 3, 3), torch.randn(5, 2, 1, 1)
    state = {"lora_unet_0.lora_down.weight": down, "lora_unet_0.lora_up.weight": up,
             "lora_unet_0.alpha": torch.tensor(1.0),
             "lora_unet_1.lora_down.weight": cdown, "lora_unet_1.lora_up.weight": cup,
             "lora_unet_1.alpha": torch.tensor(2.0)}
    assert fuse_lora(net, state) == 2
    assert torch.allclose(net[0].weight, w0 + 0.5 * up @ down)
    conv_delta = torch.einsum("or,rikl->oikl", cup[:, :, 0, 0], cdown)
    assert torch.allclose(net[1].weight, c0 + conv_delta, atol=1e-6)


def test_peft_and_kohya_formats_agree():
    a, b = _toy(), _toy()
    down, up = torch.randn(2, 4), torch.randn(3, 2)
    fuse_lora(a, {"lora_unet_0.lora_down.weight": down, "lora_unet_0.lora_up.weight": up,
                  "lora_unet_0.alpha": torch.tensor(2.0)})
    fuse_lora(b, {"unet.0.lora_A.weight": down, "unet.0.lora_B.weight": up})
    assert torch.equal(a[0].weight, b[0].weight)


@pytest.mark.parametrize("state, message", [
    ({"lora_te_text_model.lora_down.weight": torch.zeros(1)},
     "LoRA key lora_te_text_model.lora_down.weight is neither kohya (lora_unet_*) nor peft (unet.*)"),
    ({"lora_unet_7.lora_down.weight": torch.zeros(1)},
     "LoRA key lora_unet_7.lora_down.weight names no Linear/Conv2d layer of the UNet"),
    ({"lora_unet_0.lora_down.weight": torch.zeros(2, 4)}, "LoRA for 0 lacks its up matrix"),
    ({"lora_unet_0.lora_down.weight": torch.zeros(2, 5), "lora_unet_0.lora_up.weight": torch.zeros(3, 2)},
     "LoRA for 0 has shape (3, 5), the layer (3, 4)"),
])
def test_lora_errors_name_the_key(state, message):
    with pytest.raises(LoRAError) as e:
        fuse_lora(_toy(), state)
    assert str(e.value) == message


def test_lcm_lora_changes_the_backbone(pipe, tiny_paths):
    plain = load(tiny_paths)
    a = {k: v for k, v in pipe.model.unet.state_dict().items() if "transformer_blocks" in k}
    b = plain.model.unet.state_dict()
    assert any(not torch.equal(v, b[k]) for k, v in a.items())


def test_fusion_mode_is_read_from_the_attention_file(pipe, tiny_paths, tmp_path):
    save_lightning_drag(fresh_model(pipe, "midup"), str(tmp_path / "ld"))
    loaded = DragEditPipeline.from_pretrained(str(tmp_path / "ld"), tiny_paths["base"],
                                              tiny_paths["ip_adapter"])
    assert loaded.model.fusion == "midup"
    with pytest.raises(CheckpointError) as e:
        DragEditPipeline.from_pretrained(str(tmp_path / "ld"), tiny_paths["base"],
                                         tiny_paths["ip_adapter"], fusion="full")
    assert str(e.value) == f"{tmp_path / 'ld' / ATTN_FILE}: saved with fusion 'midup', not 'full'"
