"""Write a tiny random LightningDrag checkpoints directory in the public layout.

  python -m jobs.make_tiny_model --out DIR [--seed N] [--fusion full|midup|up] [--force]
      [--release-compatible] [--resolution 64] [--pixel-vae-factor F]
      [--block-out-channels 32,64] [--prediction-type T]

DIR gets stable-diffusion-inpainting/, IP-Adapter/models/, lightning-drag-sd15/ and
lcm-lora-sdv1-5/ (see model.tiny), the same names as the released checkpoints, so every tool
that takes `--checkpoints ROOT` runs on it (e.g. `python -m jobs.edit --checkpoints DIR ...`).
Weights are seeded random: good for plumbing, tests and demos, not for images. Prints one
`name: path` line per component. --release-compatible writes a tree the public release's code
also loads (two layers per UNet block, a point embedding of width 16, sd-vae-ft-mse/; about
300 MB, most of it the release-size point embedding); without it the tree is smaller and faster
for tests. A DIR that exists and is not empty is refused unless --force
(which writes over the files there and leaves other files alone).
Exit status: 0 written, 1 failure, 2 bad usage.
"""
from __future__ import annotations

import argparse
import logging
import sys

from jobs import out_dir_problem
from model.options import FUSION_MODES
from trainer.distributed import quiet_deepspeed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.make_tiny_model", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, metavar="DIR", help="checkpoints directory to write")
    ap.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    ap.add_argument("--fusion", default="full", choices=FUSION_MODES,
                    help="which backbone self-attention layers read appearance and points "
                         "(default full)")
    ap.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    ap.add_argument("--release-compatible", action="store_true",
                    help="a tree the public release's code loads too (larger)")
    small = ap.add_argument_group("a small world's model (for training from scratch)")
    small.add_argument("--resolution", type=int, default=64, help="pixels (default 64)")
    small.add_argument("--pixel-vae-factor", type=int, default=0, metavar="F",
                       help="an exact space-to-depth PixelVAE of factor F instead of a random "
                            "8x AutoencoderKL (default 0: the AutoencoderKL)")
    small.add_argument("--block-out-channels", default="32,32,64,64", metavar="C,C,...",
                       help="UNet widths per scale (default 32,32,64,64)")
    small.add_argument("--prediction-type", default="epsilon",
                       choices=("epsilon", "v_prediction", "sample"),
                       help="what the UNet predicts (default epsilon, as SD-1.5)")
    small.add_argument("--point-embed-dim", type=int, default=2, help="default 2")
    args = ap.parse_args(argv)
    try:
        widths = tuple(int(c) for c in args.block_out_channels.split(","))
    except ValueError:
        ap.error(f"--block-out-channels {args.block_out_channels}: expected integers like 32,64")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    problem = out_dir_problem(args.out, args.force)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    quiet_deepspeed()
    from model.tiny import save_tiny_checkpoints  # imported here: usage errors stay fast

    try:
        paths = save_tiny_checkpoints(
            args.out, seed=args.seed, fusion=args.fusion, point_embed_dim=args.point_embed_dim,
            release_compatible=args.release_compatible,
            resolution=args.resolution, pixel_vae_factor=args.pixel_vae_factor,
            block_out_channels=widths, prediction_type=args.prediction_type)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
