"""Write tiny random stand-ins for the networks jobs.evaluate measures with.

  python -m jobs.make_tiny_extractors --out DIR [--seed N] [--force]

DIR gets stable-diffusion-2-1/ (for --dift-model), alexnet.pth (--alexnet) and
lpips-alex-v0.1.pth (--lpips), in the layouts of the real files (see
trainer.evaluation.tiny). Seeded random weights: for plumbing, tests and demos; the scores
they give mean nothing. Prints one `name: path` line each. A DIR that exists and is not empty
is refused unless --force. Exit status: 0 written, 1 failure, 2 bad usage.
"""
from __future__ import annotations

import argparse
import sys

from jobs import out_dir_problem
from trainer.distributed import quiet_deepspeed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.make_tiny_extractors", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, metavar="DIR", help="directory to write")
    ap.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    ap.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    args = ap.parse_args(argv)
    problem = out_dir_problem(args.out, args.force)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    quiet_deepspeed()
    from trainer.evaluation.tiny import save_tiny_extractors  # here: usage errors stay fast

    for name, path in save_tiny_extractors(args.out, seed=args.seed).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
