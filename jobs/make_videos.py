"""Write synthetic test videos with exact ground-truth motion.

  python -m jobs.make_videos --output DIR [--seed 0] [--width 320] [--height 240] [--repeat 1]
                             [--bad-inputs]

Writes one clip of each kind (translate, rotate, scale, static, pan, cut) as
DIR/<kind>-<seed>.mp4, each with a ground-truth sidecar DIR/<kind>-<seed>.mp4.gt.json
(see pipeline.synthetic). --repeat N writes N sets with seeds seed, seed+1, ..., seed+N-1.
--bad-inputs also writes the awkward inputs (empty, truncated, audio-only, huge, rotated, ...)
into DIR/bad_inputs. Prints one line per clip: path, kind, size, frames, fps.
Odd sizes are rounded down to even (H.264 yuv420p).
"""
from __future__ import annotations

import argparse
import os
import sys

from pipeline.synthetic import make_bad_inputs, standard_set


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.make_videos", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True, help="output directory (created if missing)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first set (default 0)")
    ap.add_argument("--width", type=int, default=320, help="frame width (default 320)")
    ap.add_argument("--height", type=int, default=240, help="frame height (default 240)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="number of sets, with consecutive seeds (default 1)")
    ap.add_argument("--bad-inputs", action="store_true",
                    help="also write the bad-input files into OUTPUT/bad_inputs")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    for i in range(args.repeat):
        for path, gt in standard_set(args.output, seed=args.seed + i, width=args.width,
                                     height=args.height):
            print(f"{path}\t{gt.kind}\t{gt.width}x{gt.height}\t{gt.num_frames} frames\t"
                  f"{gt.fps} fps", flush=True)
    if args.bad_inputs:
        for path, status in make_bad_inputs(os.path.join(args.output, "bad_inputs")).items():
            print(f"{path}\texpect {status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
