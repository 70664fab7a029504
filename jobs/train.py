"""Train the LightningDrag model on pair shards with DeepSpeed.

  python -m jobs.train --config YAML [--set section.key=value ...]
  torchrun --nproc_per_node N -m jobs.train --config YAML ...      (several processes)
  deepspeed --num_gpus N jobs/train.py --config YAML ...           (the DeepSpeed launcher)
  python -m jobs.train --launcher ray --num-workers N [--gpus-per-worker G] --config YAML ...
  ray job submit --working-dir . -- python -m jobs.train --launcher ray --num-workers N ...

The config (see configs/train-tiny.yaml and trainer/config.py) names the shards
(`data.shards`, from jobs.build_pairs; a path or URL), the checkpoints directory in the public
layout (`model.checkpoints`: base model and IP-Adapter, optionally `model.init` to start from
a LightningDrag model; local directories) and `run_dir` (a path or a URL such as
s3://bucket/runs/exp1). Rerunning the same command resumes from the newest complete
checkpoint, with the same number of ranks (another number is refused) and the same config
content (logging, validation, checkpoint cadence and retention and storage may change; a key
that changes the weights is refused). Each checkpoint carries an inference export:
  python -m jobs.edit --checkpoints CKPTS --model-dir RUN_DIR/checkpoints/step_N/lightning-drag-sd15 ...

--launcher ray runs the ranks as Ray Train workers (trainer/ray_train.py): on the cluster of
--ray-address or $RAY_ADDRESS (set by `ray job submit`), else on a local Ray it starts. Ray
keeps the checkpoints in STORAGE/NAME/step_N (--storage-path: a shared path or a URL; default
run_dir; --run-name: default "checkpoints", i.e. where the plain launcher keeps them) and
restarts all workers from the latest one when a worker dies (--max-failures times). Paths in
the config should be absolute or URLs: under `ray job submit` this process runs in a temporary
copy of the working directory.
Exit status: 0 finished, 1 failure, 2 bad usage or config, or a run that cannot resume.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# The deepspeed launcher runs this file as a script: make the repository importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs import private_ray_on_loopback  # noqa: E402
from schemas.typed_config import ConfigError  # noqa: E402
from trainer.distributed import quiet_deepspeed  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML config (see configs/train-tiny.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config value, e.g. --set train.steps=1000")
    ap.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    ap.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher's
    ap.add_argument("--launcher", choices=("none", "ray"), default="none",
                    help="none: this process is one rank (alone, or started by torchrun or the "
                         "deepspeed launcher); ray: run the ranks as Ray Train workers")
    on_ray = ap.add_argument_group("--launcher ray")
    on_ray.add_argument("--num-workers", type=int, default=1, help="ranks (default 1)")
    on_ray.add_argument("--gpus-per-worker", type=float, default=0, help="default 0 (CPU)")
    on_ray.add_argument("--cpus-per-worker", type=float, default=1, help="default 1")
    on_ray.add_argument("--storage-path", help="where Ray keeps the checkpoints: a path every "
                        "node shares or a URL (default: run_dir)")
    on_ray.add_argument("--run-name", help="the run's directory in the storage; the same "
                        "name resumes it (default: checkpoints)")
    on_ray.add_argument("--max-failures", type=int, default=0,
                        help="restarts from the latest checkpoint after a worker failure "
                             "(default 0; -1: no limit)")
    on_ray.add_argument("--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, "
                        "else a local Ray is started)")
    args = ap.parse_args(argv)
    ray_only = [a.option_strings[0] for a in on_ray._group_actions
                if getattr(args, a.dest) != a.default]
    if ray_only and args.launcher != "ray":
        ap.error(f"{', '.join(ray_only)} only applies with --launcher ray")
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
    try:
        if args.launcher == "ray":
            private_ray_on_loopback(args.ray_address)
            from ray.train import TrainingFailedError
            from trainer.ray_train import run
            try:
                summary = run(cfg, args.num_workers, args.gpus_per_worker, args.cpus_per_worker,
                              args.storage_path, args.run_name, args.max_failures,
                              args.ray_address, args.device)
            except TrainingFailedError as e:
                print(f"error: training failed: {e}", file=sys.stderr)
                return 1
        else:
            from trainer.loop import train
            summary = train(cfg, device=args.device)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", 0)) == 0 and summary is not None:
        losses = summary.pop("losses")
        summary["first_loss"], summary["last_loss"] = losses[0] if losses else None, \
            losses[-1] if losses else None
        print("train: " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
