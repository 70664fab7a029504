"""Run by torchrun in tests: train on this rank's slice of the known global batches.

  python -m torch.distributed.run --nproc_per_node N two_process_train.py RUN_DIR CKPT GLOBAL_BATCH STEPS ZERO
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.trainer.trainer_helpers import known_batches, rank_config  # noqa: E402
from trainer.loop import train  # noqa: E402

run_dir, ckpt, global_batch, steps, zero = sys.argv[1:6]
world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
cfg = rank_config(run_dir, ckpt, int(global_batch), world, int(steps), int(zero))
out = train(cfg, batches=known_batches(int(global_batch), rank, world), device="cpu")
if rank == 0:
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(out, f)
