"""Training on Ray Train: `TorchTrainer` runs `trainer.loop.train` on N workers, DeepSpeed inside
each, checkpoints kept by Ray, restarts from the latest checkpoint after a worker dies.

    summary = run(cfg, num_workers=8, gpus_per_worker=1, storage_path="s3://bucket/runs",
                  run_name="exp1", max_failures=3)

What Ray Train (V2, Ray 2.60) does, as read in its sources:
- Every worker's `ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d),
  checkpoint_dir_name=name)` uploads the files of its own `d` into one directory
  `<storage>/<run name>/<name>` (rank 0's name is broadcast to all ranks), so the ranks' files
  merge; DeepSpeed names its files by rank and rank 0 alone writes the model-wide ones
  (trainer.json, the export), so nothing collides. The controller registers the checkpoint
  once every rank has reported it, then writes `checkpoint_manager_snapshot.json` and deletes
  the ones beyond `CheckpointConfig(num_to_keep)`: a checkpoint Ray hands back is complete.
- After a worker fails, all workers are replaced (`FailureConfig(max_failures)`) and the
  training function starts again; `ray.train.get_checkpoint()` is the latest registered
  checkpoint, and `Checkpoint.as_directory()` gives it as a local directory (the storage path
  itself when local, else downloaded once per node).
- A run started with the name and storage of an earlier one loads that run's snapshot: its
  latest checkpoint is what `get_checkpoint()` returns, so rerunning resumes (or, when the run
  had finished, finds nothing left to do).
- Workers chdir to a Ray session directory: relative paths in the config are made absolute
  here, in the driver.

Refusals (a ValueError, before any worker starts): a config that differs from the run's
(`<run_dir>/config.yaml`), a latest checkpoint written by another world size, and checkpoints in
the run's storage that Ray has no record of (written by the plain launcher).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile

from schemas import storage
from schemas.ray_runtime import init_ray
from trainer.checkpoint import CHECKPOINT_PREFIX, CheckpointStore, check_world_size
from trainer.config import Config, write_run_config
from trainer.distributed import quiet_deepspeed
from trainer.loop import train

log = logging.getLogger("trainer")
DEFAULT_RUN_NAME = "checkpoints"  # with storage_path = run_dir: where the plain launcher keeps them


class RayTrainCheckpoints(CheckpointStore):
    """Checkpoints kept by Ray Train: every rank writes its files into a private local
    directory and reports it; Ray uploads and merges them (module doc)."""

    @contextlib.contextmanager
    def latest(self):
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as path:
            yield path

    def begin(self, name: str, rank: int) -> str:
        return tempfile.mkdtemp(prefix=f"{name}-rank{rank}-")

    def commit(self, name: str, folder: str, rank: int, state: dict) -> None:
        import ray.train

        # A barrier across the workers; rank 0's metrics are the ones kept with the checkpoint.
        ray.train.report(dict(state), checkpoint=ray.train.Checkpoint.from_directory(folder),
                         checkpoint_dir_name=name, delete_local_checkpoint_after_upload=True)


def train_worker(config: dict) -> dict:
    """The training function of every Ray Train worker (TorchTrainer has set RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_* and the process group)."""
    quiet_deepspeed()
    return train(config["cfg"], device=config["device"], checkpoints=RayTrainCheckpoints())


# --- the driver ------------------------------------------------------------------------------

def storage_filesystem(storage_path: str):
    """(pyarrow filesystem, path) of a storage location for RunConfig: pyarrow's own for a
    local path, fsspec's (wrapped for pyarrow) for a URL, so Ray's storage is reached with the
    same filesystem, options and credentials as the rest of the run (schemas.storage)."""
    import pyarrow.fs

    if not storage.is_url(storage_path):
        return pyarrow.fs.LocalFileSystem(), os.path.abspath(storage_path.removeprefix("file://"))
    fs, path = storage.url_to_fs(storage_path)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path


def absolute_paths(cfg: Config) -> Config:
    """cfg with its local paths absolute (taken relative to this process's directory)."""
    def absolute(path: str) -> str:
        return path if not path or "://" in path else os.path.abspath(path)

    return dataclasses.replace(
        cfg, run_dir=absolute(cfg.run_dir),
        data=dataclasses.replace(cfg.data, shards=absolute(cfg.data.shards)),
        model=dataclasses.replace(cfg.model, checkpoints=absolute(cfg.model.checkpoints),
                                  init=absolute(cfg.model.init)))


def latest_state(fs, experiment: str) -> tuple[str, dict] | None:
    """(checkpoint path, trainer.json) of the checkpoint the Ray run at `experiment` resumes
    from, or None for a new run."""
    import pyarrow.fs
    from ray.train import Result

    infos = fs.get_file_info(pyarrow.fs.FileSelector(experiment, allow_not_found=True))
    if not any(i.base_name.startswith(CHECKPOINT_PREFIX) for i in infos):
        return None
    try:
        checkpoint = Result.from_path(experiment, storage_filesystem=fs).checkpoint
    except RuntimeError as e:  # no snapshot: these were not reported to Ray
        raise ValueError(
            f"{experiment} holds checkpoints that Ray Train has no record of: they were written "
            "by the plain launcher (resume them with it) or by a Ray run that died before its "
            "first checkpoint was complete (delete them); or use another --run-name or "
            "--storage-path") from e
    if checkpoint is None:
        return None
    with fs.open_input_stream(f"{checkpoint.path}/trainer.json") as f:
        return checkpoint.path, json.loads(f.read())


def run(cfg: Config, num_workers: int, gpus_per_worker: float = 0, cpus_per_worker: float = 1,
        storage_path: str | None = None, run_name: str | None = None,
        max_failures: int = 0, ray_address: str | None = None,
        device: str | None = None) -> dict | None:
    """Train cfg on `num_workers` Ray Train workers; checkpoints in `<storage_path (default:
    run_dir)>/<run_name (default: checkpoints)>/step_XXXXXXXX/`. Returns rank 0's summary
    (None when it never returned). Raises ValueError for a run that cannot start or resume,
    ray.train.TrainingFailedError when the workers failed more than `max_failures` times."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if num_workers < 1:
        raise ValueError(f"--num-workers {num_workers}: at least 1")
    cfg = absolute_paths(cfg)
    run_name = run_name or DEFAULT_RUN_NAME
    storage.configure(cfg.storage)
    fs, where = storage_filesystem(storage_path or cfg.run_dir)
    log.info("run config: %s", write_run_config(cfg))
    experiment = f"{where.rstrip('/')}/{run_name}"
    resume = latest_state(fs, experiment)
    if resume is not None:
        check_world_size(resume[1], num_workers, resume[0])
        log.info("run %s resumes from %s at step %d", run_name, resume[0], resume[1]["step"])
    if not ray.is_initialized():
        import model
        import schemas
        import trainer
        log.info("ray: %s", init_ray(ray_address, (trainer, model, schemas)))
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
    trainer = TorchTrainer(
        train_worker, train_loop_config={"cfg": cfg, "device": device},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=run_name, storage_path=where, storage_filesystem=fs,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(
                                 num_to_keep=cfg.checkpoint.keep_last)))
    return trainer.fit().return_value
