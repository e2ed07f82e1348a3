"""``facebank serve``: the operations over HTTP, on uvicorn (h11) with a minimal ASGI app.

Rekognition's AWS JSON 1.1 protocol is a single POST endpoint; the wire format itself lives in
``protocol``. uvicorn parses HTTP (h11: strict Content-Length, bounded header size, chunked
bodies), runs one event loop for every connection and drains on SIGTERM; this module adds what
it does not bound by itself (see docs/server.md):

- a deadline for a whole request's headers and body (``REQUEST_DEADLINE``), so a client that
  trickles a header line every few seconds is dropped, with one log line;
- a cap on open connections (``MAX_CONNECTIONS``): the next one gets a 503 and is closed;
- the body: digits-only Content-Length up to ``MAX_BODY``, refused from the header alone (before
  reading it and before authentication), chunked bodies counted and cut at the same limit;
- one access-log line per request: client, operation, status, error code, milliseconds, request id.

Operations are blocking (models, SQLite): they run on a bounded thread pool (``WORKERS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import json
import logging
import re
import resource
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from facebank import sigv4
from facebank.errors import ImageTooLargeException, RekognitionError, SerializationException
from facebank.models import ModelError
from facebank.operations import Context
from facebank.protocol import WireResponse, dispatch, error_response, operation_name

# Two 5 MB images base64-encoded (CompareFaces) plus JSON overhead.
MAX_BODY = 16 * 1024 * 1024
REQUEST_DEADLINE = 60.0  # seconds from a request's first byte (or the connection) to its last body byte
IDLE_TIMEOUT = 60  # an idle keep-alive connection is closed after this many seconds
MAX_CONNECTIONS = 512  # open connections; lowered to fit the open-file limit (see _connection_cap)
WORKERS = 32  # operations running at once; further requests wait for a thread
DRAIN_TIMEOUT = 120  # on SIGTERM, in-flight requests get this long to finish
_DIGITS = re.compile(r"[0-9]{1,10}")

log = logging.getLogger("facebank.server")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _Drop(Exception):
    """The client went away (or was dropped) before its request was complete: nothing to answer."""


class Facebank:
    """The ASGI application: POST = an operation, GET /health, GET / and /console/<path>."""

    def __init__(self, ctx: Context, credentials: dict[str, str] | None = None, workers: int = WORKERS):
        self.ctx = ctx
        self.credentials = credentials or {}
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="request")

    def load_models(self) -> None:
        try:
            engine = self.ctx.engine  # a long-lived server loads every model of its pack up front
            engine.recognizers, engine.attribute_models  # noqa: B018
        except Exception as exc:  # reported on /health and in the log, the server keeps answering
            self.load_error = str(exc)
            log.error("could not load models: %s", exc)
        self.ready.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        label = path
        try:
            if method == "POST":
                label = operation_name(headers.get("x-amz-target"), path) or path
                response = await self._post(scope, headers, receive, request_id)
            elif method in ("GET", "HEAD"):
                response = self._get(path, scope.get("query_string", b""))
            else:
                response = WireResponse(405, b'{"message":"Method Not Allowed"}', {"Content-Type": "application/json"})
        except _Drop as reason:
            log.info("dropped %s %s: %s", _client(scope), label, reason)
            return
        close = response.headers.pop("_close", None) is not None
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
        out.append((b"content-length", str(len(response.body)).encode()))
        if close:  # the unread body (if any) must not be parsed as the next request
            out.append((b"connection", b"close"))
        # Logged before the answer is sent (ms = time to answer), so the line exists when the client has it.
        ms = (time.perf_counter() - started) * 1000
        code = response.headers.get("x-amzn-ErrorType", "-")
        rid = response.headers.get("x-amzn-RequestId", "-")
        log.info("%s %s %s %d %s %.0fms %s", _client(scope), method, label, response.status, code, ms, rid)
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else response.body})

    def _get(self, path: str, query: bytes) -> WireResponse:
        if path == "/health":
            if not self.ready.is_set():
                status, body = 503, {"status": "loading models"}
            elif self.load_error:
                status, body = 503, {"status": "error", "message": self.load_error}
            else:
                try:
                    status, body = 200, {"status": "ok", "pack": self.ctx.engine.pack.name}
                except ModelError as exc:  # models gone or corrupt since start: say so, not a 500
                    status, body = 503, {"status": "error", "message": str(exc)}
            return WireResponse(status, json.dumps(body).encode(), {"Content-Type": "application/json"})
        if path == "/" or path.startswith("/console/"):
            try:
                console = importlib.import_module("facebank.console")
            except ModuleNotFoundError:
                console = None
            if console is not None:
                full = path + ("?" + query.decode("latin-1") if query else "")
                status, headers, body = console.static_response(full)
                return WireResponse(status, body, dict(headers))
        return WireResponse(404, b'{"message":"Not Found"}', {"Content-Type": "application/json"})

    async def _post(self, scope: Scope, headers: dict[str, str], receive: Receive, request_id: str) -> WireResponse:
        try:
            body = await _read_body(headers, receive)
        except RekognitionError as error:
            response = error_response(error, request_id)
            response.headers["_close"] = "1"
            return response
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self._answer, scope, headers, body, request_id)

    def _answer(self, scope: Scope, headers: dict[str, str], body: bytes, request_id: str) -> WireResponse:
        path = scope["path"]
        if self.credentials:
            query = scope.get("query_string", b"").decode("latin-1")
            url = f"http://{headers.get('host', 'localhost')}{scope.get('raw_path', path.encode()).decode('latin-1')}"
            try:
                sigv4.verify("POST", url + (f"?{query}" if query else ""), headers, body, self.credentials)
            except RekognitionError as error:
                return error_response(error, request_id)
        self.ready.wait()
        return dispatch(operation_name(headers.get("x-amz-target"), path), body, self.ctx, request_id)


async def _read_body(headers: dict[str, str], receive: Receive) -> bytes:
    """The request body within MAX_BODY; a declared length over it is refused before reading."""
    length = headers.get("content-length")
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    if length is None and not chunked:
        raise SerializationException("Content-Length is required")
    if length is not None:
        if not _DIGITS.fullmatch(length.strip()):  # h11 checks this too; no sign, underscore or space inside
            raise SerializationException("Content-Length is not a number")
        if int(length) > MAX_BODY:
            raise ImageTooLargeException(f"Request body of {int(length)} bytes exceeds the limit of {MAX_BODY} bytes")
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Drop("the client closed the connection before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise ImageTooLargeException(f"Request body exceeds the limit of {MAX_BODY} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


_REFUSAL_BODY = b'{"__type":"ThrottlingException","Message":"Too many open connections; retry later"}'
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/x-amz-json-1.1\r\n"
    b"x-amzn-ErrorType: ThrottlingException\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a whole-request deadline and a connection cap."""

    max_connections = MAX_CONNECTIONS
    deadline = REQUEST_DEADLINE
    refused = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        if len(self.connections) >= self.max_connections:
            type(self).refused += 1
            if type(self).refused % 100 == 1:  # one line, not one per refused connection
                log.warning(
                    "refused a connection: %d open, the limit (%d refused so far)",
                    len(self.connections),
                    type(self).refused,
                )
            transport.write(_REFUSAL)
            transport.close()
            self.transport = transport
            return
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.deadline, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            return  # the whole request arrived: the operation is running
        where = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        log.info("dropped %s: request not complete within %.0f s", where, self.deadline)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A malformed request (a Content-Length that is not digits, a header over 16 KB...), as
        Rekognition's SerializationException rather than uvicorn's plain text; then close."""
        body = json.dumps({"__type": "SerializationException", "Message": "Malformed HTTP request"}).encode()
        headers = [
            (b"Content-Type", b"application/x-amz-json-1.1"),
            (b"x-amzn-ErrorType", b"SerializationException"),
            (b"Content-Length", str(len(body)).encode()),
            (b"Connection", b"close"),
        ]
        for event in (h11.Response(status_code=400, headers=headers), h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None:
            self._arm()  # the first byte of a request starts its deadline
        super().data_received(data)

    def on_response_complete(self) -> None:
        self._disarm()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class _UvicornServer(uvicorn.Server):
    """uvicorn's server, stopping on SIGTERM/SIGINT without re-raising the signal afterwards, so
    the caller (the video runner) can stop in its turn and the process exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():  # tests run it in a thread
            yield
            return

        def stop(signum: int, frame: object) -> None:
            if not self.should_exit:
                log.info("signal %s: finishing in-flight requests and stopping", signum)
            self.handle_exit(signum, None)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _connection_cap() -> int:
    """MAX_CONNECTIONS, lowered to what the open-file limit leaves (raised to its hard limit first)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - 128))  # files for SQLite, segments, models, logs


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(host: str, port: int, ctx: Context, credentials: dict[str, str] | None = None) -> None:
    if not is_loopback(host) and not credentials:
        raise SystemExit(
            f"refusing to listen on {host}: beyond loopback every request must be signed. Set "
            "FACEBANK_ACCESS_KEY_ID and FACEBANK_SECRET_ACCESS_KEY (clients sign with the same pair)."
        )
    app = Facebank(ctx, credentials)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = http_server(app, max_connections=_connection_cap())
    threading.Thread(target=app.load_models, name="load-models", daemon=True).start()
    log.info("facebank listening on http://%s:%d", host, sock.getsockname()[1])
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.pool.shutdown(wait=True)
        log.info("stopped")


def http_server(
    app: Facebank, deadline: float = REQUEST_DEADLINE, max_connections: int = MAX_CONNECTIONS
) -> uvicorn.Server:
    """The uvicorn server for ``app``; ``.run(sockets=[sock])`` serves until SIGTERM or ``should_exit``."""
    protocol = type("Guarded", (GuardedH11Protocol,), {"deadline": deadline, "max_connections": max_connections})
    config = uvicorn.Config(
        app,
        http=protocol,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        headers=[("Server", "facebank")],
        timeout_keep_alive=IDLE_TIMEOUT,
        timeout_graceful_shutdown=DRAIN_TIMEOUT,
        backlog=128,
    )
    return _UvicornServer(config)
