"""``facebank serve``: the operations over HTTP on a threaded stdlib server.

Rekognition's AWS JSON 1.1 protocol is a single POST endpoint, so a small threaded server is
enough and keeps the runtime dependency-free. The wire format itself lives in ``protocol``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import signal
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from facebank import sigv4
from facebank.errors import (
    ImageTooLargeException,
    RekognitionError,
    SerializationException,
)
from facebank.operations import Context
from facebank.protocol import dispatch, error_response, operation_name

# Two 5 MB images base64-encoded (CompareFaces) plus JSON overhead.
MAX_BODY = 16 * 1024 * 1024
log = logging.getLogger("facebank.server")


class FacebankServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for in-flight requests: clean SIGTERM
    request_queue_size = 64

    def __init__(self, address, ctx: Context, credentials: dict[str, str] | None = None):
        self.ctx = ctx
        self.credentials = credentials or {}
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self.connections.add if open_ else self.connections.discard)(conn)

    def stop(self) -> None:
        """Stop accepting, then end idle keep-alive connections so in-flight requests can finish
        and ``server_close`` does not wait on clients that merely hold a connection open."""
        self.shutdown()
        with self._connections_lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    conn.shutdown(socket.SHUT_RD)  # a request being answered can still write

    def load_models(self) -> None:
        try:
            engine = self.ctx.engine  # a long-lived server loads every model of its pack up front
            engine.recognizers, engine.attribute_models  # noqa: B018
        except Exception as exc:  # reported on /health and in the log, the server keeps answering
            self.load_error = str(exc)
            log.error("could not load models: %s", exc)
        self.ready.set()


class Handler(BaseHTTPRequestHandler):
    server: FacebankServer
    protocol_version = "HTTP/1.1"
    server_version = "facebank"

    timeout = 60  # idle keep-alive connections are dropped after a minute

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/" or path.startswith("/console/"):  # the web console's static files
            from facebank.console import static_response

            status, headers, page = static_response(path)
            self._send(status, page, headers)
            return
        if path != "/health":
            self._send(404, b'{"message":"Not Found"}', {"Content-Type": "application/json"})
            return
        if not self.server.ready.is_set():
            status, body = 503, {"status": "loading models"}
        elif self.server.load_error:
            status, body = 503, {"status": "error", "message": self.server.load_error}
        else:
            status, body = 200, {"status": "ok", "pack": self.server.ctx.engine.pack.name}
        self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def do_POST(self) -> None:
        request_id = str(uuid.uuid4())
        try:
            body = self._read_body()
            if self.server.credentials:
                host = self.headers.get("Host", "localhost")
                headers = {k.lower(): v for k, v in self.headers.items()}
                sigv4.verify("POST", f"http://{host}{self.path}", headers, body, self.server.credentials)
        except RekognitionError as error:
            self.close_connection = True  # the unread body (if any) must not be parsed as a request
            response = error_response(error, request_id)
            self._send(response.status, response.body, response.headers)
            return
        name = operation_name(self.headers.get("X-Amz-Target"), self.path)
        self.server.ready.wait()
        response = dispatch(name, body, self.server.ctx, request_id)
        self._send(response.status, response.body, response.headers)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise SerializationException("Content-Length is required")
        try:
            size = int(length)
        except ValueError:
            raise SerializationException("Content-Length is not a number") from None
        if size > MAX_BODY:
            # Refused on the header alone: the body is never read.
            raise ImageTooLargeException(f"Request body of {size} bytes exceeds the limit of {MAX_BODY} bytes")
        return self.rfile.read(size)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


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
    server = FacebankServer((host, port), ctx, credentials)

    def stop(signum, frame) -> None:
        log.info("signal %s: finishing in-flight requests and stopping", signum)
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=server.load_models, name="load-models", daemon=True).start()
    log.info("facebank listening on http://%s:%d", host, server.server_address[1])
    try:
        server.serve_forever()
    finally:
        server.server_close()
        log.info("stopped")
