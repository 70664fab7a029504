"""Per-video stages between planning and writing, free of Ray so tests can call them directly.

prepare_video (CPU, in an isolated decoder process): probe -> scoring decode -> filters ->
pair/crop sampling -> decode of just the pair clips, cropped and resized.
finish_video (after tracking): handle/target selection and mask -> `DragSample`s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pipeline import coords, filters, sampling
from pipeline.decode import FrameReader, VideoTooLarge, probe
from pipeline.points import select_drag
from schemas.manifest import SCHEMA_VERSION
from schemas.sample import DragSample, make_key


@dataclass
class PairClip:
    pair_index: int
    t0: int
    t1: int
    crop_box: tuple[int, int, int, int]
    frames: np.ndarray              # (T, R, R, 3) uint8, frames[0] at t0, frames[-1] at t1


@dataclass
class PreparedVideo:
    row: dict                       # the video manifest row (status "ok" until proven empty)
    pairs: list[PairClip] = field(default_factory=list)


def video_row(video_id: str, uri: str, seed: int, **values) -> dict:
    row = dict(schema_version=SCHEMA_VERSION, video_id=video_id, source_uri=uri, status="ok",
               shard=None, num_pairs=0, duration=None, fps=None, num_frames=None,
               video_width=None, video_height=None, rotation=None, num_shots=None,
               cut_score=None, motion_score=None, camera_score=None, decoded_frames=0,
               seed=seed)
    row.update(values)
    return row


def failed_row(video_id: str, uri: str, seed: int, error: BaseException) -> dict:
    message = " ".join(str(error).split())[:500]
    return video_row(video_id, uri, seed, status=f"failed:{type(error).__name__}: {message}")


def prepare_video(path: str, uri: str, video_id: str, cfg, seed: int) -> PreparedVideo:
    """Everything before tracking for one local file. Raises VideoError (and other
    exceptions) for inputs that fail; returns a filtered row for inputs that are filtered."""
    fc, dc = cfg.filter, cfg.decode
    info = probe(path)
    w, h = info.upright_size
    row = video_row(video_id, uri, seed, duration=info.duration, fps=info.fps,
                    num_frames=info.num_frames, video_width=w, video_height=h,
                    rotation=info.rotation)
    if w * h > fc.max_pixels:
        raise VideoTooLarge(f"{w}x{h} exceeds filter.max_pixels={fc.max_pixels}")
    if min(w, h) < fc.min_size:
        return PreparedVideo({**row, "status": "filtered:too-small"})

    scale = dc.score_size / min(w, h)
    score_size = (max(16, round(w * scale)), max(16, round(h * scale)))
    scorer = FrameReader(path, info, size=score_size, backend=dc.backend)
    n = scorer.num_frames
    row["num_frames"] = n
    if n < max(2, fc.min_frames) or n / info.fps < fc.min_duration_s:
        return PreparedVideo({**row, "status": "filtered:too-short"})

    step = max(1, round(info.fps / dc.score_fps), math.ceil(n / dc.max_score_frames))
    score_idx = list(range(0, n, step))
    frames = scorer.get(score_idx)
    gray = [np.ascontiguousarray(f.mean(axis=2).astype(np.uint8)) for f in frames]
    distances = filters.histogram_distances(frames)
    shots = filters.split_shots(distances, fc.cut_threshold)
    interval_s = step / info.fps
    verdicts = []
    for shot in shots:
        filters.score_shot(gray, shot, interval_s)
        span_s = (score_idx[shot.end] - score_idx[shot.start]) / info.fps
        verdicts.append(filters.shot_verdict(shot, span_s, fc))
    good = [s for s, v in zip(shots, verdicts) if v is None]
    reported = good or [max(shots, key=lambda s: s.end - s.start)]
    row.update(num_shots=len(shots), cut_score=float(distances.max(initial=0.0)),
               motion_score=float(np.mean([s.object_motion for s in reported])),
               camera_score=float(np.mean([s.camera_motion for s in reported])),
               decoded_frames=scorer.decoded_frames)
    if not good:
        longest = verdicts[shots.index(reported[0])]
        return PreparedVideo({**row, "status": f"filtered:{longest}"})

    spans = [(score_idx[s.start], score_idx[s.end]) for s in good]
    pairs = sampling.sample_pairs(spans, info.fps, cfg.sample.gap_s, cfg.sample.pairs_per_video,
                                  sampling.rng_for(seed, "pairs"))
    if not pairs:
        return PreparedVideo({**row, "status": "filtered:too-short"})
    crop_rng = sampling.rng_for(seed, "crops")
    boxes = [sampling.sample_crop(w, h, cfg.sample.crop_scale, crop_rng) for _ in pairs]
    indices = [sampling.clip_indices(t0, t1, cfg.track.num_frames) for t0, t1 in pairs]
    reader = FrameReader(path, info, backend=dc.backend)
    wanted = sorted({i for idx in indices for i in idx})
    decoded = dict(zip(wanted, reader.get(wanted)))
    out = (cfg.output.resolution,) * 2
    clips = [PairClip(k, t0, t1, box, np.stack([coords.crop_resize(decoded[i], box, out)
                                                for i in idx]))
             for k, ((t0, t1), box, idx) in enumerate(zip(pairs, boxes, indices))]
    row["decoded_frames"] += reader.decoded_frames
    return PreparedVideo(row, clips)


def finish_video(video: PreparedVideo, tracks: np.ndarray, visible: np.ndarray, cfg,
                 tracker_name: str, tracker_version: str) -> tuple[dict, list[DragSample]]:
    """tracks (P, T, N, 2) / visible (P, T, N) for the video's P pair clips -> row, samples."""
    row = dict(video.row)
    samples = []
    res = cfg.output.resolution
    rng = sampling.rng_for(row["seed"], "points")
    for clip, tr, vis in zip(video.pairs, tracks, visible):
        drag = select_drag(tr, vis, (res, res), cfg.points, cfg.track.grid_size, rng)
        if drag is None:
            continue
        key = make_key(row["video_id"], clip.pair_index)
        x0, y0, cw, ch = clip.crop_box
        meta = dict(
            schema_version=SCHEMA_VERSION, key=key, video_id=row["video_id"],
            source_uri=row["source_uri"], pair_index=clip.pair_index, frame_t0=clip.t0,
            frame_t1=clip.t1, time_t0=clip.t0 / row["fps"], time_t1=clip.t1 / row["fps"],
            fps=row["fps"], video_width=row["video_width"], video_height=row["video_height"],
            rotation=row["rotation"], crop_x=float(x0), crop_y=float(y0), crop_w=float(cw),
            crop_h=float(ch), width=res, height=res, num_points=len(drag.handle),
            tracker=tracker_name, tracker_version=tracker_version,
            motion_score=row["motion_score"], camera_score=row["camera_score"],
            pair_motion=drag.pair_motion, visibility=drag.visibility, seed=row["seed"])
        samples.append(DragSample(key=key, source=clip.frames[0], target=clip.frames[-1],
                                  mask=drag.mask, handle=drag.handle, target_points=drag.target,
                                  meta=meta))
    row["num_pairs"] = len(samples)
    if row["status"] == "ok" and not samples:
        row["status"] = "filtered:no-trackable-motion"
    return row, samples
