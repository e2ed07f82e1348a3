"""A fake Kinesis Video Streams endpoint on loopback, for the AWS stream processor tests.

It answers the control plane's GetDataEndpoint with its own URL and the media plane's GetMedia
with a GetMedia-shaped payload: one MKV chunk per fragment (EBML header, a Segment of unknown
size with Info, Tracks, the fragment's Tags AWS_KINESISVIDEO_FRAGMENT_NUMBER / _SERVER_TIMESTAMP /
_PRODUCER_TIMESTAMP, its Cluster, then Tags with _MILLIS_BEHIND_NOW and _CONTINUATION_TOKEN), as
the GetMedia reference describes. The fragments are real H.264 made with PyAV from a clip of
``../shared/videos`` (re-encoded with a key frame every ``fragment_seconds``, as a camera's
producer cuts fragments at key frames). Point boto3 at it with ``AWS_ENDPOINT_URL_KINESIS_VIDEO``.

StartSelector: NOW (the latest fragment on), EARLIEST, FRAGMENT_NUMBER (as Kinesis Video does in
practice, the named fragment is served again first; a consumer skips it), PRODUCER_TIMESTAMP /
SERVER_TIMESTAMP (the fragment containing the time on), CONTINUATION_TOKEN (the fragment after
the token's). A missing or deleted stream is ResourceNotFoundException (HTTP 404); deleting a
stream while a GetMedia is being served ends that payload after the fragment being sent.
The payload ends after the last fragment (a real stream would wait for the producer: a consumer
reconnects after the last fragment it read, as it must after any dropped connection).
"""

from __future__ import annotations

import fractions
import functools
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from facebank.engine import mkv

REGION = "us-east-1"
ACCOUNT = "123456789012"
BASE_PRODUCER_TIME = 1_790_000_000.0  # producer clock of the first frame (epoch seconds)
SERVER_DELAY_S = 0.25  # server timestamp = producer timestamp + this
UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"


def ebml_id(ident: int) -> bytes:
    return ident.to_bytes((ident.bit_length() + 7) // 8, "big")


def ebml_size(n: int) -> bytes:
    length = 1
    while n >= (1 << (7 * length)) - 1:
        length += 1
    return ((1 << (7 * length)) | n).to_bytes(length, "big")


def element(ident: int, payload: bytes) -> bytes:
    return ebml_id(ident) + ebml_size(len(payload)) + payload


def tags(values: dict[str, str]) -> bytes:
    """A Tags element with one Tag of SimpleTags (TagName, TagString), as Kinesis Video writes them."""
    simple = b"".join(
        element(mkv.SIMPLE_TAG, element(mkv.TAG_NAME, k.encode()) + element(mkv.TAG_STRING, v.encode()))
        for k, v in values.items()
    )
    return element(mkv.TAGS, element(mkv.TAG, element(0x63C0, b"") + simple))


@dataclass(frozen=True)
class FakeFragment:
    number: str
    producer_timestamp: float
    server_timestamp: float
    ebml: bytes  # the EBML header element
    segment_children: bytes  # Info + Tracks (the Segment's children before the Cluster)
    cluster: bytes  # the whole Cluster element
    frames: int  # how many frames the cluster holds

    def chunk(self, millis_behind_now: int, *, unknown_cluster_size: bool = False) -> bytes:
        ebml, segment_children = self.ebml, self.segment_children
        cluster = self.cluster
        if unknown_cluster_size:  # the same Cluster with its size field "unknown"
            id_len = 4
            size_len = 9 - cluster[id_len].bit_length()
            cluster = cluster[:id_len] + UNKNOWN_SIZE + cluster[id_len + size_len :]
        fragment_tags = tags(
            {
                "AWS_KINESISVIDEO_FRAGMENT_NUMBER": self.number,
                "AWS_KINESISVIDEO_SERVER_TIMESTAMP": f"{self.server_timestamp:.3f}",
                "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP": f"{self.producer_timestamp:.3f}",
            }
        )
        trailer = tags(
            {
                "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW": str(millis_behind_now),
                "AWS_KINESISVIDEO_CONTINUATION_TOKEN": self.number,
            }
        )
        return ebml + ebml_id(mkv.SEGMENT) + UNKNOWN_SIZE + segment_children + fragment_tags + cluster + trailer


def _elements(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(id, header bytes, payload) of the elements of one level held in memory."""
    r = mkv._Reader(io.BytesIO(data))
    while (h := r.header()) is not None:
        ident, size, raw = h
        yield ident, raw, r.body(size, "test")


@functools.cache
def make_fragments(
    clip: Path,
    fragment_seconds: float = 1.0,
    max_seconds: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    repeat: int = 1,
) -> tuple:
    """The clip re-encoded to H.264 (a key frame every ``fragment_seconds``; scaled to ``size``;
    played ``repeat`` times in a row) and cut into one Kinesis Video fragment per key frame."""
    import av

    with av.open(str(clip)) as probe:
        vin = probe.streams.video[0]
        rate = vin.average_rate or 25
        width, height = size or (vin.codec_context.width, vin.codec_context.height)
    out_buf = io.BytesIO()
    with av.open(out_buf, mode="w", format="matroska") as out:
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        gop = max(1, round(float(rate) * fragment_seconds))
        vout.codec_context.gop_size = gop
        vout.codec_context.time_base = fractions.Fraction(1, 1) / rate
        vout.codec_context.options = {"bf": "0", "sc_threshold": "0", "keyint_min": str(gop), "preset": "veryfast"}
        n = 0
        for _ in range(repeat):
            with av.open(str(clip)) as src:
                for frame in src.decode(src.streams.video[0]):
                    if max_seconds is not None and frame.time is not None and frame.time > max_seconds:
                        break
                    frame = frame.reformat(width=width, height=height, format="yuv420p")
                    frame.pts, frame.time_base = n, vout.codec_context.time_base
                    out.mux(vout.encode(frame))
                    n += 1
        out.mux(vout.encode(None))
    data = out_buf.getvalue()
    ebml_header = b""
    children = b""
    clusters: list[bytes] = []
    for ident, raw, payload in _elements(data):
        if ident == mkv.EBML_HEADER:
            ebml_header = raw + payload
        elif ident == mkv.SEGMENT:
            for child, craw, cpayload in _elements(payload):
                if child in mkv.HEADER_CHILDREN:
                    children += craw + cpayload
                elif child == mkv.CLUSTER:
                    clusters.append(craw + cpayload)
    fragments = []
    for i, cluster in enumerate(clusters):
        payload = cluster[4 + 9 - cluster[4].bit_length() :]
        timecode_ms = 0
        blocks = 0
        for ident, _raw, body in _elements(payload):
            if ident == 0xE7:
                timecode_ms = int.from_bytes(body, "big")
            elif ident in (0xA3, 0xA0):
                blocks += 1
        producer = BASE_PRODUCER_TIME + timecode_ms / 1000.0
        fragments.append(
            FakeFragment(
                number=f"91343852333181432392682062{600000 + 17 * i:021d}",
                producer_timestamp=producer,
                server_timestamp=producer + SERVER_DELAY_S,
                ebml=ebml_header,
                segment_children=children,
                cluster=cluster,
                frames=blocks,
            )
        )
    return tuple(fragments)


@dataclass
class FakeStream:
    name: str
    fragments: list[FakeFragment]
    deleted: bool = False
    error_after: str | None = None  # a fragment number after which the payload ends with error tags
    error_code: str = "STREAM_NOT_ACTIVE"
    error_id: str = "4008"
    unknown_cluster_sizes: bool = False
    delete_after: str | None = None  # a fragment number after which the stream is deleted (mid-payload)
    throttle: int = 0  # GetMedia calls still to refuse with ClientLimitExceededException
    get_media_calls: list[dict] = field(default_factory=list)

    @property
    def arn(self) -> str:
        return f"arn:aws:kinesisvideo:{REGION}:{ACCOUNT}:stream/{self.name}/1790000000000"


class FakeKinesisVideo:
    """The fake endpoint: ``add_stream`` / ``delete_stream``; ``url`` for AWS_ENDPOINT_URL_KINESIS_VIDEO."""

    def __init__(self) -> None:
        self.streams: dict[str, FakeStream] = {}
        self.lock = threading.Lock()
        self.calls: list[tuple[str, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                path = self.path.rstrip("/")
                with fake.lock:
                    fake.calls.append((path, body))
                if path == "/getDataEndpoint":
                    fake._data_endpoint(self, body)
                elif path == "/getMedia":
                    fake._get_media(self, body)
                else:
                    fake._error(self, 400, "InvalidArgumentException", f"unsupported path {self.path}")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a consumer hanging up mid-payload or between requests is normal here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeKinesisVideo:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_stream(self, name: str, fragments: tuple | list, **options: object) -> FakeStream:
        stream = FakeStream(name, list(fragments), **options)  # type: ignore[arg-type]
        with self.lock:
            self.streams[name] = stream
        return stream

    def delete_stream(self, name: str) -> None:
        with self.lock:
            self.streams[name].deleted = True

    def _find(self, body: dict) -> FakeStream | None:
        name = body.get("StreamName")
        if name is None and body.get("StreamARN"):
            parts = str(body["StreamARN"]).split(":", 5)
            name = parts[5].split("/")[1] if len(parts) == 6 and parts[5].startswith("stream/") else None
        with self.lock:
            stream = self.streams.get(name) if name else None
        if stream is None or stream.deleted:
            return None
        if body.get("StreamARN") and body["StreamARN"] != stream.arn:
            return None
        return stream

    @staticmethod
    def _error(handler: BaseHTTPRequestHandler, status: int, error_type: str, message: str) -> None:
        payload = json.dumps({"message": message}).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("x-amzn-ErrorType", f"{error_type}:")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _data_endpoint(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        if self._find(body) is None:
            self._error(handler, 404, "ResourceNotFoundException", "The requested stream is not found or not active.")
            return
        payload = json.dumps({"DataEndpoint": self.url}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    @staticmethod
    def _start(stream: FakeStream, selector: dict) -> int | None:
        kind = selector.get("StartSelectorType")
        frags = stream.fragments
        if kind == "EARLIEST":
            return 0
        if kind == "NOW":
            return max(0, len(frags) - 1)
        if kind in ("FRAGMENT_NUMBER", "CONTINUATION_TOKEN"):
            number = (
                selector.get("AfterFragmentNumber") if kind == "FRAGMENT_NUMBER" else selector.get("ContinuationToken")
            )
            for i, f in enumerate(frags):
                if f.number == number:
                    return i if kind == "FRAGMENT_NUMBER" else i + 1
            return None
        if kind in ("PRODUCER_TIMESTAMP", "SERVER_TIMESTAMP"):
            t = float(selector["StartTimestamp"])
            attr = "producer_timestamp" if kind == "PRODUCER_TIMESTAMP" else "server_timestamp"
            later = [i for i, f in enumerate(frags) if getattr(f, attr) <= t]
            return later[-1] if later else 0
        return None

    def _get_media(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        stream = self._find(body)
        if stream is None:
            self._error(handler, 404, "ResourceNotFoundException", "The requested stream is not found or not active.")
            return
        selector = body.get("StartSelector") or {}
        stream.get_media_calls.append(selector)
        if stream.throttle > 0:
            stream.throttle -= 1
            self._error(handler, 400, "ClientLimitExceededException", "GetMedia is limited to 5 calls per second")
            return
        start = self._start(stream, selector)
        if start is None:
            self._error(handler, 400, "InvalidArgumentException", f"StartSelector {selector} names no fragment")
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "video/webm")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def send(data: bytes) -> None:
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        try:
            last = stream.fragments[-1].producer_timestamp if stream.fragments else 0.0
            for f in stream.fragments[start:]:
                if stream.deleted:
                    break
                behind = int((last - f.producer_timestamp) * 1000)
                send(f.chunk(behind, unknown_cluster_size=stream.unknown_cluster_sizes))
                if stream.delete_after == f.number:
                    stream.deleted = True
                if stream.error_after == f.number:
                    send(
                        tags(
                            {
                                "AWS_KINESISVIDEO_ERROR_CODE": stream.error_code,
                                "AWS_KINESISVIDEO_ERROR_ID": stream.error_id,
                                "AWS_KINESISVIDEO_FRAGMENT_NUMBER": f.number,
                            }
                        )
                    )
                    break
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the consumer hung up (it stops reading when it hands over or stops)
