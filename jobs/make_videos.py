"""Write synthetic test videos with exact ground-truth motion.

  python -m jobs.make_videos --output DIR [--seed 0] [--width 320] [--height 240] [--repeat 1]
                             [--bad-inputs]
  python -m jobs.make_videos --output DIR --toy COUNT [--seed 0] [--width 128]

Writes one clip of each kind (translate, rotate, scale, static, pan, cut) as
DIR/<kind>-<seed>.mp4, each with a ground-truth sidecar DIR/<kind>-<seed>.mp4.gt.json
(see pipeline.synthetic). --repeat N writes N sets with seeds seed, seed+1, ..., seed+N-1.
--bad-inputs also writes the awkward inputs (empty, truncated, audio-only, huge, rotated, ...)
into DIR/bad_inputs. Prints one line per clip: path, kind, size, frames, fps.
Odd sizes are rounded down to even (H.264 yuv420p).
--toy COUNT writes the toy world instead: COUNT square translate clips DIR/toy-<seed+i>.mp4 with
random objects, directions and speeds and coarse textures (pipeline.synthetic.toy_set);
--width sets their size (default 128).
"""
from __future__ import annotations

import argparse
import os
import sys

from pipeline.synthetic import make_bad_inputs, standard_set, toy_set


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.make_videos", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True, help="output directory (created if missing)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first set (default 0)")
    ap.add_argument("--width", type=int, help="frame width (default 320; 128 with --toy)")
    ap.add_argument("--height", type=int, default=240, help="frame height (default 240)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="number of sets, with consecutive seeds (default 1)")
    ap.add_argument("--bad-inputs", action="store_true",
                    help="also write the bad-input files into OUTPUT/bad_inputs")
    ap.add_argument("--toy", type=int, metavar="COUNT",
                    help="write COUNT toy-world clips instead of the standard set")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if args.toy is not None and args.toy < 1:
        ap.error("--toy must be >= 1")

    def report(clips) -> None:
        for path, gt in clips:
            print(f"{path}\t{gt.kind}\t{gt.width}x{gt.height}\t{gt.num_frames} frames\t"
                  f"{gt.fps} fps", flush=True)

    if args.toy:
        report(toy_set(args.output, args.toy, seed=args.seed, size=args.width or 128))
    else:
        for i in range(args.repeat):  # each set reported as soon as it is written
            report(standard_set(args.output, seed=args.seed + i, width=args.width or 320,
                                height=args.height))
    if args.bad_inputs:
        for path, status in make_bad_inputs(os.path.join(args.output, "bad_inputs")).items():
            print(f"{path}\texpect {status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
