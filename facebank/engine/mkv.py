"""Kinesis Video GetMedia payloads: a sequence of MKV fragments, split and decoded lazily.

GetMedia returns one MKV stream per call, made of chunks: each chunk is a whole MKV file (EBML
header, a Segment, usually of unknown size, with Info, Tracks, a Tags element and one Cluster)
followed by Tags of its own. Kinesis Video adds these tags (its GetMedia reference):
``AWS_KINESISVIDEO_FRAGMENT_NUMBER``, ``AWS_KINESISVIDEO_SERVER_TIMESTAMP`` and
``AWS_KINESISVIDEO_PRODUCER_TIMESTAMP`` (seconds since the epoch, with milliseconds, as text),
``AWS_KINESISVIDEO_MILLIS_BEHIND_NOW`` and ``AWS_KINESISVIDEO_CONTINUATION_TOKEN``, and on an error
``AWS_KINESISVIDEO_ERROR_CODE`` (a name, e.g. STREAM_NOT_ACTIVE) / ``AWS_KINESISVIDEO_ERROR_ID``
(its number, e.g. 4008) (GetMediaForFragmentList spells them ``..._EXCEPTION_ERROR_CODE`` /
``..._EXCEPTION_MESSAGE``; both are read).

The splitting needs only element ids and sizes, so it is a small reader here rather than a
library: the PyPI EBML parsers (ebmlite, python-ebml) read seekable files into a document tree,
and a live GetMedia body is an unseekable socket whose Segments and Clusters may have unknown
sizes. Each fragment's bytes (its header elements plus its Cluster; at most
``MAX_FRAGMENT_BYTES``, Kinesis Video's own fragment limit) are held once; its frames decode with
PyAV only when the caller iterates them, so memory is one fragment plus one decoded frame.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from facebank.engine.stream_media import Fragment, SourceError

if TYPE_CHECKING:
    import numpy as np

# Kinesis Video's quota: a fragment is at most 50 MB (and 20 s); a chunk larger than this is refused.
MAX_FRAGMENT_BYTES = 50 * 1024 * 1024
# Frames larger than 4K UHD are refused (as stored video does): one decoded RGB frame <= 24 MB.
MAX_FRAME_LONG_SIDE = 3840
MAX_FRAME_SHORT_SIDE = 2160

EBML_HEADER = 0x1A45DFA3
SEGMENT = 0x18538067
SEEK_HEAD = 0x114D9B74
INFO = 0x1549A966
TRACKS = 0x1654AE6B
TAGS = 0x1254C367
TAG = 0x7373
SIMPLE_TAG = 0x67C8
TAG_NAME = 0x45A3
TAG_STRING = 0x4487
CLUSTER = 0x1F43B675
CUES = 0x1C53BB6B
# What a Cluster may hold (Timecode, SilentTracks, Position, PrevSize, SimpleBlock, BlockGroup,
# EncryptedBlock, and the global Void / CRC-32): any other id ends a Cluster of unknown size.
CLUSTER_CHILDREN = frozenset({0xE7, 0x5854, 0xA7, 0xAB, 0xA3, 0xA0, 0xAF, 0xEC, 0xBF})
# Segment children kept in front of every Cluster, so each fragment is a whole MKV file for PyAV.
HEADER_CHILDREN = frozenset({INFO, TRACKS})

TAG_PREFIX = "AWS_KINESISVIDEO_"
FRAGMENT_NUMBER = "AWS_KINESISVIDEO_FRAGMENT_NUMBER"
SERVER_TIMESTAMPS = ("AWS_KINESISVIDEO_SERVER_TIMESTAMP", "AWS_KINESISVIDEO_SERVER_SIDE_TIMESTAMP")
PRODUCER_TIMESTAMPS = ("AWS_KINESISVIDEO_PRODUCER_TIMESTAMP", "AWS_KINESISVIDEO_PRODUCER_SIDE_TIMESTAMP")
ERROR_CODES = ("AWS_KINESISVIDEO_ERROR_CODE", "AWS_KINESISVIDEO_EXCEPTION_ERROR_CODE")  # e.g. STREAM_NOT_ACTIVE
ERROR_ID = "AWS_KINESISVIDEO_ERROR_ID"  # e.g. 4008
# GetMedia's errors that only end this connection (the reader reconnects after its last fragment):
# MAX_CONNECTION_DURATION_REACHED and INTERNAL_ERROR.
RECONNECT_ERRORS = frozenset({"4003", "5000", "MAX_CONNECTION_DURATION_REACHED", "INTERNAL_ERROR"})
ERROR_MESSAGES = ("AWS_KINESISVIDEO_ERROR_MESSAGE", "AWS_KINESISVIDEO_EXCEPTION_MESSAGE")


class MkvError(SourceError):
    """The media cannot be read; the message is user-facing (the processor's StatusMessage)."""


class KinesisVideoMediaError(MkvError):
    """Kinesis Video ended the GetMedia payload with an error (its ERROR_CODE / ERROR_ID tags)."""

    def __init__(self, code: str, error_id: str | None, message: str, fragment_number: str | None = None):
        self.code = code
        self.error_id = error_id
        self.fragment_number = fragment_number
        ident = f" ({error_id})" if error_id else ""
        where = f" after fragment {fragment_number}" if fragment_number else ""
        super().__init__(f"Kinesis Video GetMedia reported {code}{ident}{where}" + (f": {message}" if message else ""))

    @property
    def reconnect(self) -> bool:
        """Only this connection ended (its duration limit, a transient error): read on from a new one."""
        return bool({self.code, self.error_id} & RECONNECT_ERRORS)


class _Reader:
    """Exact reads over an unseekable byte stream, with a push-back buffer for one element id."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.pushed = b""

    def read(self, n: int, *, allow_eof: bool = False) -> bytes:
        out = bytearray(self.pushed[:n])
        self.pushed = self.pushed[n:]
        while len(out) < n:
            chunk = self.stream.read(n - len(out))
            if not chunk:
                if allow_eof and not out:
                    return b""
                raise MkvError("The media stream ended in the middle of an MKV element")
            out += chunk
        return bytes(out)

    def unread(self, data: bytes) -> None:
        self.pushed = data + self.pushed

    def vint(self, first: bytes, *, keep_marker: bool) -> tuple[int, bytes, bool]:
        """An EBML variable-size integer whose first byte is ``first``: (value, its bytes, all ones)."""
        b0 = first[0]
        if b0 == 0:
            raise MkvError("The media stream is not MKV (an EBML number longer than 8 bytes)")
        length = 9 - b0.bit_length()
        raw = first + (self.read(length - 1) if length > 1 else b"")
        value = int.from_bytes(raw, "big")
        if not keep_marker:
            value &= (1 << (7 * length)) - 1
        all_ones = not keep_marker and value == (1 << (7 * length)) - 1
        return value, raw, all_ones

    def header(self) -> tuple[int, int | None, bytes] | None:
        """The next element's (id, size or None when unknown, its header bytes); None at the end."""
        first = self.read(1, allow_eof=True)
        if not first:
            return None
        ident, raw_id, _ = self.vint(first, keep_marker=True)
        size, raw_size, unknown = self.vint(self.read(1), keep_marker=False)
        return ident, None if unknown else size, raw_id + raw_size

    def body(self, size: int | None, what: str) -> bytes:
        if size is None:
            raise MkvError(f"The media stream has an MKV {what} element of unknown size")
        if size > MAX_FRAGMENT_BYTES:
            raise MkvError(f"The media stream has an MKV {what} element of {size} bytes (at most {MAX_FRAGMENT_BYTES})")
        return self.read(size)


def _children(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The child elements (id, payload) of a master element held in memory."""
    r = _Reader(io.BytesIO(data))
    while (h := r.header()) is not None:
        ident, size, _ = h
        yield ident, r.body(size, "tag")


def _simple_tags(tags_payload: bytes) -> dict[str, str]:
    found: dict[str, str] = {}

    def simple(payload: bytes) -> None:
        name = value = None
        for ident, body in _children(payload):
            if ident == TAG_NAME:
                name = body.decode("utf-8", "replace")
            elif ident == TAG_STRING:
                value = body.decode("utf-8", "replace")
            elif ident == SIMPLE_TAG:
                simple(body)
        if name is not None and value is not None:
            found[name.strip()] = value.strip()

    for ident, tag in _children(tags_payload):
        if ident == TAG:
            for child, body in _children(tag):
                if child == SIMPLE_TAG:
                    simple(body)
    return found


def _seconds(value: str, name: str) -> float:
    """A Kinesis Video timestamp tag: seconds since the epoch ("1510552593.455"); milliseconds
    (an integer past year 5138 read as seconds) are accepted too."""
    try:
        seconds = float(value)
    except ValueError:
        raise MkvError(f"The media stream's {name} tag is not a timestamp: {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise MkvError(f"The media stream's {name} tag is not a timestamp: {value!r}")
    return seconds / 1000.0 if seconds > 1e11 else seconds


def _first(tags: dict[str, str], names: tuple[str, ...]) -> str | None:
    return next((tags[n] for n in names if n in tags), None)


def _fragment(data: bytes, tags: dict[str, str]) -> Fragment:
    number = tags[FRAGMENT_NUMBER]
    server = _first(tags, SERVER_TIMESTAMPS)
    producer = _first(tags, PRODUCER_TIMESTAMPS)
    if server is None and producer is None:
        raise MkvError(f"Fragment {number} of the media stream has no server or producer timestamp tag")
    server_ts = _seconds(server or producer or "", "server timestamp")
    producer_ts = _seconds(producer, "producer timestamp") if producer is not None else server_ts
    return Fragment(number=number, server_timestamp=server_ts, producer_timestamp=producer_ts, frames=_Frames(data))


class _Frames:
    """A fragment's frames, decoded with PyAV each time they are iterated (nothing is kept)."""

    def __init__(self, data: bytes):
        self.data = data

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        return decode_frames(self.data)


def decode_frames(data: bytes) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds from the fragment's first frame, RGB uint8 HxWx3) for each frame of one MKV file."""
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r", format="matroska")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise MkvError(f"A fragment of the media stream cannot be read as MKV: {exc}") from None
    with container:
        if not container.streams.video:
            raise MkvError("A fragment of the media stream has no video track")
        stream = container.streams.video[0]
        start: float | None = None
        try:
            for frame in container.decode(stream):
                long_side, short_side = max(frame.width, frame.height), min(frame.width, frame.height)
                if long_side > MAX_FRAME_LONG_SIDE or short_side > MAX_FRAME_SHORT_SIDE:
                    raise MkvError(
                        f"The media stream's frames are {frame.width}x{frame.height}; at most "
                        f"{MAX_FRAME_LONG_SIDE}x{MAX_FRAME_SHORT_SIDE} can be analysed"
                    )
                t = float(frame.time) if frame.time is not None else 0.0
                if start is None:
                    start = t
                yield max(0.0, t - start), frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise MkvError(f"A fragment of the media stream cannot be decoded: {exc}") from None


def _cluster(r: _Reader, raw: bytes, size: int | None) -> bytes:
    """A Cluster's whole bytes; one of unknown size ends at the first id that cannot be its child."""
    if size is not None:
        return raw + r.body(size, "Cluster")
    out = bytearray(raw)
    while (h := r.header()) is not None:
        ident, child_size, child_raw = h
        if ident not in CLUSTER_CHILDREN:
            r.unread(child_raw)
            break
        out += child_raw + r.body(child_size, "block")
        _limit(out, "fragment")
    return bytes(out)


def _tags(r: _Reader, size: int | None, tags: dict[str, str]) -> None:
    """Read a Tags element into ``tags``; raise the error Kinesis Video reports in it, if any."""
    found = _simple_tags(r.body(size, "Tags"))
    code = _first(found, ERROR_CODES) or found.get(ERROR_ID)
    if code is not None:
        number = found.get(FRAGMENT_NUMBER) or tags.get(FRAGMENT_NUMBER)
        raise KinesisVideoMediaError(code, found.get(ERROR_ID), _first(found, ERROR_MESSAGES) or "", number)
    tags.update({k: v for k, v in found.items() if k.startswith(TAG_PREFIX)})


def _limit(data: bytes | bytearray, what: str) -> None:
    if len(data) > MAX_FRAGMENT_BYTES:
        raise MkvError(f"The media stream's {what} is larger than {MAX_FRAGMENT_BYTES} bytes")


def read_fragments(stream: IO[bytes]) -> Iterator[Fragment]:
    """The fragments of a GetMedia payload, in order, each yielded as soon as its Cluster and its
    fragment-number tag have arrived. Raises KinesisVideoMediaError when Kinesis Video reports an
    error in the payload and MkvError for media that is not KVS-shaped MKV."""
    r = _Reader(stream)
    head = bytearray()  # the current chunk's EBML header, Segment header, Info and Tracks
    tags: dict[str, str] = {}
    pending: bytes | None = None  # a Cluster whose fragment-number tag has not arrived yet
    while True:
        if pending is not None and FRAGMENT_NUMBER in tags:
            yield _fragment(pending, tags)
            pending = None
        h = r.header()
        if h is None or (pending is not None and h[0] in (EBML_HEADER, CLUSTER)):
            if pending is not None:
                raise MkvError(f"A fragment of the media stream has no {FRAGMENT_NUMBER} tag")
            return
        ident, size, raw = h
        if ident == EBML_HEADER:  # a new chunk
            head = bytearray(raw + r.body(size, "EBML header"))
            tags = {}
        elif ident == SEGMENT:  # descend: its children follow
            head += raw
        elif ident in HEADER_CHILDREN:
            head += raw + r.body(size, "header")
            _limit(head, "MKV header")
        elif ident == CLUSTER:
            if not head:
                raise MkvError("The media stream has an MKV Cluster before any EBML header")
            pending = bytes(head) + _cluster(r, raw, size)
            _limit(pending, "fragment")
        elif ident == TAGS:
            _tags(r, size, tags)
        else:  # SeekHead, Cues, Chapters, Attachments, Void: not needed to split or decode
            r.body(size, "segment")
