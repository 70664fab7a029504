"""pipeline.decode.Video: frames by index from one PyAV container, against decord's."""
from __future__ import annotations

import av
import decord
import numpy as np
import pytest

from pipeline import decode
from pipeline.decode import DecodeError, Video
from pipeline.synthetic import ClipSpec, make_clip

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
