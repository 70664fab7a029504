"""Drag accuracy on generated clips with known motion, per motion kind.

    python bench/accuracy.py [--seeds 8] [--backend builtin]

Builds pairs from the standard synthetic set (translate, rotate, scale, cut; static and pan
are filtered) with several dataset seeds, and compares every stored target point with the
ground-truth position of its handle, in stored pixels. Also counts handles that are not on
the moving object. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline import synthetic  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.plan import Unit  # noqa: E402
from pipeline.stages import LocalRun  # noqa: E402
from schemas import coords  # noqa: E402
from schemas.shard import read_shard  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--backend", default="builtin")
    ap.add_argument("--checkpoint")
    args = ap.parse_args()
    errors, off_object, pairs = defaultdict(list), defaultdict(int), defaultdict(int)
    with tempfile.TemporaryDirectory() as tmp:
        clips = synthetic.standard_set(f"{tmp}/v", seed=0) + synthetic.standard_set(f"{tmp}/v", 1)
        unit = Unit("pairs-000000", "files", tuple(sorted(p for p, _ in clips)))
        for seed in range(args.seeds):
            cfg = PipelineConfig(seed=seed)
            cfg.track.backend, cfg.track.checkpoint = args.backend, args.checkpoint
            out = f"{tmp}/out{seed}"
            with LocalRun(cfg) as local:
                local.run(unit, out)
            for s in read_shard(f"{out}/pairs-000000.tar"):
                m = s.meta
                gt = synthetic.load_ground_truth(m["source_uri"])
                box, size = (m["crop_x"], m["crop_y"], m["crop_w"], m["crop_h"]), (m["width"],
                                                                                   m["height"])
                upright = coords.stored_to_upright(s.handle, box, size)
                truth = coords.upright_to_stored(
                    gt.map_points(upright, m["frame_t0"], m["frame_t1"]), box, size)
                errors[gt.kind] += list(np.linalg.norm(truth - s.target_points, axis=1))
                cols, rows = np.round(upright).astype(int).T
                off_object[gt.kind] += int((~gt.object_mask(m["frame_t0"])[rows, cols]).sum())
                pairs[gt.kind] += 1
    print(f"backend {args.backend}, {args.seeds} dataset seeds, stored resolution "
          f"{PipelineConfig().output.resolution} px\n")
    print("| kind | pairs | points | median px | p90 px | max px | handles off object |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in sorted(errors) + ["all"]:
        e = np.array(sum(errors.values(), []) if kind == "all" else errors[kind])
        n_pairs = sum(pairs.values()) if kind == "all" else pairs[kind]
        off = sum(off_object.values()) if kind == "all" else off_object[kind]
        print(f"| {kind} | {n_pairs} | {len(e)} | {np.median(e):.3f} | "
              f"{np.percentile(e, 90):.3f} | {e.max():.3f} | {off} |")


if __name__ == "__main__":
    main()
