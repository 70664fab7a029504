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


class LayoutError(ValueError):
    """A component that cannot be loaded from where it was asked for. `part` is a LAYOUT key,
    "vae", "root" (the checkpoints directory) or None (parts missing: `missing` names them);
    `from_root` says whether the path came from the checkpoints root rather than being given."""

    def __init__(self, problem: str, part: str | None, path: str | None = None,
                 from_root: bool = False, missing: tuple[str, ...] = ()):
        super().__init__(problem)
        self.problem, self.part, self.path = problem, part, path
        self.from_root, self.missing = from_root, missing


REQUIRED_PARTS = ("model_dir", "base", "ip_adapter")


def resolve_paths(root: str | None = None, lcm: bool = False, model_dir: str | None = None,
                  base: str | None = None, ip_adapter: str | None = None,
                  lcm_lora: str | None = None, vae: str | None = None) -> dict[str, str | None]:
    """The paths to load a model from: a part given by its own path wins over the checkpoints
    `root`'s; without a root, model_dir, base and ip_adapter must all be given. The LCM-LoRA is
    the given file, else the root's when `lcm` (LCM sampling) is asked for, else None. The VAE
    is the given directory, else the root's release VAE (`vae_dir`), else the base's own.
    Raises LayoutError for a part that is missing or not there."""
    given = {"model_dir": model_dir, "base": base, "ip_adapter": ip_adapter}
    if root and not os.path.isdir(root):
        raise LayoutError("not a directory", "root", root)
    from_root = checkpoint_paths(root) if root else {}
    missing = tuple(part for part in REQUIRED_PARTS if given[part] is None)
    if not root and missing:
        raise LayoutError("missing", None, missing=missing)
    paths = {}
    for part in REQUIRED_PARTS:
        paths[part] = given[part] or from_root[part]
        if not os.path.isdir(paths[part]):
            raise LayoutError("not a directory", part, paths[part], from_root=not given[part])
    paths["lcm_lora"] = lcm_lora
    if lcm_lora is None and lcm:
        if not root:
            raise LayoutError("needed for LCM", "lcm_lora")
        paths["lcm_lora"] = from_root["lcm_lora"]
    if paths["lcm_lora"] and not os.path.isfile(paths["lcm_lora"]):
        raise LayoutError("file not found", "lcm_lora", paths["lcm_lora"],
                          from_root=lcm_lora is None)
    if vae and not os.path.isdir(vae):
        raise LayoutError("not a directory", "vae", vae)
    paths["vae"] = vae or vae_dir(paths["base"], root)
    return paths
