"""Where the components sit under a checkpoints directory (the public release's names).

Kept free of heavy imports: command-line tools resolve paths before loading any model.
"""
from __future__ import annotations

import os

LAYOUT = {
    "base": "stable-diffusion-inpainting",
    "ip_adapter": os.path.join("IP-Adapter", "models"),
    "model_dir": "lightning-drag-sd15",
    "lcm_lora": os.path.join("lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors"),
}
BASE_ALTERNATIVES = ("stable-diffusion-inpainting", "dreamshaper-8-inpainting")


def checkpoint_paths(root: str) -> dict[str, str]:
    """Paths of the components under a checkpoints directory (public names)."""
    paths = {k: os.path.join(root, v) for k, v in LAYOUT.items()}
    for name in BASE_ALTERNATIVES:  # the release's instructions use DreamShaper-8 inpainting
        if os.path.isdir(os.path.join(root, name)):
            paths["base"] = os.path.join(root, name)
            break
    return paths
