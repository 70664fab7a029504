"""What one video goes through between planning and writing; free of Ray, tests call it directly.

prepare_video (CPU, in an isolated decoder process): open -> keyframes -> shots -> candidate
pairs -> each candidate's window decoded, judged, aligned to its first frame when the camera
moves, and cropped.
finish_video (after tracking): handle/target selection and mask -> `DragSample`s; a pair
whose mask misses what changed between its images (the tracker lost the moving thing) is
dropped.

Decoding is the cost that matters, and a codec decodes every frame from the keyframe before
the one asked for: scoring a video by frames spread over it decodes nearly all of it. So
prepare_video decodes only what the pairs need. The keyframe index (nothing decoded) splits
the video into shots: encoders start a group of pictures at every cut they detect. Candidate
pairs are drawn inside the shots, and each candidate's window (the `track.num_frames` frames
from t0 to t1, decoded anyway for its crops) is judged on its own whole frames: a cut inside
it (which a fixed-interval encoder does not mark), camera motion, no object motion. A
window that passes is judged again inside its crop: where the camera held still (its path on
the thumbnails moves the crop less than ALIGN_MIN_PX), on the thumbnails; elsewhere the window
is aligned to its first frame's background (the pair then teaches the objects' motion) and
judged on the aligned frames. The
candidates' windows are decoded in one forward pass, each judged as soon as it is complete,
only until enough pass (so a video's pairs lean to its earlier candidates; the candidates
themselves are drawn uniformly). Every candidate is judged before a video is filtered: giving
up after the first few failed windows would filter footage whose camera moves only at first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline import filters, sampling
from pipeline.decode import HeaderMismatch, Video, VideoTooLarge
from pipeline.points import change_covered, select_drag
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
    target_transform: np.ndarray    # 2x3: frame t1's upright pixels -> frame t0's (identity
                                    # unless the window was aligned to a moving camera)


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
    try:
        with Video(path, backend=cfg.decode.backend) as reader:
            return _prepare(reader, uri, video_id, cfg, seed)
    except HeaderMismatch:
        # the header misled the plan (size or rotation): plan again from a decoded frame
        with Video(path, backend=cfg.decode.backend, header=False) as reader:
            return _prepare(reader, uri, video_id, cfg, seed)


def _prepare(reader: Video, uri: str, video_id: str, cfg, seed: int) -> PreparedVideo:
    fc, dc = cfg.filter, cfg.decode
    info = reader.info
    w, h = info.upright_size
    row = video_row(video_id, uri, seed, duration=info.duration, fps=info.fps,
                    num_frames=info.num_frames, video_width=w, video_height=h,
                    rotation=info.rotation)
    if w * h > fc.max_pixels:
        raise VideoTooLarge(f"{w}x{h} exceeds filter.max_pixels={fc.max_pixels}")
    if min(w, h) < fc.min_size:
        return PreparedVideo({**row, "status": "filtered:too-small"})

    n = reader.num_frames
    row["num_frames"] = n
    if n < max(2, fc.min_frames) or n / info.fps < fc.min_duration_s:
        return PreparedVideo({**row, "status": "filtered:too-short"})

    shots = filters.shots(reader.keyframes(), n)
    usable = [s for s in shots if (s[1] - s[0]) / info.fps >= fc.min_shot_s]
    row["num_shots"] = len(shots)
    if not usable:
        return PreparedVideo({**row, "status": "filtered:too-short"})

    pair_rng, crop_rng = sampling.rng_for(seed, "pairs"), sampling.rng_for(seed, "crops")
    wanted_pairs = cfg.sample.pairs_per_video
    candidates = sampling.sample_pairs(usable, info.fps, cfg.sample.gap_s,
                                       CANDIDATES_PER_PAIR * wanted_pairs, pair_rng)
    plans = {p: (sampling.sample_crop(w, h, cfg.sample.crop_scale, crop_rng),
                 sampling.clip_indices(*p, cfg.track.num_frames)) for p in candidates}
    res = cfg.output.resolution
    out = (res, res)
    diagonal = float(np.hypot(w, h))
    # Windows are judged on whole frames at the scoring size: in a crop, a large moving
    # object can outweigh the background and pass for the camera.
    thumb_scale = dc.score_size / min(w, h)
    score_size = (max(16, round(w * thumb_scale)), max(16, round(h * thumb_scale)))
    probe_interval_s = 1.0 / dc.score_fps
    chosen: dict = {}
    judged: list[tuple[str | None, filters.Motion | None]] = []   # in the order judged
    cuts_inside: list[tuple[int, int]] = []
    cut_score = 0.0

    def judge(p) -> str | None:
        """The candidate's verdict from its window's thumbnails: "cut", a filter reason, or
        None (it becomes a pair: its crops are made, aligned if its camera moves)."""
        nonlocal cut_score
        idx = sorted(set(plans[p][1]))
        distances = filters.histogram_distances([thumbs[i] for i in idx])
        cut_score = max(cut_score, float(distances.max(initial=0.0)))
        jumps = [(a, b) for a, b, d in zip(idx, idx[1:], distances) if d > fc.cut_threshold]
        if jumps:
            cuts_inside.extend(c for c in jumps
                               if not any(c[0] < b and a < c[1] for a, b in cuts_inside))
            judged.append(("cut", None))
            return "cut"
        times = [i / info.fps for i in idx]
        gray = [cv2.cvtColor(thumbs[i], cv2.COLOR_RGB2GRAY) for i in idx]
        motion = filters.window_motion(gray, times, filters.probe_pairs(times, probe_interval_s),
                                       float(np.hypot(*score_size)))
        verdict = filters.verdict(motion, fc)
        if verdict is None:
            verdict = crop(p, idx, motion, gray, times[-1] - times[0])
        judged.append((verdict, motion))
        return verdict

    def crop(p, idx: list[int], motion: filters.Motion, gray: list[np.ndarray],
             duration: float) -> str | None:
        """Makes a passing candidate's crops, aligned to its first frame when the camera
        moved them by more than ALIGN_MIN_PX; a filter reason when nothing moves inside the
        crop (on the thumbnails where the camera held still, else on the aligned frames),
        when a moving camera cannot be followed, or when it took the crop out of view."""
        box = plans[p][0]
        transforms = dict.fromkeys(idx)
        moving_camera = motion.camera > fc.camera_threshold
        if fc.align_camera:
            # the objects' own motion, measured again inside the crop, where the pair is:
            # what moved may all have been the camera, or outside the crop, or too little
            # for a drag to be tracked. A camera the thumbnails saw hold still (its path
            # moves the crop's corners by at most ALIGN_MIN_PX) needs no alignment, and
            # the thumbnails measure that; otherwise the window is aligned (finer, and
            # the aligned frames measure it).
            in_thumbs = None
            if not moving_camera and motion.path and crop_shift(
                    [coords.rescale_affine(coords.invert_affine(a), score_size, (w, h))
                     for a in motion.path], box) <= ALIGN_MIN_PX:
                in_thumbs = filters.region_motion(gray[0], gray[-1],
                                                  tuple(v * thumb_scale for v in box))
            if in_thumbs is not None:
                fits, residual = [], in_thumbs / thumb_scale
            else:
                fits, residual = align_window([frames[i] for i in idx], box)
                if not fits and moving_camera:
                    return "camera-motion"
            if residual / diagonal / duration < fc.static_threshold \
                    or residual * res / box[2] < cfg.points.min_motion_px:
                return "camera-motion" if moving_camera else "static"
            if fits and crop_shift(fits, box) > ALIGN_MIN_PX:
                transforms = dict(zip(idx, fits))
        try:
            crops[p] = {i: (coords.crop_resize(frames[i], box, out, transforms[i]),
                            transforms[i]) for i in idx}
        except ValueError:   # aligned, the crop box needs pixels out of view
            return "camera-motion"
        return None

    # One forward pass over the candidates' windows, each judged as soon as its last frame
    # is decoded (overlapping windows share frames), stopping once enough have passed. Only
    # the frames of windows not yet judged are held.
    ends = {}
    for p in candidates:
        ends.setdefault(plans[p][1][-1], []).append(p)
    pending = set(candidates)
    thumbs, frames, crops = {}, {}, {}
    wanted_frames = {i for _, idx in plans.values() for i in idx}
    for i, frame in reader.read(wanted_frames, chunk=cfg.track.num_frames):
        thumbs[i], frames[i] = thumbnail(frame, score_size), frame
        for p in ends.get(i, []):
            if len(chosen) < wanted_pairs and judge(p) is None:
                chosen[p] = crops.pop(p)
            pending.discard(p)
        if len(chosen) == wanted_pairs:
            break
        needed = {j for p in pending for j in plans[p][1]}
        frames = {j: f for j, f in frames.items() if j in needed}

    measured = [(v, m) for v, m in judged if m is not None]
    passed = [m for v, m in measured if v is None] or [m for _, m in measured]
    row.update(num_shots=len(shots) + len(cuts_inside), cut_score=cut_score,
               decoded_frames=reader.decoded_frames,
               motion_score=float(np.mean([m.object for m in passed])) if passed else None,
               camera_score=float(np.mean([m.camera for m in passed])) if passed else None)
    if not chosen:
        reasons = [v for v, _ in measured]
        # the most common reason; among equals, the first met
        reason = max(reasons, key=reasons.count) if reasons else "too-short"
        return PreparedVideo({**row, "status": f"filtered:{reason}"})
    clips = []
    for k, (t0, t1) in enumerate(sorted(chosen)):
        box, idx = plans[(t0, t1)]
        crops_of = chosen[(t0, t1)]
        moved = crops_of[idx[-1]][1]
        clips.append(PairClip(k, t0, t1, box, np.stack([crops_of[i][0] for i in idx]),
                              coords.IDENTITY if moved is None else moved))
    return PreparedVideo(row, clips)


def thumbnail(frame: np.ndarray, size: tuple) -> np.ndarray:
    """An area-averaged downscale to `size`: by a whole factor first (OpenCV's fast area path;
    its general one costs about ten times more per frame), the rest, under 2x, bilinear. The
    up to factor - 1 pixels cut from the right and bottom edges to make the factor whole
    are nothing a judgement needs."""
    h, w = frame.shape[:2]
    k = int(min(w / size[0], h / size[1]))
    if k >= 2:
        frame = cv2.resize(frame[:h - h % k, :w - w % k], (w // k, h // k),
                           interpolation=cv2.INTER_AREA)
    return cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)


ALIGN_SIZE = 360   # short side windows are aligned at, at most (finer costs more, gains little)
ALIGN_MIN_PX = 0.5  # a camera moving a crop's corners less than this (source pixels) is still


def align_window(window: list[np.ndarray], box: tuple) -> tuple[list[np.ndarray], float]:
    """filters.align_to_first on a window's upright frames, fitted on gray frames of at most
    ALIGN_SIZE short side: (per-frame transforms in the frames' own pixels, or [] when the
    background cannot be followed; the object motion left inside the crop box over the window,
    in the frames' pixels, infinite when unknown)."""
    h, w = window[0].shape[:2]
    scale = min(1.0, ALIGN_SIZE / min(w, h))
    size = (max(16, round(w * scale)), max(16, round(h * scale)))
    gray = [cv2.cvtColor(cv2.resize(f, size, interpolation=cv2.INTER_AREA) if scale < 1 else f,
                         cv2.COLOR_RGB2GRAY) for f in window]
    alignment = filters.align_to_first(gray, tuple(v * scale for v in box))
    if alignment is None:
        return [], float("inf")
    fits = [coords.rescale_affine(a, size, (w, h)) for a in alignment.fits]
    return fits, alignment.residual_px / scale


def crop_shift(fits: list[np.ndarray], box: tuple) -> float:
    """How far (pixels) the transforms move the crop box's corners, at most."""
    x0, y0, w, h = box
    corners = np.array([[x0, y0], [x0 + w, y0], [x0, y0 + h], [x0 + w, y0 + h]], np.float64)
    return max(float(np.abs(coords.apply_affine(corners, a) - corners).max()) for a in fits)


def finish_video(video: PreparedVideo, tracks: np.ndarray, visible: np.ndarray, cfg,
                 tracker_name: str, tracker_version: str) -> tuple[dict, list[DragSample]]:
    """tracks (P, T, N, 2) / visible (P, T, N) for the video's P pair clips -> row, samples."""
    row = dict(video.row)
    samples = []
    res = cfg.output.resolution
    rng = sampling.rng_for(row["seed"], "points")
    for clip, tr, vis in zip(video.pairs, tracks, visible):
        drag = select_drag(tr, vis, (res, res), cfg.points, cfg.track.grid_size, rng)
        if drag is None or change_covered(clip.frames[0], clip.frames[-1], drag.mask) \
                < cfg.points.min_change_covered:
            continue
        key = make_key(row["video_id"], clip.pair_index)
        x0, y0, cw, ch = clip.crop_box
        meta = dict(
            schema_version=SCHEMA_VERSION, key=key, video_id=row["video_id"],
            source_uri=row["source_uri"], pair_index=clip.pair_index, frame_t0=clip.t0,
            frame_t1=clip.t1, time_t0=clip.t0 / row["fps"], time_t1=clip.t1 / row["fps"],
            fps=row["fps"], video_width=row["video_width"], video_height=row["video_height"],
            rotation=row["rotation"], crop_x=float(x0), crop_y=float(y0), crop_w=float(cw),
            crop_h=float(ch),
            target_transform=[round(float(v), 6) for v in np.ravel(clip.target_transform)],
            width=res, height=res, num_points=len(drag.handle),
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
