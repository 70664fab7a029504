"""Loading and saving in the public LightningDrag layout.

    <base>/            a diffusers SD-1.5 inpainting directory: unet/ vae/ text_encoder/
                       tokenizer/ scheduler/
    <ip-adapter>/      image_encoder/ (CLIP vision, with projection) and ip-adapter_sd15.bin
                       ({"image_proj": ..., "ip_adapter": ...})
    <lightning-drag>/  appearance_encoder/{config.json, diffusion_pytorch_model.safetensors}
                       point_embedding/point_embedding.pt
                       lightning-drag-sd15-attn.bin  (state dict of the backbone's processors
                       as a ModuleList in `unet.attn_processors` order)
                       [unet/  only when the backbone was trained too (our trainer's
                        model.train_backbone): it replaces <base>/unet]

Every file is read with safetensors or `torch.load(weights_only=True)`; a missing, unknown or
wrongly shaped key is a `CheckpointError` that names the keys, never silently ignored.
"""
from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file, save_file

from model.appearance_encoder import AppearanceEncoderModel
from model.lightning_drag import ImageProjection, LightningDragModel, is_fused
from model.options import FUSION_MODES, POINT_PROJ_INITS
from model.pixel_vae import PixelVAE
from model.point_embedding import PointEmbedding
from schemas.storage import replacing

APPEARANCE_DIR = "appearance_encoder"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
POINT_EMBEDDING_FILE = os.path.join("point_embedding", "point_embedding.pt")
ATTN_FILE = "lightning-drag-sd15-attn.bin"
IP_ADAPTER_FILE = "ip-adapter_sd15.bin"
IMAGE_ENCODER_DIR = "image_encoder"
BACKBONE_DIR = "unet"  # optional: a backbone trained with the model (not in the public release)


class CheckpointError(ValueError):
    """A checkpoint file is missing or does not match the architecture; names the keys."""


def _names(keys, limit=8) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state_dict(what: str, expected: dict, got: dict) -> None:
    """Raise CheckpointError naming missing, unexpected and wrongly shaped keys."""
    missing = expected.keys() - got.keys()
    unexpected = got.keys() - expected.keys()
    shapes = [f"{k} {tuple(got[k].shape)} (expected {tuple(expected[k].shape)})"
              for k in sorted(expected.keys() & got.keys())
              if tuple(got[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if shapes:
        problems.append(f"wrong shapes: {_names(shapes)}")
    if problems:
        raise CheckpointError(f"{what}: " + "; ".join(problems))


def load_tensor_file(path: str) -> dict:
    """A state dict from .safetensors or a torch pickle restricted to tensors (weights_only)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: file not found")
    if path.endswith(".safetensors"):
        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an unpickling refusal is an error about this file, say which
        raise CheckpointError(f"{path}: not a weights-only torch file "
                              f"({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    return state


def _torch_save(obj, path: str) -> None:
    """torch.save through a file object: given a path, torch names the archive's root folder
    after the (temporary, random) file name, and the same weights would give different bytes."""
    with open(path, "wb") as f:
        torch.save(obj, f)


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _cpu(state: dict) -> dict:
    """Compact CPU copies: a tensor may be a view into a larger buffer (DeepSpeed flattens a
    rank's trainable weights into one), and torch.save writes a view's whole buffer."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def load_pretrained(cls, path: str, subfolder: str | None = None, dtype=None):
    """`cls.from_pretrained` from local files, refusing missing, unexpected or mismatched keys
    (diffusers and transformers only warn about them)."""
    where = os.path.join(path, subfolder or "")
    if not os.path.isdir(where):
        raise CheckpointError(f"{where}: not a directory")
    kwargs = {"local_files_only": True, "output_loading_info": True}
    if subfolder:
        kwargs["subfolder"] = subfolder
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    model, info = cls.from_pretrained(path, **kwargs)
    problems = [f"{kind.replace('_', ' ')}: {_names(info[kind])}"
                for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
                if info.get(kind)]
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))
    return model


def load_vae(path: str, subfolder: str | None = None, dtype=None):
    """The VAE of a base model directory: an `AutoencoderKL`, or a weightless `PixelVAE`
    (small worlds trained from scratch) when its config names that class."""
    from diffusers import AutoencoderKL

    config_path = os.path.join(path, subfolder or "", "config.json")
    if os.path.isfile(config_path):
        with open(config_path) as f:
            config = json.load(f)
        if config.get("_class_name") == PixelVAE.__name__:
            vae = PixelVAE.from_config(config)
            return vae.to(dtype) if dtype is not None else vae
    return load_pretrained(AutoencoderKL, path, subfolder, dtype)


def vae_scale_factor(vae) -> int:
    """Pixels per latent along each side."""
    if isinstance(vae, PixelVAE):
        return vae.config.factor
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_channels(vae) -> int:
    return vae.latent_channels if isinstance(vae, PixelVAE) else vae.config.latent_channels


# --- IP-Adapter ------------------------------------------------------------------------------

def load_ip_adapter_file(ip_dir: str) -> tuple[dict, dict]:
    """(image_proj state, ip_adapter state) from <ip_dir>/ip-adapter_sd15.bin or .safetensors."""
    path = os.path.join(ip_dir, IP_ADAPTER_FILE)
    alt = path[: -len(".bin")] + ".safetensors"
    if not os.path.isfile(path) and os.path.isfile(alt):
        flat = load_tensor_file(alt)
        state = {"image_proj": {}, "ip_adapter": {}}
        for k, v in flat.items():
            group, _, rest = k.partition(".")
            if group not in state:
                raise CheckpointError(f"{alt}: unexpected key {k}")
            state[group][rest] = v
    else:
        state = load_tensor_file(path)
    if set(state) != {"image_proj", "ip_adapter"}:
        raise CheckpointError(f"{path}: expected groups image_proj and ip_adapter, found "
                              f"{_names(state)}")
    return state["image_proj"], state["ip_adapter"]


def save_ip_adapter_file(model: LightningDragModel, ip_dir: str) -> None:
    ip = {k: v for k, v in model.attention_processors.state_dict().items()
          if k.endswith(("to_k_ip.weight", "to_v_ip.weight"))}
    state = {"image_proj": _cpu(model.image_proj.state_dict()), "ip_adapter": _cpu(ip)}
    with replacing(os.path.join(ip_dir, IP_ADAPTER_FILE)) as tmp:
        _torch_save(state, tmp)


# --- LightningDrag ---------------------------------------------------------------------------

def load_appearance_encoder(model_dir: str) -> AppearanceEncoderModel:
    folder = os.path.join(model_dir, APPEARANCE_DIR)
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{config_path}: file not found")
    with open(config_path) as f:
        config = json.load(f)
    encoder = AppearanceEncoderModel.from_config(config)
    path = os.path.join(folder, DIFFUSERS_WEIGHTS)
    state = load_tensor_file(path)
    check_state_dict(path, encoder.state_dict(), state)
    encoder.load_state_dict(state)
    return encoder


def saved_fusion(what: str, unet, attn_state: dict) -> str:
    """The fusion mode an attention-processor file was saved with: its point processors
    (those with norm/proj keys) sit exactly on that mode's fused layers."""
    self_layers = [(i, key[: -len(".processor")]) for i, key in enumerate(unet.attn_processors)
                   if key.endswith("attn1.processor")]
    with_points = {layer for i, layer in self_layers if f"{i}.norm.weight" in attn_state}
    for mode in FUSION_MODES:
        if with_points == {layer for _, layer in self_layers if is_fused(layer, mode)}:
            return mode
    raise CheckpointError(f"{what}: point processors on {len(with_points)} of "
                          f"{len(self_layers)} self-attention layers match no fusion mode "
                          f"{FUSION_MODES}")


def load_image_projection(ip_dir: str, unet, image_embed_dim: int):
    """IP-Adapter's image projection (loaded) and its cross-attention weights (a state dict in
    the attention-processor layout)."""
    proj_state, ip_state = load_ip_adapter_file(ip_dir)
    cross = unet.config.cross_attention_dim
    if "proj.weight" not in proj_state:
        raise CheckpointError(f"{ip_dir}: image_proj has no proj.weight")
    tokens = proj_state["proj.weight"].shape[0] // cross
    image_proj = ImageProjection(cross, image_embed_dim, tokens)
    check_state_dict(f"{ip_dir} image_proj", image_proj.state_dict(), proj_state)
    image_proj.load_state_dict(proj_state)
    return image_proj, ip_state


def new_lightning_drag(unet, image_embed_dim: int, ip_dir: str, fusion: str = "full",
                       point_embed_dim: int = 16, vae_scale: int = 8,
                       point_proj_init: str = "zero") -> LightningDragModel:
    """A model to start training from: the appearance encoder initialised from the backbone, a
    new point embedding (for a VAE of `vae_scale`), new point projections, and the IP-Adapter
    loaded.

    point_proj_init "zero": the fresh model computes exactly what its backbone does, the choice
    for a pretrained backbone. "random" (nn.Linear's own initialisation) is for a backbone
    trained from scratch, which has nothing to preserve: a handle is matched to its target
    through the product of two point terms made by the same projection (target on the queries,
    handle on the appearance keys), and where both start at zero neither gets a gradient
    through that product, so the match is learnt only slowly, by way of the other terms."""
    if point_proj_init not in POINT_PROJ_INITS:
        raise ValueError(f"point_proj_init must be one of {POINT_PROJ_INITS}, "
                         f"got {point_proj_init!r}")
    encoder = AppearanceEncoderModel.from_backbone(unet)
    points = PointEmbedding(point_embed_dim, vae_scale,
                            2 ** (len(unet.config.block_out_channels) - 1))
    image_proj, ip_state = load_image_projection(ip_dir, unet, image_embed_dim)
    model = LightningDragModel(unet, encoder, points, image_proj, fusion=fusion)
    if point_proj_init == "random":
        for processor in model.point_processors():
            processor.proj.reset_parameters()
    processors = model.attention_processors
    expected = {k: v for k, v in processors.state_dict().items()
                if k.endswith(("to_k_ip.weight", "to_v_ip.weight"))}
    check_state_dict(f"{ip_dir} ip_adapter", expected, ip_state)
    processors.load_state_dict(ip_state, strict=False)
    return model.to(unet.device, unet.dtype)


def load_lightning_drag(model_dir: str, unet, image_embed_dim: int, ip_dir: str,
                        fusion: str | None = None) -> LightningDragModel:
    """Assemble the model from a base UNet and the LightningDrag and IP-Adapter files.
    `fusion` defaults to the mode the attention file was saved with."""
    attn_path = os.path.join(model_dir, ATTN_FILE)
    attn_state = load_tensor_file(attn_path)
    found = saved_fusion(attn_path, unet, attn_state)
    if fusion is not None and fusion != found:
        raise CheckpointError(f"{attn_path}: saved with fusion {found!r}, not {fusion!r}")
    encoder = load_appearance_encoder(model_dir)
    point_path = os.path.join(model_dir, POINT_EMBEDDING_FILE)
    point_state = load_tensor_file(point_path)
    try:
        points = PointEmbedding.for_state_dict(point_state)
    except KeyError as e:
        raise CheckpointError(f"{point_path}: {e.args[0]}") from None
    check_state_dict(point_path, points.state_dict(), point_state)
    points.load_state_dict(point_state)

    image_proj, ip_state = load_image_projection(ip_dir, unet, image_embed_dim)
    model = LightningDragModel(unet, encoder, points, image_proj, fusion=found)
    attn_state.update(ip_state)  # IP-Adapter's own cross-attention weights win, as in the release
    processors = model.attention_processors
    check_state_dict(f"{attn_path} (+ IP-Adapter)", processors.state_dict(), attn_state)
    processors.load_state_dict(attn_state)
    return model.to(unet.device, unet.dtype)


def _save_diffusers_model(model, folder: str, state: dict) -> None:
    """config.json and the safetensors weights of a diffusers model, as save_pretrained lays
    them out, with the given state dict."""
    os.makedirs(folder, exist_ok=True)
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    config = {"_class_name": type(model).__name__, **config}
    with replacing(os.path.join(folder, DIFFUSERS_WEIGHTS)) as tmp:
        save_file(_cpu(state), tmp)
    with replacing(os.path.join(folder, "config.json")) as tmp:
        _write_text(tmp, json.dumps(config, indent=2, default=list))


def save_lightning_drag(model: LightningDragModel, model_dir: str,
                        with_backbone: bool = False) -> None:
    """Write the three LightningDrag files (not the base model or the IP-Adapter), and with
    `with_backbone` the backbone UNet too, as `unet/` (for a model whose backbone was trained:
    loading then takes it instead of the base model's)."""
    _save_diffusers_model(model.appearance_encoder, os.path.join(model_dir, APPEARANCE_DIR),
                          model.appearance_encoder.state_dict())
    if with_backbone:  # the processors are saved in the attention file, not as UNet weights
        state = {k: v for k, v in model.unet.state_dict().items() if ".processor." not in k}
        _save_diffusers_model(model.unet, os.path.join(model_dir, BACKBONE_DIR), state)
    with replacing(os.path.join(model_dir, POINT_EMBEDDING_FILE)) as tmp:
        _torch_save(_cpu(model.point_embedding.state_dict()), tmp)
    with replacing(os.path.join(model_dir, ATTN_FILE)) as tmp:
        _torch_save(_cpu(model.attention_processors.state_dict()), tmp)
