"""Train the LightningDrag model on pair shards with DeepSpeed.

  python -m jobs.train --config YAML [--set section.key=value ...]
  torchrun --nproc_per_node N -m jobs.train --config YAML ...      (several processes)
  deepspeed --num_gpus N jobs/train.py --config YAML ...           (the DeepSpeed launcher)

The config (see configs/train-tiny.yaml and trainer/config.py) names the shards
(`data.shards`, from jobs.build_pairs), the checkpoints directory in the public layout
(`model.checkpoints`: base model and IP-Adapter, optionally `model.init` to start from a
LightningDrag model) and `run_dir`. Rerunning the same command resumes from the newest
complete checkpoint in run_dir. Each checkpoint carries an inference export:
  python -m jobs.edit --checkpoints CKPTS --model-dir RUN_DIR/checkpoints/step_N/lightning-drag-sd15 ...
Exit status: 0 finished, 1 failure, 2 bad usage or config.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# The deepspeed launcher runs this file as a script: make the repository importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs import quiet_deepspeed  # noqa: E402
from schemas.typed_config import ConfigError  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML config (see configs/train-tiny.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config value, e.g. --set train.steps=1000")
    ap.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    ap.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher's
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from trainer.config import load_config
    try:
        cfg = load_config(args.config, args.set)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for what, path in (("model.checkpoints", cfg.model.checkpoints),
                       ("model.init", cfg.model.init)):
        if path and not os.path.isdir(path):
            print(f"error: {what} {path}: not a directory", file=sys.stderr)
            return 2

    quiet_deepspeed()
    from model.checkpoint import CheckpointError
    from trainer.loop import train
    try:
        summary = train(cfg, device=args.device)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", 0)) == 0:
        losses = summary.pop("losses")
        summary["first_loss"], summary["last_loss"] = losses[0] if losses else None, \
            losses[-1] if losses else None
        print("train: " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
