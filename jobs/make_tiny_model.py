"""Write a tiny random LightningDrag checkpoints directory in the public layout.

  python -m jobs.make_tiny_model --out DIR [--seed N] [--fusion full|midup|up] [--force]

DIR gets stable-diffusion-inpainting/, IP-Adapter/models/, lightning-drag-sd15/ and
lcm-lora-sdv1-5/ (see model.tiny), the same names as the released checkpoints, so every tool
that takes `--checkpoints ROOT` runs on it (e.g. `python -m jobs.edit --checkpoints DIR ...`).
Weights are seeded random: good for plumbing, tests and demos, not for images. Prints one
`name: path` line per component. A DIR that exists and is not empty is refused unless --force
(which writes over the files there and leaves other files alone).
Exit status: 0 written, 1 failure, 2 bad usage.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from jobs import quiet_deepspeed

# model.lightning_drag.FUSION_MODES, spelled out so that usage errors need no torch import
# (tests/jobs/test_edit.py checks that they agree).
FUSION_MODES = ("full", "midup", "up")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.make_tiny_model", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, metavar="DIR", help="checkpoints directory to write")
    ap.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    ap.add_argument("--fusion", default="full", choices=FUSION_MODES,
                    help="which backbone self-attention layers read appearance and points "
                         "(default full)")
    ap.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f"error: --out {args.out} exists and is not a directory", file=sys.stderr)
        return 2
    if os.path.isdir(args.out) and os.listdir(args.out) and not args.force:
        print(f"error: --out {args.out} exists and is not empty; pass --force to write into it",
              file=sys.stderr)
        return 2

    quiet_deepspeed()
    from model.tiny import save_tiny_checkpoints  # imported here: usage errors stay fast

    paths = save_tiny_checkpoints(args.out, seed=args.seed, fusion=args.fusion)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
