"""Sparse decode: metadata and keyframe index first, then only the frames a stage needs.

One PyAV container per video gives the metadata (size, display rotation, stream presence),
the keyframe index and the frames, each read from its keyframe with the codec skipping what
no wanted frame needs; decord is the alternative reader. Frames come back upright (display
rotation applied) and RGB. Errors are `VideoError` subclasses whose class names become
manifest statuses (`failed:<ClassName>: <message>`).
"""
from __future__ import annotations

import bisect
import itertools
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


class HeaderMismatch(VideoError):
    """The first decoded frame contradicts the size or rotation read from the header: open
    the video again with `header=False`."""


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


# `auto` reads larger files with decord: indexing one with PyAV reads all its packets, decord's
# index comes from the container's header.
INDEX_MAX_BYTES = 256 << 20


class Video:
    """One open video: its metadata, its keyframe index, and frames by index, upright RGB at
    native size. `backend`: pyav | decord | auto (PyAV for files up to INDEX_MAX_BYTES, decord
    above; either way the other reads what the first fails to). Use as a context manager,
    or `close()`.

    PyAV reads the container's packets once on opening: their timestamps place every frame,
    and their keyframe flags are the index. Size and display rotation come from the header
    where it holds them (`pipeline.mp4`, with `header`), else from decoding the first frame;
    the first frame a read decodes is checked against the header (`HeaderMismatch`). A read
    decodes from the keyframe before each run of wanted frames until the run's last packet
    is in, handing each wanted frame over as soon as it is decoded; the codec skips what no
    wanted frame refers to (`skip_frame`: a non-reference frame, about half of an x264
    stream, is only decoded when it is wanted). Where timestamps cannot place the frames
    (missing or repeated), or a seek does not land on its keyframe (seeking in MPEG-TS and
    AVI is approximate), frames are decoded in order from the start.

    Frames come at native size on purpose: callers shrink each frame as soon as it arrives
    (so memory stays bounded by a few native frames, whatever the resolution).

    `decoded_frames` counts the frames the codec decodes, not only those returned: what a
    read costs.
    """

    def __init__(self, path: str, backend: str = "auto", header: bool = True):
        self.path, self.backend = path, backend
        self.decoded_frames = 0
        self._container = None
        self._decord = None
        self._position = -1             # decord's read position, for the codec cost
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path}")
        size = os.path.getsize(path)
        if size == 0:
            raise EmptyFile("0 bytes")
        self._reader = backend if backend != "auto" else (
            "pyav" if size <= INDEX_MAX_BYTES else "decord")
        try:
            self._open_pyav(index=self._reader == "pyav", header=header)
            if self._reader == "decord":
                self._open_decord()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._decord = None

    def _open_pyav(self, index: bool, header: bool = False) -> None:
        """Metadata (from the header, with `header`, where it tells the rotation; else from
        the first frame); with `index`, every packet's timestamp and keyframe flag too."""
        import av

        from pipeline import mp4

        if self._container is not None:
            self._container.close()
        try:
            # FFmpeg's stream analysis would decode the first frame; ours does.
            self._container = container = av.open(self.path, options={"skip_frame": "all"})
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["none"]
                raise NoVideoStream(f"streams: {', '.join(kinds)}")
            self._stream = stream = container.streams.video[0]
            codec = stream.codec_context
            codec.thread_count = 1      # one CPU per decoding worker
            codec.skip_frame = "NONREF"   # the first frame shown is a keyframe
            rotation = mp4.rotation(self.path) if header and index and codec.width > 0 \
                and "mov" in container.format.name.split(",") else None
            self._check_header = rotation is not None
            size = (codec.width, codec.height)
            packets, first = [], None
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if not packet.is_discard:   # before an edit list's start: never shown
                    packets.append((packet.pts, packet.is_keyframe))
                if rotation is None and first is None:
                    first = next(iter(codec.decode(packet)), None)
                elif not index:
                    break
            if rotation is None:
                if first is None and packets:   # held back for reordering
                    first = next(iter(codec.decode(None)), None)
                if first is None:
                    raise DecodeError("no decodable frame")
                rotation, size = _clockwise(first), (first.width, first.height)
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            duration = float(stream.duration * stream.time_base) if stream.duration else (
                container.duration / 1e6 if container.duration else 0.0)
            frames = len(packets) if index else int(stream.frames) or int(round(duration * fps))
        except VideoError:
            raise
        except (av.error.FFmpegError, ValueError, OSError) as e:
            raise DecodeError(f"{type(e).__name__}: {e}") from e
        if rotation % 90:
            raise DecodeError(f"unsupported display rotation {rotation} degrees")
        self.info = VideoInfo(width=size[0], height=size[1], rotation=rotation, fps=fps,
                              num_frames=max(frames, 1), duration=duration or frames / fps)
        self.num_frames = frames
        self._pts = None
        if index:
            pts = [p for p, _ in packets]
            if None not in pts and len(set(pts)) == len(pts):
                order = sorted(range(len(pts)), key=pts.__getitem__)
                self._pts = [pts[k] for k in order]
                keys = [i for i, k in enumerate(order) if packets[k][1]]
            else:
                keys = [i for i, (_, key) in enumerate(packets) if key]
            self._keyframes = keys or [0]

    def _open_decord(self) -> None:
        try:
            import decord
            # decord applies the display rotation itself.
            self._decord = decord.VideoReader(self.path, num_threads=1)
            self.num_frames = len(self._decord)
            keys = sorted(int(i) for i in self._decord.get_key_indices())
        except Exception as e:  # decord raises its own DECORDError and RuntimeError
            raise DecodeError(f"decord: {e}") from e
        self._keyframes = [k for k in keys if 0 <= k < self.num_frames] or [0]

    def keyframes(self) -> list[int]:
        """Indices of the keyframes, from the container's index: nothing is decoded. Encoders
        put one at every scene cut they detect, and at least every few seconds."""
        return self._keyframes

    def _keyframe_before(self, i: int) -> int:
        """The keyframe a decode reaching frame i starts from."""
        keys = self._keyframes
        return keys[max(0, bisect.bisect_right(keys, i) - 1)]

    def read(self, indices, chunk: int = 16) -> Iterator[tuple[int, np.ndarray]]:
        """(index, frame) for each distinct index, in increasing order."""
        wanted = sorted(set(int(i) for i in indices))
        if wanted and not 0 <= wanted[0] <= wanted[-1] < self.num_frames:
            raise ValueError(f"frame indices {wanted[0]}..{wanted[-1]} outside the video's "
                             f"{self.num_frames} frames")
        done = -1
        try:
            for i, frame in self._read(wanted, chunk):
                done = i
                yield i, frame
        except DecodeError:
            if self.backend != "auto":
                raise
            # the other reader, for the rest
            if self._reader == "pyav":
                self._reader = "decord"
                self._open_decord()
            else:
                self._reader = "pyav"
                self._open_pyav(index=True)
            yield from self._read([i for i in wanted if i > done], chunk)

    def _read(self, wanted: list[int], chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        if self._reader == "decord":
            yield from self._read_decord(wanted, chunk)
            return
        for i, frame in (self._read_pyav(wanted) if self._pts is not None
                         else self._read_in_order(wanted)):
            yield i, coords.rotate_frame(frame, self.info.rotation)

    def _read_decord(self, wanted: list[int], chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        try:
            for start in range(0, len(wanted), chunk):
                part = wanted[start:start + chunk]
                batch = self._decord.get_batch(part).asnumpy()
                self.decoded_frames += self._codec_cost(part)
                yield from zip(part, batch)
        except Exception as e:  # noqa: BLE001 - decord raises its own DECORDError and others
            raise DecodeError(f"decord: {e}") from e

    def _codec_cost(self, part: list[int]) -> int:
        """Frames decord decodes to return `part` (sorted), its read position moving along."""
        cost, position = 0, self._position
        for i in part:
            key = self._keyframe_before(i)
            cost += i - position if key <= position < i else i - key + 1
            position = i
        self._position = position
        return cost

    def _read_pyav(self, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Each run of wanted frames sharing a keyframe: seek to it, decode until the run's
        last packet is in, drain the codec; frames in order, as soon as they are in. A seek
        that does not land on its keyframe (seeking in MPEG-TS and AVI is approximate) turns
        the video to decoding in order, from this run on."""
        import av

        container, stream = self._container, self._stream
        codec = stream.codec_context
        runs: dict[int, list[int]] = {}
        for i in wanted:
            runs.setdefault(self._keyframe_before(i), []).append(i)
        try:
            for key, run in runs.items():
                need = {self._pts[i] for i in run}
                unsent, found, ahead = set(need), {}, iter(run)
                expect = next(ahead)
                container.seek(self._pts[key], stream=stream, backward=True, any_frame=False)
                packets = container.demux(stream)
                landed = next(packets, None)
                if landed is None or not landed.size or not landed.is_keyframe \
                        or landed.pts is None or landed.pts > self._pts[key]:
                    self._pts = None
                    yield from self._read_in_order([i for i in wanted if i >= run[0]])
                    return
                packets = itertools.chain([landed], packets)
                while True:
                    packet = next(packets, None) if unsent else None
                    if packet is not None and not packet.size:  # the end of the stream
                        packet = None
                    if packet is not None:
                        codec.skip_frame = "DEFAULT" if packet.pts in unsent else "NONREF"
                        unsent.discard(packet.pts)
                    # None: the frames held back for reordering
                    for frame in codec.decode(packet):
                        self._checked(frame)
                        self.decoded_frames += 1
                        if frame.pts in need:
                            found[frame.pts] = frame
                        # in order, as soon as they are in: a reader that stops early
                        # decodes no further
                        while expect is not None and self._pts[expect] in found:
                            yield expect, found.pop(self._pts[expect]).to_ndarray(
                                format="rgb24", threads=1)
                            expect = next(ahead, None)
                    if packet is None:
                        break
                if expect is not None:
                    raise DecodeError(f"frame {expect} not decodable (from keyframe {key})")
        except av.error.FFmpegError as e:
            raise DecodeError(f"pyav: {e}") from e

    def _checked(self, frame) -> None:
        """The first decoded frame against the header's size and rotation."""
        if self._check_header:
            seen = (frame.width, frame.height, _clockwise(frame))
            if seen != (self.info.width, self.info.height, self.info.rotation):
                raise HeaderMismatch(
                    f"header: {self.info.width}x{self.info.height} turned "
                    f"{self.info.rotation}; first frame: {seen[0]}x{seen[1]} turned {seen[2]}")
            self._check_header = False

    def _read_in_order(self, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Frames numbered as the decoder puts them out, from the start."""
        import av

        need, found = set(wanted), 0
        try:
            # from the start in a container of its own: streams like these may not seek
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.codec_context.thread_count = 1
                for i, frame in enumerate(container.decode(stream)):
                    self._checked(frame)
                    self.decoded_frames += 1
                    if i in need:
                        found += 1
                        yield i, frame.to_ndarray(format="rgb24", threads=1)
                        if found == len(need):
                            return
        except av.error.FFmpegError as e:
            raise DecodeError(f"pyav: {e}") from e
        # The stream is shorter than its header claims, or broken midway.
        missing = sorted(need)[found:]
        raise DecodeError(f"frames {missing[:5]} not decodable (decoded {found} of {len(need)})")


def _clockwise(frame) -> int:
    """The frame's display turn, clockwise degrees (PyAV reports the display matrix's angle
    counter-clockwise)."""
    return int(round(-float(getattr(frame, "rotation", 0) or 0))) % 360
