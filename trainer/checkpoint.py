"""Where a run's checkpoints are kept: `<run_dir>/checkpoints/step_XXXXXXXX/`.

A checkpoint holds DeepSpeed's state (`state/`, every rank writes its part), each rank's data
position (`data/`), `trainer.json` (step, batches consumed, counters, world size) and the
inference export `lightning-drag-sd15/`. It is complete or it is not resumed from.

Every store has the same three calls (trainer.ray_train.RayTrainCheckpoints is the third):
- `latest()`: a context giving the newest complete checkpoint as a local directory, or None;
- `begin(name, rank)`: the local directory this rank writes its files of checkpoint `name`;
- `commit(name, folder, rank, state)`: called by every rank once its files are written.

`checkpoint_store(run_dir, keep_last)` picks the store for a run directory:
- `LocalCheckpoints` for a filesystem every rank shares: a checkpoint is written under
  `.staging-<name>` and renamed by rank 0 when every rank is done;
- `UrlCheckpoints` for object storage (s3://, gs://, ...): every rank writes into a private
  local directory and uploads its files, rank 0 uploads `trainer.json` last, after every
  rank's upload, so a checkpoint with `trainer.json` is complete; resuming downloads it.
Both keep the newest `keep_last` complete checkpoints.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile

from schemas import storage

log = logging.getLogger("trainer")
CHECKPOINT_PREFIX = "step_"
STATE_FILE = "trainer.json"     # written last: its presence marks a complete checkpoint


def checkpoint_dir(run_dir: str) -> str:
    return storage.join(run_dir, "checkpoints")


def list_checkpoints(run_dir: str) -> list[str]:
    """Complete checkpoints of a local run directory, oldest first (staging directories are
    not listed)."""
    root = checkpoint_dir(run_dir)
    if not os.path.isdir(root):
        return []
    return sorted(os.path.join(root, d) for d in os.listdir(root)
                  if d.startswith(CHECKPOINT_PREFIX))


def read_trainer_state(checkpoint: str) -> dict:
    with open(os.path.join(checkpoint, STATE_FILE)) as f:
        return json.load(f)


def write_trainer_state(folder: str, state: dict) -> None:
    with open(os.path.join(folder, STATE_FILE), "w") as f:
        json.dump(state, f, indent=2)


def data_position_file(checkpoint: str, rank: int) -> str:
    return os.path.join(checkpoint, "data", f"rank_{rank:05d}.json")


def check_world_size(state: dict, world: int, checkpoint: str) -> None:
    """Refuse to resume a checkpoint written by another number of ranks: each rank's data
    stream position and optimizer shard belong to its rank, and they are not converted."""
    if state["world_size"] != world:
        raise ValueError(
            f"{checkpoint} was written by a run with world size {state['world_size']}, and this "
            f"run has world size {world}: resume it with {state['world_size']} ranks (torchrun "
            f"--nproc_per_node, or --num-workers with --launcher ray), or start a new run "
            "(another run_dir, or another --run-name with --launcher ray); checkpoints are not "
            "converted between world sizes")


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


class LocalCheckpoints:
    """Checkpoints in `<run_dir>/checkpoints/` on a filesystem every rank shares (module doc)."""

    def __init__(self, run_dir: str, keep_last: int):
        self.run_dir, self.keep_last = run_dir, keep_last

    @contextlib.contextmanager
    def latest(self):
        existing = list_checkpoints(self.run_dir)
        yield existing[-1] if existing else None

    def begin(self, name: str, rank: int) -> str:
        staging = os.path.join(checkpoint_dir(self.run_dir), f".staging-{name}")
        if rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
            os.makedirs(staging)
        _barrier()
        return staging

    def commit(self, name: str, folder: str, rank: int, state: dict) -> None:
        _barrier()
        if rank == 0:
            os.replace(folder, os.path.join(checkpoint_dir(self.run_dir), name))
            for old in list_checkpoints(self.run_dir)[:-self.keep_last]:
                shutil.rmtree(old)
        _barrier()


class UrlCheckpoints:
    """Checkpoints in `<run_dir>/checkpoints/` on object storage (module doc)."""

    def __init__(self, run_dir: str, keep_last: int):
        self.run_dir, self.keep_last = run_dir, keep_last
        self.root = checkpoint_dir(run_dir)

    def complete(self) -> list[str]:
        """URLs of the complete checkpoints, oldest first."""
        fs, path = storage.url_to_fs(self.root)
        if not fs.isdir(path):
            return []
        names = sorted(storage.basename(e) for e in fs.ls(path, detail=False)
                       if storage.basename(e).startswith(CHECKPOINT_PREFIX))
        return [storage.join(self.root, n) for n in names
                if storage.isfile(storage.join(self.root, n, STATE_FILE))]

    @contextlib.contextmanager
    def latest(self):
        existing = self.complete()
        if not existing:
            yield None
            return
        local = tempfile.mkdtemp(prefix=f"{storage.basename(existing[-1])}-")
        try:
            storage.download_tree(existing[-1], local)
            log.info("checkpoint %s fetched into %s", existing[-1], local)
            yield local
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def begin(self, name: str, rank: int) -> str:
        return tempfile.mkdtemp(prefix=f"{name}-rank{rank}-")

    def commit(self, name: str, folder: str, rank: int, state: dict) -> None:
        target = storage.join(self.root, name)
        try:
            state_file = os.path.join(folder, STATE_FILE)
            # Rank 0 holds back trainer.json: uploaded after every rank's files are up.
            skip = (STATE_FILE,) if rank == 0 else ()
            for rel in storage.local_files(folder):
                if rel not in skip:
                    storage.publish_file(os.path.join(folder, rel),
                                         storage.join(target, *rel.split(os.sep)))
            _barrier()
            if rank == 0:
                storage.publish_file(state_file, storage.join(target, STATE_FILE))
                for old in self.complete()[:-self.keep_last]:
                    storage.remove(old)
            _barrier()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def checkpoint_store(run_dir: str, keep_last: int):
    """The store for `run_dir`: UrlCheckpoints for a URL, else LocalCheckpoints."""
    if storage.is_url(run_dir):
        return UrlCheckpoints(run_dir, keep_last)
    return LocalCheckpoints(run_dir, keep_last)
