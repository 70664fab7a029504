"""The display rotation of an MP4/MOV file's first video track, read from its header boxes.

FFmpeg reports the rotation only on decoded frames (PyAV exposes no stream side data), and
decoding a first frame to learn it costs as much as a tenth of what preparing a short clip
does. The header holds it: the track header's (tkhd) matrix times the movie header's (mvhd),
as FFmpeg's mov demuxer combines them (ISO/IEC 14496-12, 8.2.2 and 8.3.2). Reads are bounded
by the boxes' sizes and the file's; anything unexpected gives None and the caller decodes.
"""
from __future__ import annotations

import math
import os
import struct

_HEADER = struct.Struct(">I4s")


def _boxes(f, start: int, end: int):
    """(type, payload start, payload end) of the boxes between start and end."""
    at = start
    while at + 8 <= end:
        f.seek(at)
        size, kind = _HEADER.unpack(f.read(8))
        body = at + 8
        if size == 1:                   # a 64-bit size follows the type
            size = struct.unpack(">Q", f.read(8))[0]
            body += 8
        elif size == 0:                 # to the end of the enclosing space
            size = end - at
        if size < body - at or at + size > end:
            return
        yield kind, body, at + size
        at += size


def _matrix(f, body: int, end: int, offsets: tuple[int, int]) -> list[int] | None:
    """The 3x3 matrix of an mvhd or tkhd box (offsets: where it starts for box versions 0
    and 1), row-major, as FFmpeg stores it."""
    f.seek(body)
    version = f.read(1)[0]
    at = body + offsets[1 if version == 1 else 0]
    if at + 36 > end:
        return None
    f.seek(at)
    return list(struct.unpack(">9i", f.read(36)))


def _product(track: list[int], movie: list[int]) -> list[int]:
    """track x movie, in their fixed-point formats (16.16 but for the third column, 2.30),
    with FFmpeg's shifts."""
    shifts = (16, 16, 30)
    return [sum((track[3 * i + e] * movie[3 * e + j]) >> shifts[e] for e in range(3))
            for i in range(3) for j in range(3)]


def rotation(path: str) -> int | None:
    """The clockwise display turn in degrees (0, 90, 180 or 270; another angle as it is) of
    the first video track, or None when the file's boxes do not tell it."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            moov = next(((b, e) for kind, b, e in _boxes(f, 0, size) if kind == b"moov"), None)
            if moov is None:
                return None
            movie = [1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30]
            for kind, body, end in _boxes(f, *moov):
                if kind == b"mvhd":
                    movie = _matrix(f, body, end, (36, 48)) or movie
                elif kind == b"trak":
                    track, video = None, False
                    for inner, ib, ie in _boxes(f, body, end):
                        if inner == b"tkhd":
                            track = _matrix(f, ib, ie, (40, 52))
                        elif inner == b"mdia":
                            for part, pb, pe in _boxes(f, ib, ie):
                                if part == b"hdlr" and pe - pb >= 12:
                                    f.seek(pb + 8)
                                    video = f.read(4) == b"vide"
                    if video:
                        return None if track is None else _clockwise(_product(track, movie))
    except (OSError, struct.error, IndexError):
        return None
    return None


def _clockwise(m: list[int]) -> int | None:
    """FFmpeg's av_display_rotation_get, negated (it gives the counter-clockwise angle),
    rounded to whole degrees."""
    scale = (math.hypot(m[0] / 65536, m[3] / 65536), math.hypot(m[1] / 65536, m[4] / 65536))
    if not all(scale):
        return None
    angle = math.degrees(math.atan2(m[1] / 65536 / scale[1], m[0] / 65536 / scale[0]))
    return round(angle) % 360
