"""Streaming the pair shards for training: resampled, deterministic, resumable, robust.

    stream = PairStream(list_shards("s3://bucket/pairs/"), batch_size=8, resolution=256,
                        seed=0, rank=rank, world_size=world)
    loader = PairLoader(stream, num_workers=4)      # or make_loader(cfg.data, ...)
    loader.load_state_dict(saved)                   # optional: resume
    for batch in loader: ...
    saved = loader.state_dict()                     # JSON-serialisable, per rank

Sampling. Every (rank, worker) runs its own infinite stream: it draws a shard uniformly *with
replacement* from the full list, reads it front to back, shuffles its samples with a small
buffer and moves on to the next draw. All of it comes from one generator seeded by
(seed, rank, worker), so every rank yields batches forever whatever the shard sizes (uneven
shards cannot hang DDP) and any number of ranks and workers works with any number of
shards. A sample's augmentation draws from its own generator seeded by
(seed, rank, worker, index of the sample in that worker's stream), so it does not depend on
what came before.

Batches. A worker yields a batch as soon as it holds `batch_size` good samples (samples span
shard boundaries). With a DataLoader of W workers, batches come from the workers in strict
round-robin order (`in_order=True`): global batch g is worker g % W's batch g // W.

Resume. Each batch carries `position`: the global batch index, the (logical) worker that made
it, and that worker's resume point *after* the batch: the generator state before it drew its
current shard, how many raw samples of that shard visit it has consumed, and its raw-sample
count. `PairStream.observe` (called by PairLoader and by in-process iteration for every batch
delivered) records it; `state_dict()` is then the number of batches delivered plus every
worker's latest resume point. A resumed worker restores the generator, draws the same shard,
re-reads it with the same shuffle and skips the consumed members as raw tar members: nothing
skipped is decoded, and at most one shard per worker is re-read. Since the DataLoader always
starts its round-robin at worker 0, a stream resumed after j batches lets physical worker p
play logical worker (p + j) % W, so batch j comes first as in the uninterrupted run. Hence
batch k of a fresh stream == batch k of a stream resumed at any j < k, for num_workers=0 and
for num_workers > 0 alike, corrupt data included. Resuming needs the same shard list, seed,
rank, batch size, resolution, augmentation settings and number of workers (checked).

Robustness. A missing, unreadable or truncated shard (ends before the end-of-archive marker
or inside a member; its complete samples before the damage are used) and a corrupt sample
(undecodable image, bad JSON, a sample that breaks `schemas.sample.validate_sample`) are
skipped, logged with the shard and key, and counted: each batch carries `skipped`, the counts
its worker found since its previous batch, which `observe` adds into `stream.stats`. If a
worker's shard draws yield no usable sample from every distinct shard in a row (or from
`max_bad_shards` draws in a row), it raises NoUsableData instead of looping forever.

Tars are read by `schemas.shard.raw_samples` (tolerant: the standard library's `tarfile` in
stream mode over fsspec), not webdataset's pipeline: resuming needs raw-member control of the
read position and the shuffle, and a shard cut at a member boundary must be detected (tarfile
alone accepts it).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from model.images import images_to_tensor
from model.points import point_maps
from schemas.sample import SampleError, decode_sample
from schemas.shard import list_shards, raw_samples
from trainer.augment import augment_pair, resize_pair

log = logging.getLogger(__name__)

STATE_VERSION = 1
_SHARD_STREAM, _AUGMENT_STREAM = 0, 1          # SeedSequence tags of a worker's generators


class NoUsableData(RuntimeError):
    """Every shard the stream tried was missing, unreadable or held only bad samples."""


@dataclass
class DataStats:
    """Counters of what the stream delivered and skipped; `reasons` maps a skip reason
    (shard_missing, shard_unreadable, shard_truncated, sample_corrupt, sample_invalid) to a
    count."""
    samples: int = 0
    skipped_samples: int = 0
    skipped_shards: int = 0
    reasons: dict = field(default_factory=dict)

    def skip_sample(self, reason: str) -> None:
        self.skipped_samples += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def skip_shard(self, reason: str) -> None:
        self.skipped_shards += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def add_skipped(self, skipped: dict) -> None:
        """Add a batch's `skipped` counts."""
        self.skipped_samples += skipped["samples"]
        self.skipped_shards += skipped["shards"]
        for reason, n in skipped["reasons"].items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n

    def skipped(self) -> dict:
        return {"samples": self.skipped_samples, "shards": self.skipped_shards,
                "reasons": dict(self.reasons)}

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _shuffled(items, rng: np.random.Generator, size: int):
    """Shuffle a stream with a buffer of `size` items (size 1: unchanged order)."""
    buf = []
    for item in items:
        buf.append(item)
        if len(buf) >= size:
            i = int(rng.integers(len(buf)))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    while buf:
        i = int(rng.integers(len(buf)))
        buf[i], buf[-1] = buf[-1], buf[i]
        yield buf.pop()


# ----------------------------------------------------------------------------------------
# Samples and batches


def collate(items: list[dict]) -> dict:
    """Prepared samples (same size R) -> the training batch."""
    r = items[0]["source"].shape[0]
    handle_maps, target_maps = [], []
    for it in items:
        hm, tm = point_maps(it["handles"], it["targets"], (r, r))
        handle_maps.append(hm)
        target_maps.append(tm)
    masks = torch.from_numpy(np.stack([it["mask"] for it in items]) > 127)
    return {
        "source": images_to_tensor([it["source"] for it in items]),
        "target": images_to_tensor([it["target"] for it in items]),
        "mask": masks[:, None].float(),
        "handle_map": torch.cat(handle_maps),
        "target_map": torch.cat(target_maps),
        "num_points": torch.tensor([len(it["handles"]) for it in items], dtype=torch.int64),
        "keys": [it["key"] for it in items],
    }


def _digest(shards: list[str]) -> str:
    return hashlib.sha256("\n".join(shards).encode()).hexdigest()[:16]


class PairStream(IterableDataset):
    """An infinite stream of collated training batches from pair shards (see module doc).

    Batch: source, target (B, 3, R, R) float in [-1, 1]; mask (B, 1, R, R) 0/1; handle_map,
    target_map (B, 1, R, R) with pair i's pixel labelled i + 1 (`model.points.point_maps`);
    num_points (B,); keys (list of B sample keys); skipped (counts since the worker's previous
    batch); position (resume bookkeeping).

    Iterated in-process (or by a DataLoader with num_workers=0) it records its own position;
    with DataLoader workers use PairLoader, or call `observe(batch)` on every batch."""

    def __init__(self, shards, batch_size: int, resolution: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, augment: bool = True, crop_scale=(0.8, 1.0),
                 flip_p: float = 0.5, shuffle_buffer: int = 64, max_bad_shards: int = 1000):
        super().__init__()
        self.shards = list_shards(shards)
        if batch_size < 1 or resolution < 1 or shuffle_buffer < 1 or max_bad_shards < 1:
            raise ValueError("batch_size, resolution, shuffle_buffer and max_bad_shards "
                             "must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.batch_size, self.resolution = int(batch_size), int(resolution)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.augment, self.crop_scale, self.flip_p = bool(augment), tuple(crop_scale), flip_p
        self.shuffle_buffer, self.max_bad_shards = int(shuffle_buffer), int(max_bad_shards)
        self.stats = DataStats()
        self._batches = 0                       # batches delivered to the caller
        self._num_workers: Optional[int] = None  # fixed by the first delivered batch
        self._workers: list = []                # per logical worker: resume point or None

    # -- state -----------------------------------------------------------------------------

    def _fingerprint(self) -> dict:
        return {"shards": _digest(self.shards), "num_shards": len(self.shards),
                "seed": self.seed, "rank": self.rank, "batch_size": self.batch_size,
                "resolution": self.resolution, "augment": self.augment,
                "crop_scale": list(self.crop_scale), "flip_p": self.flip_p,
                "shuffle_buffer": self.shuffle_buffer}

    def state_dict(self) -> dict:
        """Where the caller is: batches delivered and each worker's resume point."""
        return copy.deepcopy({"version": STATE_VERSION, "stream": self._fingerprint(),
                              "batches": self._batches, "num_workers": self._num_workers,
                              "workers": self._workers, "stats": self.stats.as_dict()})

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data state version {state.get('version')} != {STATE_VERSION}")
        mine = self._fingerprint()
        diff = sorted(k for k in mine if state["stream"].get(k) != mine[k])
        if diff:
            raise ValueError(f"cannot resume this data stream exactly: {', '.join(diff)} "
                             "differ from the saved stream")
        self._batches = int(state["batches"])
        self._num_workers = state["num_workers"]
        self._workers = copy.deepcopy(state["workers"])
        self.stats = DataStats(**copy.deepcopy(state["stats"]))

    def observe(self, batch: dict) -> None:
        """Record a batch delivered to the caller (idempotent)."""
        pos = batch["position"]
        g, w, n = pos["batch"], pos["worker"], pos["num_workers"]
        if g < self._batches:
            return
        if g != self._batches:
            raise RuntimeError(f"batch {g} delivered after {self._batches} batches: batches "
                               "must be observed in order (DataLoader in_order=True)")
        if self._num_workers != n:
            self._num_workers, self._workers = n, [None] * n
        self._workers[w] = pos["resume"]
        self._batches = g + 1
        self.stats.samples += len(batch["keys"])
        self.stats.add_skipped(batch["skipped"])

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        physical, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        j = self._batches
        if j and self._num_workers != num_workers:
            raise ValueError(f"this stream was saved with {self._num_workers} DataLoader "
                             f"workers and cannot resume exactly with {num_workers}")
        logical = (physical + j) % num_workers
        resume = self._workers[logical] if j else None
        batches = self._worker_batches(logical, num_workers, j + physical, resume)
        if info is not None:
            yield from batches
            return
        for batch in batches:
            self.observe(batch)
            yield batch

    def _prepare(self, raw: dict, shard: str, index: int, logical: int,
                 stats: DataStats) -> Optional[dict]:
        """Decode, validate and transform one raw sample; None (counted) if it is bad."""
        key = raw.get("__key__")
        try:
            sample = decode_sample(raw)
        except SampleError as e:
            stats.skip_sample("sample_invalid")
            log.warning("skipping sample %s of shard %s: %s", key, shard, e)
            return None
        except Exception as e:  # noqa: BLE001 - undecodable bytes in any member
            stats.skip_sample("sample_corrupt")
            log.warning("skipping sample %s of shard %s: %s: %s", key, shard,
                        type(e).__name__, e)
            return None
        parts = (sample.source, sample.target, sample.mask, sample.handle, sample.target_points)
        if self.augment:
            rng = np.random.default_rng([self.seed, self.rank, logical, _AUGMENT_STREAM, index])
            out = augment_pair(*parts, rng, self.resolution, self.crop_scale, self.flip_p)
        else:
            out = resize_pair(*parts, self.resolution)
        source, target, mask, handles, targets = out
        return {"key": sample.key, "source": source, "target": target, "mask": mask,
                "handles": handles, "targets": targets}

    def _worker_batches(self, logical: int, num_workers: int, first_batch: int,
                        resume: Optional[dict]) -> Iterator[dict]:
        rng = np.random.Generator(np.random.PCG64(
            np.random.SeedSequence([self.seed, self.rank, logical, _SHARD_STREAM])))
        index, skip = 0, 0             # raw samples consumed; raw samples to skip on resume
        if resume is not None:
            rng.bit_generator.state = resume["rng"]
            index, skip = resume["index"], resume["in_shard"]
        stats, pending, g = DataStats(), [], first_batch
        failed, in_a_row = set(), 0
        distinct = len(set(self.shards))
        while True:
            visit = rng.bit_generator.state
            shard = self.shards[int(rng.integers(len(self.shards)))]
            problems: list = []
            in_shard = usable = 0
            for raw in _shuffled(raw_samples(shard, problems), rng, self.shuffle_buffer):
                in_shard += 1
                if skip:                # consumed before the resume point: not decoded
                    skip -= 1
                    usable += 1
                    continue
                item = self._prepare(raw, shard, index, logical, stats)
                index += 1
                if item is None:
                    continue
                usable += 1
                pending.append(item)
                if len(pending) == self.batch_size:
                    batch = collate(pending)
                    batch["skipped"] = stats.skipped()
                    batch["position"] = {
                        "batch": g, "worker": logical, "num_workers": num_workers,
                        "resume": {"rng": visit, "in_shard": in_shard, "index": index}}
                    pending, stats, g = [], DataStats(), g + num_workers
                    yield batch
            skip = 0
            for reason, message in problems:
                stats.skip_shard(reason)
                log.warning("skipping shard %s (%s): %s", shard, reason, message)
            if usable:
                failed.clear()
                in_a_row = 0
                continue
            failed.add(shard)
            in_a_row += 1
            if len(failed) >= distinct or in_a_row >= self.max_bad_shards:
                raise NoUsableData(
                    f"no usable sample in {in_a_row} shard reads in a row (rank {self.rank}, "
                    f"worker {logical}): {len(failed)} of {distinct} distinct shards failed, "
                    f"e.g. {sorted(failed)[:3]}; skips so far {stats.reasons}")


class PairLoader:
    """A PairStream behind a torch DataLoader (num_workers processes; 0 = in this process)
    that records every delivered batch, so `state_dict()` resumes exactly (module doc)."""

    def __init__(self, stream: PairStream, num_workers: int = 0, **dataloader_kwargs):
        self.stream, self.num_workers = stream, int(num_workers)
        self.dataloader_kwargs = dataloader_kwargs

    @property
    def stats(self) -> DataStats:
        return self.stream.stats

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)

    def __iter__(self) -> Iterator[dict]:
        if self.num_workers == 0:
            yield from self.stream          # observes its own batches
            return
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers,
                            in_order=True, **self.dataloader_kwargs)
        batches = iter(loader)
        try:
            for batch in batches:
                self.stream.observe(batch)
                yield batch
        finally:
            # Stop the workers now, also when the consumer stops early or a worker raised:
            # otherwise a traceback that keeps this frame alive keeps them until exit (and
            # the interpreter then waits for them).
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()


def make_loader(cfg, seed: int, rank: int, world_size: int,
                state: Optional[dict] = None) -> PairLoader:
    """The training loader of a data config (trainer.config.DataConfig: shards, batch_size,
    resolution, num_workers, augment, crop_scale, flip_p), resumed from `state` if given."""
    stream = PairStream(cfg.shards, batch_size=cfg.batch_size, resolution=cfg.resolution,
                        seed=seed, rank=rank, world_size=world_size, augment=cfg.augment,
                        crop_scale=cfg.crop_scale, flip_p=cfg.flip_p)
    loader = PairLoader(stream, num_workers=cfg.num_workers)
    if state is not None:
        loader.load_state_dict(state)
    return loader
