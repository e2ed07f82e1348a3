"""Live video for stream processors (issue 26): the fragments a runtime reads from its input.

A Kinesis Video stream delivers MKV fragments, each with a number and two timestamps
(``facebank.engine.mkv``); other sources (a file, RTSP, HTTP, HLS) are cut into fragments of the
same shape here, so the analysis (``facebank.operations.stream_run``) sees one kind of input.

``open_source`` demuxes the source with PyAV and starts a new fragment at the first frame at least
``fragment_s`` after the current fragment's start. One decoder reads the whole source, so a fragment
need not start at a keyframe (a KVS producer's do; ours are never decoded apart), and fragments are
short: a fragment's records are written when it has been analysed, so its length is most of the lag
from a frame entering to its record (docs/streams.md). Fragment numbers are synthesised: the
microsecond of receipt, made strictly increasing, so numbers grow across restarts as KVS's do.
ProducerTimestamp is the wall clock when the source was opened plus the fragment's presentation
time; ServerTimestamp is when its first frame was decoded. A file is read at its own frame rate
(as a camera would deliver it) unless ``realtime=False``. Network sources have open and read
timeouts: a source that cannot be opened, stops delivering, or ends raises ``SourceError`` with a
message for StatusMessage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    import numpy as np

FRAGMENT_S = 1.0  # target fragment length for non-KVS sources (KVS producers choose their own)
NETWORK_TIMEOUT_S = 10.0  # open and read timeout of a network source
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")


class SourceError(Exception):
    """The input cannot be read (any more); the message is user-facing (StatusMessage)."""


@dataclass
class Fragment:
    number: str  # KVS fragment number (a decimal string); synthesised for non-KVS sources
    server_timestamp: float  # epoch seconds (KVS: AWS_KINESISVIDEO_SERVER_TIMESTAMP)
    producer_timestamp: float  # epoch seconds (KVS: AWS_KINESISVIDEO_PRODUCER_TIMESTAMP)
    # (offset in seconds from the fragment's start, RGB uint8 HxWx3), decoded lazily.
    frames: Iterable[tuple[float, np.ndarray]]


def is_network(url: str) -> bool:
    return urlparse(url).scheme.lower() in NETWORK_SCHEMES


def describe(url: str) -> str:
    """The source for a message, without credentials (rtsp://user:pass@host/...)."""
    parts = urlparse(url)
    if parts.password or parts.username:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return parts._replace(netloc=host).geturl()
    return url


def open_source(
    url: str,
    *,
    realtime: bool | None = None,
    fragment_s: float = FRAGMENT_S,
    timeout_s: float = NETWORK_TIMEOUT_S,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Fragment]:
    """The fragments of a file (a path or file:// URL), RTSP, HTTP or HLS source, as they arrive.

    ``realtime``: deliver packets no faster than their timestamps (default: for files only; a
    network source delivers at its own pace). The source is opened on the first ``next()``;
    raises SourceError when it cannot be opened, stops delivering for ``timeout_s``, or ends.
    Closing the iterator closes the source."""
    network = is_network(url)
    reader = _Reader(url, network, not network if realtime is None else realtime, fragment_s, timeout_s, clock, sleep)
    return reader.fragments()


class _Reader:
    def __init__(
        self,
        url: str,
        network: bool,
        realtime: bool,
        fragment_s: float,
        timeout_s: float,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ):
        self.url, self.network, self.realtime = url, network, realtime
        self.fragment_s, self.timeout_s = fragment_s, timeout_s
        self.clock, self.sleep = clock, sleep
        self.pending: tuple[float, Any] | None = None  # the frame that starts the next fragment
        self.decoded: Iterator[tuple[float, Any]] = iter(())
        self.last_number = 0
        self.first_time: float | None = None  # presentation time of the first packet (s)
        self.opened_at = 0.0  # wall clock when the source opened (epoch s)
        self.opened_mono = 0.0
        self.read_time = 0.0  # presentation time reached (s)

    def _open(self) -> Any:
        import av

        path = self.url
        if not self.network:
            path = urlparse(self.url).path if self.url.startswith("file:") else self.url
            if not Path(path).is_file():
                raise SourceError(f"The input {describe(self.url)} does not exist (no such file)")
        options = {"rtsp_transport": "tcp"} if self.url.lower().startswith("rtsp") else {}
        try:
            return av.open(
                path, mode="r", timeout=(self.timeout_s, self.timeout_s) if self.network else None, options=options
            )
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(f"The input {describe(self.url)} cannot be opened: {self._reason(exc)}") from None

    def _reason(self, exc: BaseException) -> str:
        """FFmpeg's message, without the URL's credentials (its errors quote the URL)."""
        return str(exc).replace(self.url, describe(self.url))

    def fragments(self) -> Iterator[Fragment]:

        container = self._open()
        try:
            streams = container.streams.video
            if not streams:
                raise SourceError(f"The input {describe(self.url)} has no video stream")
            stream = streams[0]
            self.base = float(stream.time_base)
            self.opened_at, self.opened_mono = self.clock(), time.monotonic()
            self.decoded = self._decode(container, stream)
            self.pending = next(self.decoded, None)
            if self.pending is None:
                raise SourceError(f"The input {describe(self.url)} holds no video frames")
            while self.pending is not None:
                start = self.pending[0]
                received = self.clock()
                number = max(self.last_number + 1, int(received * 1_000_000))
                self.last_number = number
                assert self.first_time is not None
                frames = self._frames(start)
                yield Fragment(str(number), received, self.opened_at + (start - self.first_time), frames)
                for _ in frames:  # decode what the consumer left: the decoder needs every packet
                    pass
            raise SourceError(f"The input {describe(self.url)} ended after {self.read_time:.1f} s of video")
        finally:
            container.close()

    def _decode(self, container: Any, stream: Any) -> Iterator[tuple[float, Any]]:
        """(presentation time s, frame) in presentation order, packets paced when realtime. A
        packet the decoder rejects is skipped (a live stream loses packets); the input failing
        (a read timeout, a broken connection) raises SourceError."""
        import av

        codec = stream.codec_context
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or (packet.pts is None and packet.dts is None):
                    continue  # the demuxer's flush packet, or a packet without time
                ticks = packet.dts if packet.dts is not None else packet.pts
                if self.first_time is None:
                    self.first_time = float(packet.pts if packet.pts is not None else ticks) * self.base
                if self.realtime:  # as a camera delivers it: not before its decode time
                    wait = float(ticks) * self.base - self.first_time - (time.monotonic() - self.opened_mono)
                    if wait > 0:
                        self.sleep(wait)
                try:
                    frames = codec.decode(packet)
                except av.error.InvalidDataError:
                    continue
                yield from self._times(frames)
            yield from self._times(codec.decode(None))  # the frames the decoder held back (reordering)
        except av.error.FFmpegError as exc:
            raise SourceError(
                f"The input {describe(self.url)} stopped after {self.read_time:.1f} s of video: {self._reason(exc)}"
            ) from None

    def _times(self, frames: Iterable[Any]) -> Iterator[tuple[float, Any]]:
        for frame in frames:
            if frame.pts is None:
                continue
            t = float(frame.pts) * self.base
            if self.first_time is not None:
                self.read_time = max(self.read_time, t - self.first_time)
            yield t, frame

    def _frames(self, start: float) -> Iterator[tuple[float, np.ndarray]]:
        """The fragment's frames: from ``start`` to the first frame ``fragment_s`` or more later."""
        item, self.pending = self.pending, None
        while item is not None:
            t, frame = item
            if t - start >= self.fragment_s:
                self.pending = item
                return
            yield max(0.0, t - start), frame.to_ndarray(format="rgb24")
            item = next(self.decoded, None)
