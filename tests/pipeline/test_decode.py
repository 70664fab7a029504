"""pipeline.decode.Video: frames by index from one PyAV container, against decord's;
pipeline.mp4: the display rotation from the header."""
from __future__ import annotations

import math
import struct

import av
import decord
import numpy as np
import pytest

from pipeline import decode, mp4
from pipeline.config import PipelineConfig
from pipeline.decode import DecodeError, HeaderMismatch, Video
from pipeline.synthetic import ClipSpec, make_clip
from pipeline.video import prepare_video

GOP = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """60 frames of a moving object, keyframes every 12 frames, x264's B-frames (medium)."""
    path = str(tmp_path_factory.mktemp("decode") / "clip.mp4")
    make_clip(ClipSpec(name="clip", kind="translate", width=160, height=120, num_frames=60,
                       seed=3, gop=GOP), path)
    return path


def stream_facts(path):
    """(packet pts in decode order, the set of pts of reference frames): a frame is a
    reference frame when it survives decoding the whole stream with skip_frame=NONREF."""
    with av.open(path) as c:
        stream = c.streams.video[0]
        order = [p.pts for p in c.demux(stream) if p.size]
    with av.open(path) as c:
        stream = c.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        refs = {f.pts for f in c.decode(stream)}
    return order, refs


def test_frames_match_decord_bit_for_bit(clip):
    wanted = [3, 5, 11, 12, 30, 31, 47, 59]
    vr = decord.VideoReader(clip, num_threads=1)
    with Video(clip, backend="pyav") as video:
        assert video.num_frames == len(vr) == 60
        assert video.keyframes() == sorted(int(i) for i in vr.get_key_indices()) \
            == list(range(0, 60, GOP))
        got = dict(video.read(reversed(wanted)))   # any order in, increasing order out
    assert list(got) == wanted
    expected = vr.get_batch(wanted).asnumpy()
    for i, frame in zip(wanted, expected):
        assert got[i].shape == (120, 160, 3) and got[i].dtype == np.uint8
        np.testing.assert_array_equal(got[i], frame)


def test_codec_skips_frames_no_wanted_frame_needs(clip):
    """From each run's keyframe, the codec decodes the reference frames among the packets
    sent (up to the run's last wanted packet) and the wanted frames; decord decodes every
    frame from the keyframe to the last wanted one."""
    wanted = [10, 11, 20, 35]           # runs: key 0 -> 10, 11; key 12 -> 20; key 24 -> 35
    order, refs = stream_facts(clip)
    assert 0 < len(refs) < 50           # the clip has non-reference frames to skip
    pts = sorted(order)
    expected = 0
    runs: dict[int, list[int]] = {}
    for i in wanted:
        runs.setdefault(i // GOP * GOP, []).append(i)   # keyframes every GOP frames
    for key, run in runs.items():
        start = order.index(pts[key])
        last = max(order.index(pts[i]) for i in run)
        sent = order[start:last + 1]
        expected += sum(1 for p in sent if p in refs or p in {pts[i] for i in run})
    with Video(clip, backend="pyav") as video:
        frames = dict(video.read(wanted))
        assert video.decoded_frames == expected
    with Video(clip, backend="decord") as video:
        assert {i: f.tobytes() for i, f in video.read(wanted)} == \
            {i: f.tobytes() for i, f in frames.items()}
        assert video.decoded_frames == (11 + 1) + (20 - 12 + 1) + (35 - 24 + 1)
    assert expected < video.decoded_frames


def test_a_reader_that_stops_early_decodes_no_further(clip):
    """Frames of one run come out as soon as they are decoded: taking the first of frames 1
    and 10 (one keyframe's run) does not decode up to frame 10."""
    with Video(clip, backend="pyav") as video:
        assert [i for i, _ in video.read([1, 10])] == [1, 10]
        both = video.decoded_frames
    with Video(clip, backend="pyav") as video:
        assert next(video.read([1, 10]))[0] == 1
        first = video.decoded_frames
    assert first <= 5 < both


def test_frames_without_timestamps_are_read_in_order(tmp_path):
    """A raw H.264 stream has no timestamps: frames are numbered as they come out."""
    path = str(tmp_path / "raw.h264")
    with av.open(path, "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.thread_count = 1
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i, np.uint8),
                                               format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with Video(path, backend="pyav") as video:
        assert video.num_frames == 30
        got = dict(video.read([17, 3, 29]))
    assert list(got) == [3, 17, 29]
    assert [round(float(got[i].mean()) / 8) for i in got] == [3, 17, 29]


@pytest.mark.parametrize("name, container, codec, options", [
    ("clip.ts", "mpegts", "libx264", {"g": "10"}),       # seeks land past the keyframe
    ("clip.mkv", "matroska", "libx264", {"g": "10"}),
    ("clip.webm", "webm", "libvpx-vp9", {"g": "10"}),
    ("clip.mp4", "mp4", "libx265", {"x265-params": "keyint=10:log-level=none"}),
    ("clip.avi", "avi", "mpeg4", {"g": "10", "bf": "2"}),  # no timestamps to place frames
])
def test_other_containers_give_what_a_decode_from_the_start_gives(tmp_path, name, container,
                                                                  codec, options):
    path = str(tmp_path / name)
    with av.open(path, "w", format=container) as out:
        stream = out.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = options
        for i in range(40):
            image = np.full((64, 96, 3), 6 * i, np.uint8)
            image[10:30, 2 * i:2 * i + 20] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(path) as c:
        every = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    wanted = [3, 11, 12, 25, 39]
    with Video(path, backend="pyav") as video:
        assert video.num_frames == len(every) == 40
        got = dict(video.read(wanted))
    assert list(got) == wanted
    for i in wanted:
        np.testing.assert_array_equal(got[i], every[i])


@pytest.mark.parametrize("size_limit, failing", [(1 << 30, "_read_pyav"), (1, "_read_decord")])
def test_auto_reads_with_the_other_reader_what_one_fails_to_read(clip, monkeypatch, size_limit,
                                                                 failing):
    """auto: PyAV up to INDEX_MAX_BYTES, decord above; what one fails to read, the other
    reads."""
    wanted = [5, 20, 40]

    def fails_after_one_frame(self, frames, *_):
        yield frames[0], np.zeros((120, 160, 3), np.uint8)
        raise DecodeError("broken after the first frame")

    with Video(clip, backend="decord") as video:
        truth = dict(video.read(wanted))
    monkeypatch.setattr(decode, "INDEX_MAX_BYTES", size_limit)
    monkeypatch.setattr(Video, failing, fails_after_one_frame)
    with Video(clip, backend="auto") as video:
        got = dict(video.read(wanted))
    assert list(got) == wanted
    assert not got[5].any()             # what the first reader gave before failing stays
    for i in (20, 40):
        np.testing.assert_array_equal(got[i], truth[i])
    with Video(clip, backend=failing.removeprefix("_read_")) as video, \
            pytest.raises(DecodeError, match="broken after the first frame"):
        dict(video.read(wanted))


def test_indices_outside_the_video_are_refused(clip):
    with Video(clip) as video:
        for bad in ([0, 60], [-1, 3]):
            with pytest.raises(ValueError, match="outside the video's 60 frames"):
                next(video.read(bad))


# --- size and rotation from the header ------------------------------------------------------


def box(kind: bytes, payload: bytes, large: bool = False) -> bytes:
    if large:
        return struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def turn_matrix(clockwise: int) -> bytes:
    """A display matrix in the header's fixed point (16.16, 2.30 for the last column) that
    turns the picture `clockwise` degrees, as FFmpeg writes it."""
    c, s = round(math.cos(math.radians(clockwise))), round(math.sin(math.radians(clockwise)))
    return struct.pack(">9i", c << 16, s << 16, 0, -s << 16, c << 16, 0, 0, 0, 1 << 30)


def movie(tracks: list[tuple[bytes, int]], movie_turn: int = 0, version: int = 0) -> bytes:
    """ftyp, a 64-bit-size mdat, then moov: mvhd and one trak per (handler, turn)."""
    times = 8 if version else 4
    mvhd = bytes([version, 0, 0, 0]) + bytes(3 * times + 4 + 4 + 2 + 2 + 8) \
        + turn_matrix(movie_turn) + bytes(24 + 4)
    traks = b""
    for handler, turn in tracks:
        tkhd = bytes([version, 0, 0, 1]) + bytes(2 * times + 4 + 4 + times + 8 + 8) \
            + turn_matrix(turn) + struct.pack(">II", 160 << 16, 120 << 16)
        hdlr = bytes(4) + bytes(4) + handler + bytes(12) + b"\0"
        traks += box(b"trak", box(b"tkhd", tkhd) + box(b"mdia", box(b"hdlr", hdlr)))
    return box(b"ftyp", b"isom" + bytes(4)) + box(b"mdat", bytes(100), large=True) \
        + box(b"moov", box(b"mvhd", mvhd) + traks)


@pytest.mark.parametrize("tracks, movie_turn, version, expected", [
    ([(b"vide", 90)], 0, 0, 90),
    ([(b"soun", 0), (b"vide", 270)], 0, 0, 270),   # the first video track's
    ([(b"vide", 180), (b"vide", 90)], 0, 1, 180),
    ([(b"vide", 90)], 90, 0, 180),                  # the movie's matrix composes
    ([(b"vide", 0)], 0, 0, 0),
    ([(b"soun", 90)], 0, 0, None),                  # no video track
])
def test_rotation_from_hand_made_headers(tmp_path, tracks, movie_turn, version, expected):
    path = tmp_path / "movie.mp4"
    path.write_bytes(movie(tracks, movie_turn, version))
    assert mp4.rotation(str(path)) == expected


def test_broken_headers_tell_no_rotation(tmp_path):
    whole = movie([(b"vide", 90)])
    cases = {
        "no_moov": whole[:whole.index(b"moov") - 4],
        "cut_inside_moov": whole[:-20],
        "box_past_the_end": whole[:8] + struct.pack(">I4s", 10 ** 6, b"mdat"),
        "text": b"This is not a video.\n" * 20,
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert mp4.rotation(str(path)) is None, name


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_header_metadata_is_what_a_decoded_frame_says(tmp_path, rotation):
    path = str(tmp_path / f"r{rotation}.mp4")
    make_clip(ClipSpec(name="r", kind="translate", width=96, height=64, num_frames=12,
                       rotation=rotation), path)
    assert mp4.rotation(path) == rotation
    with Video(path) as from_header, Video(path, header=False) as from_frame:
        assert from_header.info == from_frame.info
        # the clip is encoded turned back, so that it shows 96x64
        assert from_header.info.upright_size == (96, 64)
        assert (from_header.info.width, from_header.info.height) == \
            ((96, 64) if rotation % 180 == 0 else (64, 96))
        assert [f.tobytes() for _, f in from_header.read([0, 11])] == \
            [f.tobytes() for _, f in from_frame.read([0, 11])]


def test_a_header_the_frames_contradict_is_planned_again(clip, monkeypatch):
    """A header whose rotation FFmpeg does not apply: reading stops at the first decoded
    frame, and prepare_video plans the video again from a decoded frame."""
    cfg = PipelineConfig()
    expected = prepare_video(clip, clip, "v", cfg, seed=5)
    monkeypatch.setattr(mp4, "rotation", lambda path: 90)
    with Video(clip) as video:
        assert video.info.rotation == 90
        with pytest.raises(HeaderMismatch, match="header: 160x120 turned 90; first frame: "
                                                 "160x120 turned 0"):
            next(video.read([3]))
    got = prepare_video(clip, clip, "v", cfg, seed=5)
    assert got.row == expected.row and got.row["rotation"] == 0
    assert len(got.pairs) == len(expected.pairs) > 0
    for a, b in zip(got.pairs, expected.pairs):
        np.testing.assert_array_equal(a.frames, b.frames)
