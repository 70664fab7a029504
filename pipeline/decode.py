"""Probe and sparse decode: metadata first, then only the frames a stage needs.

decord gives fast random access; PyAV is the robust fallback and the source of metadata
(display rotation, stream presence). Frames come back upright (display rotation applied) and
RGB. Errors are `VideoError` subclasses whose class names become manifest statuses
(`failed:<ClassName>: <message>`).
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from schemas import coords


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
    """Frames of one video by index, upright RGB at native size; decord first, PyAV fallback.

    Frames come at native size on purpose: decord's own scaling is slower than decoding at
    full size, and callers shrink each frame as soon as it arrives (so memory stays bounded
    by `chunk` native frames, whatever the resolution).

    `decoded_frames` counts the frames the codec decodes, not only those returned: reaching a
    frame means decoding from the keyframe before it (or from the last frame read, when that
    is in the same group of pictures and not past it), which is what a read costs.
    """

    def __init__(self, path: str, info: VideoInfo, backend: str = "auto"):
        self.path, self.info, self.backend = path, info, backend
        self.decoded_frames = 0
        self._position = -1             # decord's read position, for the codec cost
        self._decord = None
        self._keyframes: list[int] | None = None
        if backend in ("auto", "decord"):
            try:
                import decord
                # decord applies the display rotation itself.
                self._decord = decord.VideoReader(path, num_threads=1)
                self.num_frames = len(self._decord)
            except Exception as e:  # decord raises its own DECORDError and RuntimeError
                if backend == "decord":
                    raise DecodeError(f"decord: {e}") from e
                self._decord = None
        if self._decord is None:
            self.num_frames = info.num_frames

    def keyframes(self) -> list[int]:
        """Indices of the keyframes, from the container's index: nothing is decoded. Encoders
        put one at every scene cut they detect, and at least every few seconds."""
        if self._keyframes is None:
            keys = None
            if self._decord is not None:
                try:
                    keys = sorted(int(i) for i in self._decord.get_key_indices())
                except Exception:  # noqa: BLE001 - no index from decord: ask the container
                    keys = None
            if keys is None:
                keys = _container_keyframes(self.path)
            self._keyframes = [k for k in keys if 0 <= k < self.num_frames] or [0]
        return self._keyframes

    def read(self, indices, chunk: int = 16) -> Iterator[tuple[int, np.ndarray]]:
        """(index, frame) for each distinct index, in increasing order."""
        wanted = sorted(set(int(i) for i in indices))
        if self._decord is not None:
            try:
                for start in range(0, len(wanted), chunk):
                    part = wanted[start:start + chunk]
                    batch = self._decord.get_batch(part).asnumpy()
                    self.decoded_frames += self._codec_cost(part)
                    yield from zip(part, batch)
                return
            except Exception as e:  # noqa: BLE001 - any decord failure: PyAV for the rest
                if self.backend == "decord":
                    raise DecodeError(f"decord: {e}") from e
                self._decord = None
                wanted = wanted[start:]
        for i, frame in self._read_pyav(wanted):
            yield i, coords.rotate_frame(frame, self.info.rotation)

    def _codec_cost(self, part: list[int]) -> int:
        """Frames decord decodes to return `part` (sorted), its read position moving along."""
        keys, cost, position = self.keyframes(), 0, self._position
        for i in part:
            key = keys[max(0, bisect.bisect_right(keys, i) - 1)]
            cost += i - position if key <= position < i else i - key + 1
            position = i
        self._position = position
        return cost

    def _read_pyav(self, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        import av

        need = set(wanted)
        found = 0
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    self.decoded_frames += 1
                    if i in need:
                        found += 1
                        yield i, frame.to_ndarray(format="rgb24")
                        if found == len(need):
                            return
        except av.error.FFmpegError as e:
            raise DecodeError(f"pyav: {e}") from e
        # The stream is shorter than its header claims, or broken midway.
        missing = sorted(need)[found:]
        raise DecodeError(f"frames {missing[:5]} not decodable (decoded {found} of {len(need)})")


def _container_keyframes(path: str) -> list[int]:
    """Display-order indices of the keyframe packets (packets sorted by timestamp)."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            packets = sorted((p.pts, p.is_keyframe) for p in container.demux(stream)
                             if p.size and p.pts is not None)
    except av.error.FFmpegError as e:
        raise DecodeError(f"pyav: {e}") from e
    return [i for i, (_, key) in enumerate(packets) if key]
