"""facebank.engine.mkv: Kinesis Video GetMedia payloads (MKV chunks with the fragment tags) split
into fragments and decoded lazily. The payloads are real H.264 made by tests/kvs_fake.py from a
clip of ../shared/videos, read through a stream that hands out a few bytes at a time (as a socket
does)."""

from __future__ import annotations

import io

import pytest
from kvs_fake import BASE_PRODUCER_TIME, SERVER_DELAY_S, make_fragments, tags
from support import SHARED

from facebank.engine.mkv import KinesisVideoMediaError, MkvError, read_fragments

CLIP = SHARED / "videos" / "intel_asl-book.mp4"  # 640x480, 30 fps, 3.6 s


@pytest.fixture(scope="module")
def fragments():
    if not CLIP.is_file():
        pytest.skip(f"{CLIP} not found (set FACEBANK_SHARED to the shared/ folder)")
    return make_fragments(CLIP, 1.0)


class Trickle(io.RawIOBase):
    """An unseekable stream returning at most ``step`` bytes per read."""

    def __init__(self, data: bytes, step: int = 997):
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.step if n < 0 else min(n, self.step)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


@pytest.mark.parametrize("unknown_cluster_size", [False, True])
def test_fragments_keep_their_numbers_timestamps_and_every_frame(fragments, unknown_cluster_size):
    payload = b"".join(f.chunk(1000 * i, unknown_cluster_size=unknown_cluster_size) for i, f in enumerate(fragments))
    read = list(read_fragments(Trickle(payload)))
    assert [f.number for f in read] == [f.number for f in fragments]
    assert len(fragments) >= 3  # a key frame a second: several fragments
    for got, sent in zip(read, fragments, strict=True):
        assert got.producer_timestamp == pytest.approx(sent.producer_timestamp, abs=1e-3)
        assert got.server_timestamp == pytest.approx(sent.producer_timestamp + SERVER_DELAY_S, abs=1e-3)
        frames = list(got.frames)
        assert len(frames) == sent.frames
        offsets = [t for t, _ in frames]
        assert offsets[0] == 0.0 and offsets == sorted(offsets) and offsets[-1] < 1.0
        assert frames[0][1].shape == (480, 640, 3) and frames[0][1].dtype.name == "uint8"
        assert frames[0][1].std() > 5  # a picture, not a blank frame
    assert read[1].producer_timestamp - read[0].producer_timestamp == pytest.approx(1.0, abs=0.05)
    assert read[0].producer_timestamp == pytest.approx(BASE_PRODUCER_TIME)


def test_fragments_are_yielded_before_the_rest_of_the_payload_arrives(fragments):
    """A live payload: the first fragment is available while the stream has sent nothing more."""
    first = fragments[0].chunk(0)

    def payload():
        yield first
        raise AssertionError("read past the first fragment before yielding it")

    chunks = payload()

    class Live(io.RawIOBase):
        buf = b""

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            if not self.buf:
                self.buf = next(chunks)
            out, self.buf = self.buf[:n], self.buf[n:]
            return out

    it = read_fragments(Live())
    assert next(it).number == fragments[0].number


def test_an_error_in_the_payload_is_raised_with_its_code(fragments):
    error = tags({"AWS_KINESISVIDEO_ERROR_CODE": "STREAM_NOT_ACTIVE", "AWS_KINESISVIDEO_ERROR_ID": "4008"})
    it = read_fragments(io.BytesIO(fragments[0].chunk(0) + error))
    assert next(it).number == fragments[0].number
    with pytest.raises(KinesisVideoMediaError) as info:
        next(it)
    assert info.value.code == "STREAM_NOT_ACTIVE" and info.value.error_id == "4008" and not info.value.reconnect
    assert "STREAM_NOT_ACTIVE" in str(info.value) and fragments[0].number in str(info.value)
    limit = tags(
        {"AWS_KINESISVIDEO_ERROR_CODE": "MAX_CONNECTION_DURATION_REACHED", "AWS_KINESISVIDEO_ERROR_ID": "4003"}
    )
    with pytest.raises(KinesisVideoMediaError) as info:
        list(read_fragments(io.BytesIO(limit)))
    assert info.value.reconnect


def test_bad_media_is_an_error_not_a_hang(fragments):
    whole = fragments[0].chunk(0)
    with pytest.raises(MkvError, match="ended in the middle"):
        list(read_fragments(io.BytesIO(whole[: len(whole) // 2])))
    with pytest.raises(MkvError, match="not MKV"):
        list(read_fragments(io.BytesIO(b"\x00" * 64)))
    unnumbered = whole.replace(b"AWS_KINESISVIDEO_FRAGMENT_NUMBER", b"AWS_KINESISVIDEO_FRAGMENT_NUMBEX")
    with pytest.raises(MkvError, match="FRAGMENT_NUMBER"):
        list(read_fragments(io.BytesIO(unnumbered)))
    huge = b"\x1a\x45\xdf\xa3" + b"\x01" + (1 << 40).to_bytes(7, "big")  # an EBML header of a terabyte
    with pytest.raises(MkvError, match="at most"):
        list(read_fragments(io.BytesIO(huge)))
    assert list(read_fragments(io.BytesIO(b""))) == []


def test_a_fragment_that_is_not_video_fails_when_decoded(fragments):
    f = fragments[0]
    garbled = f.cluster[:40] + bytes(len(f.cluster) - 40)  # the blocks' bytes zeroed: not H.264
    chunk = f.chunk(0).replace(f.cluster, garbled)
    (fragment,) = read_fragments(io.BytesIO(chunk))
    try:
        frames = list(fragment.frames)
    except MkvError:
        return
    assert frames == []  # FFmpeg may also drop every undecodable frame
