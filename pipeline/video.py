"""What one video goes through between planning and writing; free of Ray, tests call it directly.

prepare_video (CPU, in an isolated decoder process): probe -> one sparse decode -> filters ->
pairs and crops -> pair clips, cropped and resized.
finish_video (after tracking): handle/target selection and mask -> `DragSample`s.

Decoding is the cost that matters. Seeking in a video decodes from the previous keyframe, so a
second pass over a long-GOP video costs as much as the first; prepare_video therefore draws
candidate pairs and their crops *before* scoring and decodes the scoring frames and every
candidate's clip in one pass, shrinking each frame as it arrives (scoring thumbnail, stored
crops). Candidates that straddle a cut or fall in a rejected shot are dropped after scoring;
only when too few survive does a second, shot-aware pass run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline import filters, sampling
from pipeline.decode import FrameReader, VideoTooLarge, probe
from pipeline.points import select_drag
from schemas import coords
from schemas.manifest import SCHEMA_VERSION
from schemas.sample import DragSample, make_key

CANDIDATES_PER_PAIR = 3   # candidate pairs drawn before scoring, per pair wanted


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

    reader = FrameReader(path, info, backend=dc.backend)
    n = reader.num_frames
    row["num_frames"] = n
    if n < max(2, fc.min_frames) or n / info.fps < fc.min_duration_s:
        return PreparedVideo({**row, "status": "filtered:too-short"})

    # Probes: pairs of frames one scoring step apart. Short videos: every scoring frame pairs
    # with the next. Long ones: at most max_score_frames / 2 probes spread over the video, so
    # the decoder seeks past everything between them.
    step = min(max(1, round(info.fps / dc.score_fps)), n - 1)
    starts = range(0, n - step, max(step, math.ceil(2 * n / dc.max_score_frames)))
    score_idx = sorted({i for t in starts for i in (t, t + step)})
    probes = {k for k in range(len(score_idx) - 1) if score_idx[k + 1] - score_idx[k] == step}
    scale = dc.score_size / min(w, h)
    score_size = (max(16, round(w * scale)), max(16, round(h * scale)))
    pair_rng, crop_rng = sampling.rng_for(seed, "pairs"), sampling.rng_for(seed, "crops")
    out = (cfg.output.resolution,) * 2

    def plan_clips(pairs):
        return {p: (sampling.sample_crop(w, h, cfg.sample.crop_scale, crop_rng),
                    sampling.clip_indices(*p, cfg.track.num_frames)) for p in pairs}

    def decode(score, clips):
        """One pass: scoring thumbnails and each clip's stored crops, frame by frame."""
        thumbs, crops = {}, {p: {} for p in clips}
        wanted = set(score).union(*(idx for _, idx in clips.values()))
        for i, frame in reader.read(wanted):
            if i in score:
                thumbs[i] = cv2.resize(frame, score_size, interpolation=cv2.INTER_AREA)
            for p, (box, idx) in clips.items():
                if i in idx:
                    crops[p][i] = coords.crop_resize(frame, box, out)
        return thumbs, crops

    candidates = plan_clips(sampling.sample_pairs(
        [(0, n - 1)], info.fps, cfg.sample.gap_s,
        CANDIDATES_PER_PAIR * cfg.sample.pairs_per_video, pair_rng))
    thumbs, crops = decode(set(score_idx), candidates)
    frames = [thumbs[i] for i in score_idx]
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    distances = filters.histogram_distances(frames)
    shots = filters.split_shots(distances, fc.cut_threshold, [i / info.fps for i in score_idx],
                                fc.segment_s)
    interval_s = step / info.fps
    verdicts = []
    for shot in shots:
        filters.score_shot(gray, shot, probes, interval_s)
        span_s = (score_idx[shot.end] - score_idx[shot.start]) / info.fps
        verdicts.append(filters.shot_verdict(shot, span_s, fc))
    good = [s for s, v in zip(shots, verdicts) if v is None]
    reported = good or [max(shots, key=lambda s: s.end - s.start)]
    row.update(num_shots=int((distances > fc.cut_threshold).sum()) + 1,
               cut_score=float(distances.max(initial=0.0)),
               motion_score=float(np.mean([s.object_motion for s in reported])),
               camera_score=float(np.mean([s.camera_motion for s in reported])))
    if not good:
        longest = verdicts[shots.index(reported[0])]
        return PreparedVideo({**row, "status": f"filtered:{longest}",
                              "decoded_frames": reader.decoded_frames})

    spans = [(score_idx[s.start], score_idx[s.end]) for s in good]
    inside = lambda p: any(a <= p[0] and p[1] <= b for a, b in spans)
    chosen = {p: candidates[p] for p in candidates if inside(p)}
    chosen = dict(list(chosen.items())[:cfg.sample.pairs_per_video])
    if len(chosen) < cfg.sample.pairs_per_video:
        # Cuts or rejected shots ate the candidates: draw inside the good shots and decode
        # those clips (a second pass, so only here).
        extra = [p for p in sampling.sample_pairs(spans, info.fps, cfg.sample.gap_s,
                                                  cfg.sample.pairs_per_video, pair_rng)
                 if p not in chosen][:cfg.sample.pairs_per_video - len(chosen)]
        extra_clips = plan_clips(extra)
        crops.update(decode(set(), extra_clips)[1])
        chosen.update(extra_clips)
    row["decoded_frames"] = reader.decoded_frames
    if not chosen:
        return PreparedVideo({**row, "status": "filtered:too-short"})
    clips = [PairClip(k, t0, t1, chosen[(t0, t1)][0],
                      np.stack([crops[(t0, t1)][i] for i in chosen[(t0, t1)][1]]))
             for k, (t0, t1) in enumerate(sorted(chosen))]
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
