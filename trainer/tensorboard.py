"""TensorBoard event files of a run, in `<run_dir>/tensorboard/`, local or on object storage.

On a local run_dir the writer writes there directly. Object stores cannot append to an object,
so on a URL the events are written to a private local directory and each event file is
uploaded whole (one object, replaced each time) at most every `sync_every_s` seconds, at
every checkpoint and when the log is closed. TensorBoard reads such a logdir in place
(`tensorboard --logdir s3://bucket/runs/exp1/tensorboard`).
"""
from __future__ import annotations

import shutil
import tempfile
import time

from schemas import storage


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
