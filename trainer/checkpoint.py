"""A run's checkpoints: what one holds, writing one, resuming from one, and where they are kept.

`step_XXXXXXXX/` holds DeepSpeed's state (`state/`, every rank writes its part), each rank's
data position (`data/`), `trainer.json` (step, batches consumed, counters, world size), the EMA
(`ema.safetensors`, trainer.ema) and the inference export `lightning-drag-sd15/` (public layout,
loads in jobs.edit with the run's base model and IP-Adapter). It is complete or it is not
resumed from. A checkpoint resumes only with the world size that wrote it (each rank's data
stream and optimizer shard belong to its rank).

Where they are kept is a `CheckpointStore` (three calls, see it); `checkpoint_store(run_dir,
keep_last)` picks one for a run directory, `<run_dir>/checkpoints/`:
- `LocalCheckpoints` for a filesystem every rank shares: a checkpoint is written under
  `.staging-<name>` and renamed by rank 0 when every rank is done;
- `UrlCheckpoints` for object storage (s3://, gs://, ...): every rank writes into a private
  local directory and uploads its files, rank 0 uploads `trainer.json` last, after every
  rank's upload, so a checkpoint with `trainer.json` is complete; resuming downloads it.
Both keep the newest `keep_last` complete checkpoints. Under Ray Train the store is
trainer.ray_train.RayTrainCheckpoints: Ray's storage.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Protocol

from schemas import storage

log = logging.getLogger("trainer")
CHECKPOINT_PREFIX = "step_"
STATE_FILE = "trainer.json"     # written last: its presence marks a complete checkpoint
EXPORT_DIR = "lightning-drag-sd15"


class CheckpointStore(Protocol):
    """Where checkpoints are kept; every rank makes the same calls."""

    def latest(self) -> contextlib.AbstractContextManager[str | None]:
        """A context giving the newest complete checkpoint as a local directory, or None."""

    def begin(self, name: str, rank: int) -> str:
        """The local directory this rank writes its files of checkpoint `name` into."""

    def commit(self, name: str, folder: str, rank: int, state: dict) -> None:
        """Called by every rank once its files of `name` are written in `folder`."""


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


class LocalCheckpoints(CheckpointStore):
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


class UrlCheckpoints(CheckpointStore):
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


def checkpoint_store(run_dir: str, keep_last: int) -> CheckpointStore:
    """The store for `run_dir`: UrlCheckpoints for a URL, else LocalCheckpoints."""
    if storage.is_url(run_dir):
        return UrlCheckpoints(run_dir, keep_last)
    return LocalCheckpoints(run_dir, keep_last)


# --- writing and resuming --------------------------------------------------------------------
# model, DeepSpeed and the EMA are imported where used: the stores above serve the Ray driver
# and storage tools, which build no model.

def save_checkpoint(engine, module, rank: int, state: dict, store: CheckpointStore,
                    ema=None, loader=None) -> None:
    """Checkpoint `step_<state["step"]>` of the engine (every rank calls this): DeepSpeed's
    state, this rank's data position (when the loader is the shard stream), trainer.json and,
    from rank 0, the export (EMA weights when `ema`) and ema.safetensors."""
    import deepspeed

    from model.checkpoint import save_lightning_drag

    name = f"{CHECKPOINT_PREFIX}{state['step']:08d}"
    folder = store.begin(name, rank)
    engine.save_checkpoint(folder, tag="state")  # every rank writes its shard of the state
    if loader is not None:  # each rank's stream has its own position
        os.makedirs(os.path.dirname(data_position_file(folder, rank)), exist_ok=True)
        with open(data_position_file(folder, rank), "w") as f:
            json.dump(loader.state_dict(), f)
    # The export needs whole parameters: gathered from every rank under ZeRO-3, a no-op else.
    with deepspeed.zero.GatheredParameters(list(module.parameters())):
        if rank == 0:
            export = os.path.join(folder, EXPORT_DIR)
            with_backbone = module.trains_backbone
            if ema is None:
                save_lightning_drag(module.drag_model, export, with_backbone)
            else:
                ema.save(folder)
                with ema.swapped_in(module):
                    save_lightning_drag(module.drag_model, export, with_backbone)
    if rank == 0:
        write_trainer_state(folder, state)
    store.commit(name, folder, rank, state)


@dataclass
class Resume:
    """Where a run starts: `checkpoint` (None: a new run), its trainer state and this rank's
    data position (None: a new run, or batches that the caller gives)."""
    checkpoint: str | None
    state: dict
    data_position: dict | None = None

    def load(self, engine, ema=None) -> None:
        """The engine's state (model, optimizer, LR schedule) and the EMA from the checkpoint;
        nothing for a new run."""
        if self.checkpoint is None:
            return
        engine.load_checkpoint(self.checkpoint, tag="state")
        if ema is not None:
            ema.load(self.checkpoint)
        log.info("resumed from %s at step %d", self.checkpoint, self.state["step"])


def resume_from(checkpoint: str | None, rank: int, world: int, data_position: bool) -> Resume:
    """The start of a run whose latest checkpoint is `checkpoint` (a store's `latest()`).
    Refuses (ValueError), before anything is built, a checkpoint of another world size and,
    when this rank's `data_position` is wanted, one without it."""
    if checkpoint is None:
        return Resume(None, {"step": 0, "batches": 0, "skipped_nonfinite": 0, "samples": 0,
                             "world_size": world})
    state = read_trainer_state(checkpoint)
    check_world_size(state, world, checkpoint)
    if not data_position:
        return Resume(checkpoint, state)
    path = data_position_file(checkpoint, rank)
    if not os.path.isfile(path):
        raise ValueError(f"{checkpoint} has no data position for rank {rank}")
    with open(path) as f:
        return Resume(checkpoint, state, json.load(f))
