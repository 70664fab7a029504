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
# The release runs with --vae_path checkpoints/sd-vae-ft-mse/ (run_ui.sh); its INSTALLATION.md
# tree names sd-vae-ft-ema. Either replaces the base model's own VAE, the first found.
VAE_ALTERNATIVES = ("sd-vae-ft-mse", "sd-vae-ft-ema")


def checkpoint_paths(root: str) -> dict[str, str]:
    """Paths of the components under a checkpoints directory (public names). "vae" is the
    directory of the VAE to load: ROOT/sd-vae-ft-mse or -ema when there, else the base's."""
    paths = {k: os.path.join(root, v) for k, v in LAYOUT.items()}
    for name in BASE_ALTERNATIVES:  # the release's instructions use DreamShaper-8 inpainting
        if os.path.isdir(os.path.join(root, name)):
            paths["base"] = os.path.join(root, name)
            break
    paths["vae"] = vae_dir(paths["base"], root)
    return paths


def vae_dir(base: str, root: str | None = None) -> str:
    """The VAE a model of `base` runs with: a release VAE directory under the checkpoints
    `root` when there is one, else the base model's own vae/."""
    for name in VAE_ALTERNATIVES if root else ():
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    return os.path.join(base, "vae")
