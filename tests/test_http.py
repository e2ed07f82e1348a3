"""The HTTP layer of `facebank serve` as an attacker meets it: raw sockets for malformed bytes,
slow clients, too many connections; the access log; the console hook. In-process servers with a
short request deadline, so a drop happens within the socket timeouts (nothing here is timed)."""

from __future__ import annotations

import json
import logging
import select
import socket
import sys
import time
import types

import pytest
from support import embedded_ctx, serving

from facebank.server import MAX_BODY, Facebank

DEADLINE = 1.0
MAX_CONNECTIONS = 4


@pytest.fixture
def live(tmp_path):
    app = Facebank(embedded_ctx(tmp_path / "data"), workers=4)
    app.ready.set()  # no model is needed by the requests below
    with serving(app, deadline=DEADLINE, max_connections=MAX_CONNECTIONS) as port:
        yield port


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def read_response(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response (Content-Length framed) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = conn.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed(conn: socket.socket) -> bool:
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True


def post_head(target: str, extra: str) -> bytes:
    return f"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: RekognitionService.{target}\r\n{extra}\r\n".encode()


@pytest.mark.parametrize("length", ["-1", "+2", "1_0", "0x10", "2 2", "99999999999999999999"])
def test_content_length_digits_only_refused_without_reading(live, length):
    # Only the headers are sent: an answer proves the server did not wait for (or read) a body.
    with connect(live) as conn:
        conn.sendall(post_head("ListCollections", f"Content-Length: {length}\r\n"))
        status, headers, _ = read_response(conn)
        assert status == 400
        assert closed(conn)


def test_declared_oversized_body_refused_before_reading(live):
    with connect(live) as conn:
        conn.sendall(post_head("DetectFaces", f"Content-Length: {MAX_BODY + 1}\r\n"))
        status, _, body = read_response(conn)
        assert status == 400 and json.loads(body)["__type"] == "ImageTooLargeException"
        assert closed(conn)


def test_chunked_body_is_bounded(live):
    chunk = b"x" * (1024 * 1024)
    with connect(live) as conn:
        conn.sendall(post_head("DetectFaces", "Transfer-Encoding: chunked\r\n"))
        try:
            for _ in range(MAX_BODY // len(chunk) + 2):
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before everything was sent
        status, _, body = read_response(conn)
    assert status == 400 and json.loads(body)["__type"] == "ImageTooLargeException"


def test_small_chunked_body_is_read(live):
    body = b'{"MaxResults": 5}'
    with connect(live) as conn:
        conn.sendall(post_head("ListCollections", "Transfer-Encoding: chunked\r\n"))
        conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        status, _, answer = read_response(conn)
    assert status == 200 and json.loads(answer)["CollectionIds"] == []


def test_trickled_headers_are_dropped_with_one_log_line(live, caplog):
    caplog.set_level(logging.INFO, logger="facebank.server")
    with connect(live) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
        dropped = False
        for i in range(200):  # a header line now and then resets no per-read timeout any more
            if select.select([conn], [], [], 0.1)[0]:
                dropped = closed(conn)
                break
            conn.sendall(f"X-Slow-{i}: 1\r\n".encode())
        assert dropped
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(lines) == 1 and "request not complete" in lines[0]
    assert not any(r.exc_info for r in caplog.records)


def test_slow_body_is_dropped(live):
    with connect(live) as conn:
        conn.sendall(post_head("ListCollections", "Content-Length: 100\r\n") + b"{")
        assert closed(conn)  # the deadline covers the body too


def test_connections_over_the_cap_are_refused(live):
    held = []
    try:
        for _ in range(MAX_CONNECTIONS):
            conn = connect(live)
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # the console page: no models needed
            assert read_response(conn)[0] == 200  # open and counted (keep-alive)
            held.append(conn)
        with connect(live) as extra:
            status, headers, body = read_response(extra)
            assert status == 503 and json.loads(body)["__type"] == "ThrottlingException"
            assert closed(extra)
        held.pop().close()
        for _ in range(100):  # the server notices the close
            with connect(live) as again:
                again.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                if read_response(again)[0] == 200:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("a freed connection slot was never reused")
    finally:
        for conn in held:
            conn.close()


def test_access_log_line(live, caplog):
    caplog.set_level(logging.INFO, logger="facebank.server")
    with connect(live) as conn:
        conn.sendall(post_head("MakeCoffee", "Content-Length: 2\r\n") + b"{}")
        status, headers, _ = read_response(conn)
    assert status == 400
    rid = headers["x-amzn-requestid"]
    lines = [r.getMessage() for r in caplog.records if rid in r.getMessage()]
    assert len(lines) == 1
    fields = lines[0].split()
    assert fields[1:5] == ["POST", "MakeCoffee", "400", "UnknownOperationException"]
    assert fields[5].endswith("ms") and fields[6] == rid


def test_console_hook(live, monkeypatch):
    def request(path: str) -> tuple[int, dict[str, str], bytes]:
        with connect(live) as conn:
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            return read_response(conn)

    monkeypatch.setitem(sys.modules, "facebank.console", None)  # the module is missing: 404
    assert request("/")[0] == 404
    seen = []
    fake = types.ModuleType("facebank.console")
    fake.static_response = lambda path: (seen.append(path) or 200, {"Content-Type": "text/html"}, b"<p>hi</p>")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "facebank.console", fake)
    status, headers, body = request("/console/app.js?v=1")
    assert (status, headers["content-type"], body) == (200, "text/html", b"<p>hi</p>")
    assert request("/")[0] == 200 and seen == ["/console/app.js?v=1", "/"]
    assert request("/other")[0] == 404


def test_health_says_so_when_the_models_cannot_be_loaded(tmp_path):
    """/health answers 503 with the model error (not a 500 and a traceback) when the models are gone."""
    ctx = embedded_ctx(tmp_path / "data", model_dir=tmp_path / "no-models", model_mirror=None)
    app = Facebank(ctx, workers=1)
    app.ready.set()
    with serving(app, deadline=DEADLINE, max_connections=MAX_CONNECTIONS) as port, connect(port) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(conn)
    assert status == 503
    answer = json.loads(body)
    assert answer["status"] == "error" and "is missing from" in answer["message"], answer
