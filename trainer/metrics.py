"""What a run reports while it trains: the step line in the log and TensorBoard.

`StepLogger` times every micro-step (waiting for data vs the whole micro-step) and, on rank 0
every `log.every` steps and at the last, logs a progress line and writes the scalars
`train/loss`, `train/lr`, `train/grad_norm`, `train/data_wait_fraction`,
`train/samples_per_s` and (for the shard stream, this rank's) `data/skipped_samples`,
`data/skipped_shards`.

TensorBoard event files go to `<run_dir>/tensorboard/`, local or on object storage
(`TensorBoardLog`). On a local run_dir the writer writes there directly. Object stores cannot
append to an object, so on a URL the events are written to a private local directory and each
event file is uploaded whole (one object, replaced each time) at most every `sync_every_s`
seconds, at every checkpoint and when the log is closed. TensorBoard reads such a logdir in
place (`tensorboard --logdir s3://bucket/runs/exp1/tensorboard`).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time

from schemas import storage
from trainer.config import Config

log = logging.getLogger("trainer")


class TensorBoardLog:
    def __init__(self, run_dir: str, sync_every_s: float = 60.0):
        from torch.utils.tensorboard import SummaryWriter

        self.url = storage.join(run_dir, "tensorboard")
        self.remote = storage.is_url(run_dir)
        self.local = tempfile.mkdtemp(prefix="tensorboard-") if self.remote else self.url
        self.writer = SummaryWriter(self.local)
        self.sync_every_s = sync_every_s
        self._synced = time.monotonic()

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def add_image(self, tag: str, image, step: int) -> None:
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def sync(self, force: bool = False) -> None:
        """Upload the event files (a URL run_dir) when `force` or when it is time."""
        if not self.remote or (not force
                               and time.monotonic() - self._synced < self.sync_every_s):
            return
        self.writer.flush()
        storage.upload_tree(self.local, self.url)
        self._synced = time.monotonic()

    def close(self) -> None:
        self.writer.close()
        self.sync(force=True)
        if self.remote:
            shutil.rmtree(self.local, ignore_errors=True)


class StepLogger:
    """Timing, the log line and the TensorBoard scalars of one run (module doc). `writer` is
    the TensorBoardLog (rank 0 with `log.tensorboard`; else None)."""

    def __init__(self, cfg: Config, rank: int, samples: int, engine, lr_schedule, loader=None):
        self.cfg, self.rank = cfg, rank
        self.engine, self.lr_schedule, self.loader = engine, lr_schedule, loader
        self.writer = (TensorBoardLog(cfg.run_dir, cfg.log.sync_every_s)
                       if rank == 0 and cfg.log.tensorboard else None)
        self.wait = self.busy = 0.0  # seconds waiting for data, in counted micro-steps
        self.clock, self.samples_at_start = time.perf_counter(), samples
        self._started = self._fetched = 0.0

    def next_batch(self, batches) -> dict:
        """The next batch, its wait timed: a micro-step starts here."""
        self._started = time.perf_counter()
        batch = next(batches)
        self._fetched = time.perf_counter()
        return batch

    def micro_step_done(self) -> None:
        """The micro-step since `next_batch` was applied (a skipped one is not counted)."""
        self.wait += self._fetched - self._started
        self.busy += time.perf_counter() - self._started

    def samples_per_s(self, samples: int) -> float:
        return (samples - self.samples_at_start) / max(time.perf_counter() - self.clock, 1e-9)

    def data_wait(self) -> float:
        """The fraction of the counted micro-steps' time spent waiting for data."""
        return self.wait / max(self.busy, 1e-9)

    def step_done(self, step: int, loss: float, samples: int) -> None:
        """After optimiser step `step` (mean loss over the ranks; `samples` so far, all ranks):
        the log line and the scalars when due."""
        cfg = self.cfg
        if self.rank != 0 or (step % cfg.log.every != 0 and step != cfg.train.steps):
            return
        lr = self.lr_schedule.get_last_lr()[0]
        norm = self.engine.get_global_grad_norm()
        rate = self.samples_per_s(samples)
        log.info("step %d/%d loss %.5f lr %.3g %.2f samples/s data wait %.1f%%",
                 step, cfg.train.steps, loss, lr, rate, 100 * self.data_wait())
        if not self.writer:
            return
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)
        if norm is not None:
            self.writer.add_scalar("train/grad_norm", float(norm), step)
        self.writer.add_scalar("train/data_wait_fraction", self.data_wait(), step)
        self.writer.add_scalar("train/samples_per_s", rate, step)
        if self.loader is not None:  # bad data the stream skipped so far (this rank)
            for key in ("skipped_samples", "skipped_shards"):
                self.writer.add_scalar(f"data/{key}", self.loader.stats.as_dict()[key], step)
        self.writer.sync()

    def checkpoint_saved(self) -> None:
        if self.writer:
            self.writer.sync(force=True)

    def close(self, samples: int) -> dict:
        """The run's summary of what this logger measured; the event files closed."""
        if self.writer:
            self.writer.close()
        return {"data_wait": self.data_wait(), "samples_per_s": self.samples_per_s(samples)}
