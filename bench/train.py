"""Benchmark: the shard loader against the train step it has to feed, side by side.

  python bench/train.py [--shards DIR] [--resolution 64] [--batch 4] [--steps 20]
                        [--workers 0 1 2] [--out bench/out/train.json]

Shards: --shards, or ones the pipeline builds here from synthetic clips
(`pipeline.synthetic.translate_pair_shards`, as the tests do).
Rows, all in this run on the same shards:
  loader    trainer.data batches/s and samples/s with 0, 1, 2 ... DataLoader workers, and
            samples/s per CPU core used (workers, or 1 for in-process loading)
  train     jobs.train's loop with the tiny model (ZeRO-2, fp32, CPU): samples/s, and the
            share of step time spent waiting for data (the loop's own measurement)
The goal: the loader must outrun the step (data wait well under 5 % of step time).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer.config import DataConfig  # noqa: E402
from trainer.data import make_loader  # noqa: E402


def time_loader(shards: str, resolution: int, batch: int, workers: int, batches: int) -> dict:
    cfg = DataConfig(shards=shards, resolution=resolution, batch_size=batch, num_workers=workers)
    it = iter(make_loader(cfg, seed=0, rank=0, world_size=1))
    next(it)  # start-up (worker processes, first shard) is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    return {"workers": workers, "batches_per_s": batches / seconds,
            "samples_per_s": batches * batch / seconds,
            "samples_per_s_per_core": batches * batch / seconds / max(1, workers)}


def time_training(shards: str, checkpoints: str, resolution: int, batch: int, steps: int) -> dict:
    import logging

    from trainer.config import from_dict
    from trainer.loop import train
    logging.getLogger("trainer").setLevel(logging.WARNING)
    run = tempfile.mkdtemp(prefix="bench-train-")
    cfg = from_dict({"run_dir": run, "data": {"shards": shards, "resolution": resolution,
                                              "batch_size": batch, "val_pairs": 0},
                     "model": {"checkpoints": checkpoints, "point_embed_dim": 2},
                     "train": {"steps": steps}, "checkpoint": {"every": steps},
                     "log": {"every": steps, "tensorboard": False}})
    start = time.perf_counter()
    out = train(cfg, device="cpu")
    seconds = time.perf_counter() - start
    return {"steps": steps, "seconds_incl_setup": seconds,
            "samples_per_s": out["samples_per_s"], "data_wait_fraction": out["data_wait"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batches", type=int, default=30, help="loader batches timed per row")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=os.path.join("bench", "out", "train.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.abspath(".cache/torch_extensions"))

    from model.tiny import save_tiny_checkpoints
    scratch = tempfile.mkdtemp(prefix="bench-train-data-")
    shards = args.shards
    if not shards:
        from pipeline.synthetic import translate_pair_shards
        shards = translate_pair_shards(scratch, os.path.join(scratch, "pairs"))
    checkpoints = os.path.join(scratch, "checkpoints")
    save_tiny_checkpoints(checkpoints)

    loaders = [time_loader(shards, args.resolution, args.batch, w, args.batches)
               for w in args.workers]
    training = time_training(shards, checkpoints, args.resolution, args.batch, args.steps)
    print(f"\n{args.resolution}x{args.resolution}, batch {args.batch}, CPU "
          f"({os.cpu_count()} cores), shards {shards}\n")
    print("| row | batches/s | samples/s | samples/s per core | data wait |")
    print("|---|---|---|---|---|")
    for r in loaders:
        print(f"| loader, {r['workers']} workers | {r['batches_per_s']:.1f} | "
              f"{r['samples_per_s']:.1f} | {r['samples_per_s_per_core']:.1f} | |")
    print(f"| train step, tiny model, ZeRO-2 fp32 | {training['samples_per_s'] / args.batch:.2f} | "
          f"{training['samples_per_s']:.2f} | | {100 * training['data_wait_fraction']:.1f} % |")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"loader": loaders, "train": training}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
