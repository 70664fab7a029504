"""The model's choices by name: fusion modes, point-projection inits, samplers, guidance
schedules and their defaults, dtypes.

The one list of each. Torch-free: argument parsers and configs read these before (or without)
loading a model, so importing this module must not import torch (tests/model/test_options.py).
"""
from __future__ import annotations

# Which backbone self-attention layers read appearance tokens and points (model.lightning_drag).
FUSION_MODES = ("full", "midup", "up")
# A fresh model's point projections (model.checkpoint.new_lightning_drag).
POINT_PROJ_INITS = ("zero", "random")
SCHEDULERS = ("ddim", "lcm")
# How point guidance decays over the denoising steps (model.pipeline.guidance_scale).
SCHEDULES = ("none", "constant", "linear", "square", "inverse-square")
# The public release's demo: 25 DDIM steps at point guidance 4.0, 8 LCM steps at 3.0.
DEFAULT_STEPS = {"ddim": 25, "lcm": 8}
DEFAULT_GUIDANCE = {"ddim": 4.0, "lcm": 3.0}
DTYPE_NAMES = ("fp32", "fp16", "bf16")


def torch_dtype(name: str):
    """The torch dtype of a name in DTYPE_NAMES (torch is imported here, on first use)."""
    import torch

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in dtypes:
        raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {name!r}")
    return dtypes[name]
