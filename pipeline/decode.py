"""Probe and sparse decode: metadata first, then only the frames a stage needs.

decord gives fast random access; PyAV is the robust fallback and the source of metadata
(display rotation, stream presence). Frames come back upright (display rotation applied) and
RGB. Errors are `VideoError` subclasses whose class names become manifest statuses
(`failed:<ClassName>: <message>`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pipeline import coords


class VideoError(Exception):
    """Base of the per-input errors that become a `failed:` manifest row."""


class EmptyFile(VideoError):
    pass


class DecodeError(VideoError):
    pass


class NoVideoStream(VideoError):
    pass


class VideoTooLarge(VideoError):
    pass


@dataclass(frozen=True)
class VideoInfo:
    width: int          # decoded (stream) size
    height: int
    rotation: int       # clockwise turn for display: 0, 90, 180, 270
    fps: float
    num_frames: int
    duration: float     # seconds

    @property
    def upright_size(self) -> tuple[int, int]:
        return coords.upright_size(self.width, self.height, self.rotation)


def probe(path: str) -> VideoInfo:
    """Metadata of the first video stream, decoding at most its first frame."""
    import av

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.getsize(path) == 0:
        raise EmptyFile("0 bytes")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["none"]
                raise NoVideoStream(f"streams: {', '.join(kinds)}")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise DecodeError("no decodable frame")
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            duration = float(stream.duration * stream.time_base) if stream.duration else (
                container.duration / 1e6 if container.duration else 0.0)
            num_frames = int(stream.frames) or int(round(duration * fps))
            # PyAV reports the display matrix angle counter-clockwise; we store the clockwise turn.
            rotation = int(round(-float(getattr(first, "rotation", 0) or 0))) % 360
            if rotation % 90:
                raise DecodeError(f"unsupported display rotation {rotation} degrees")
            return VideoInfo(width=first.width, height=first.height, rotation=rotation, fps=fps,
                             num_frames=max(num_frames, 1), duration=duration or num_frames / fps)
    except VideoError:
        raise
    except (av.error.FFmpegError, StopIteration, ValueError, OSError) as e:
        raise DecodeError(f"{type(e).__name__}: {e}") from e


class FrameReader:
    """Random access to frames of one video at a given decode size, decord first.

    `size` is the upright (w, h) to decode at (None = native). Indices must be < num_frames.
    """

    def __init__(self, path: str, info: VideoInfo, size: tuple[int, int] | None = None,
                 backend: str = "auto"):
        self.path, self.info, self.backend = path, info, backend
        self.size = size or info.upright_size
        self.decoded_frames = 0
        self._decord = None
        if backend in ("auto", "decord"):
            try:
                import decord
                # decord applies the display rotation itself and takes the upright size.
                self._decord = decord.VideoReader(path, width=self.size[0], height=self.size[1],
                                                  num_threads=1)
                self.num_frames = len(self._decord)
            except Exception as e:  # decord raises its own DECORDError and RuntimeError
                if backend == "decord":
                    raise DecodeError(f"decord: {e}") from e
                self._decord = None
        if self._decord is None:
            self.num_frames = info.num_frames

    def get(self, indices) -> list[np.ndarray]:
        """Upright RGB frames at the given indices (any order, repeats allowed)."""
        wanted = sorted(set(int(i) for i in indices))
        if not wanted:
            return []
        if self._decord is not None:
            try:
                batch = self._decord.get_batch(wanted).asnumpy()
                frames = dict(zip(wanted, batch))
                self.decoded_frames += len(wanted)
                return [frames[int(i)] for i in indices]
            except Exception as e:
                if self.backend == "decord":
                    raise DecodeError(f"decord: {e}") from e
                self._decord = None  # fall back to PyAV for this and later reads
        frames = self._get_pyav(wanted)
        self.decoded_frames += len(wanted)
        return [coords.rotate_frame(frames[int(i)], self.info.rotation) for i in indices]

    def _get_pyav(self, wanted: list[int]) -> dict[int, np.ndarray]:
        import av

        need, out = set(wanted), {}
        # PyAV decodes in stream orientation: swap the size for 90/270 and rotate after.
        w, h = self.size
        stream_w, stream_h = (h, w) if self.info.rotation % 180 == 90 else (w, h)
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    if i in need:
                        out[i] = frame.to_ndarray(format="rgb24", width=stream_w,
                                                  height=stream_h)
                        if len(out) == len(need):
                            break
        except av.error.FFmpegError as e:
            if not out:
                raise DecodeError(f"pyav: {e}") from e
        missing = need - set(out)
        if missing:
            # The stream is shorter than its header claims, or broken midway.
            raise DecodeError(f"frames {sorted(missing)[:5]} not decodable "
                              f"(decoded {len(out)} of {len(need)})")
        return out
