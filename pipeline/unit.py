"""What one work unit goes through: its videos prepared (spooled, decoded in the isolated
decoder process), their pair clips batched for the tracker, then points, masks and the unit's
shard written. Video-level work is `pipeline.video`; `pipeline.stages` declares these steps as
the pipeline's stages."""
from __future__ import annotations

import contextlib
import os
import tarfile
import tempfile

import numpy as np

from pipeline import plan
from pipeline.decode import VideoTooLarge
from pipeline.isolate import IsolatedRunner
from pipeline.video import PreparedVideo, failed_row, finish_video, prepare_video
from pipeline.sampling import seed_for
from pipeline.tracking.base import grid_queries
from pipeline.writer import write_unit
from schemas import storage


@contextlib.contextmanager
def _spooled(read, size: int | None, max_bytes: int):
    """Copy a remote or archived input to a private temp file (named by us, never by the
    input) and yield its path."""
    if size is not None and size > max_bytes:
        raise VideoTooLarge(f"{size} bytes exceeds decode.max_bytes={max_bytes}")
    fd, path = tempfile.mkstemp(suffix=".video")
    try:
        with os.fdopen(fd, "wb") as out, read() as src:
            copied = 0
            while chunk := src.read(1 << 20):
                copied += len(chunk)
                if copied > max_bytes:
                    raise VideoTooLarge(f"more than decode.max_bytes={max_bytes} bytes")
                out.write(chunk)
        yield path
    finally:
        os.unlink(path)


def _prepare_one(runner: IsolatedRunner, path_ctx, uri: str, cfg) -> PreparedVideo:
    vid = plan.video_id(uri)
    seed = seed_for(cfg.seed, vid)
    try:
        with path_ctx() as path:
            return runner.call(prepare_video, path, uri, vid, cfg, seed)
    except Exception as e:  # noqa: BLE001 - nothing an input does may stop the job
        return PreparedVideo(failed_row(vid, uri, seed, e))


def _tar_videos(tar_uri: str):
    """(member URI, member, open tar) for each video member of a tar shard, streamed once;
    a member can be read only until the next one is yielded."""
    with storage.open_input(tar_uri) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        for member in tar:
            if member.isfile() and member.name.lower().endswith(plan.VIDEO_EXTENSIONS):
                yield plan.member_uri(tar_uri, member.name), member, tar


def prepare_unit(unit: plan.Unit, cfg, runner: IsolatedRunner) -> list[PreparedVideo]:
    max_bytes = cfg.decode.max_bytes
    out = []
    if unit.kind == "tar":
        tar_uri = unit.inputs[0]
        try:
            for uri, member, tar in _tar_videos(tar_uri):
                ctx = lambda m=member, t=tar: _spooled(lambda: t.extractfile(m), m.size, max_bytes)
                out.append(_prepare_one(runner, ctx, uri, cfg))
        except Exception as e:  # noqa: BLE001 - an unreadable tar is one failed row
            out.append(PreparedVideo(failed_row(plan.video_id(tar_uri), tar_uri,
                                                seed_for(cfg.seed, plan.video_id(tar_uri)), e)))
        return out
    for uri in unit.inputs:
        if plan.is_remote(uri):
            ctx = lambda u=uri: _spooled(lambda: storage.open_input(u), None, max_bytes)
        else:
            ctx = lambda u=uri: contextlib.nullcontext(u)
        out.append(_prepare_one(runner, ctx, uri, cfg))
    return out


def unit_clips(prepared: list[PreparedVideo]) -> np.ndarray | None:
    """All pair clips of a unit as one tracker batch (B, T, R, R, 3), or None."""
    clips = [c.frames for v in prepared for c in v.pairs]
    return np.stack(clips) if clips else None


def track_clips(tracker, clips: np.ndarray, grid_size: int):
    b, _, h, w = clips.shape[:4]
    queries = np.broadcast_to(grid_queries(h, w, grid_size), (b, grid_size ** 2, 2)).copy()
    return tracker.track(clips, queries)


def finish_unit(unit: plan.Unit, prepared: list[PreparedVideo], tracked, cfg,
                output_dir: str) -> list[dict]:
    """Points, masks and samples for every video of the unit; writes the shard; returns the
    video rows. `tracked` is (tracks, visible, tracker name, tracker version) or None."""
    rows, samples, offset = [], [], 0
    for video in prepared:
        if video.pairs:
            tracks, visible, name, version = tracked
            n = len(video.pairs)
            row, video_samples = finish_video(video, tracks[offset:offset + n],
                                              visible[offset:offset + n], cfg, name, version)
            offset += n
        else:
            row, video_samples = dict(video.row), []
        row["shard"] = f"{unit.name}.tar" if video_samples else None
        rows.append(row)
        samples += video_samples
    write_unit(output_dir, unit.name, samples, rows, cfg.output.image_format)
    return rows

