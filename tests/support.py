"""Test helpers: where shared/ is, its manifests, a `facebank serve` process whose clients check
every response against botocore's model, synthetic images."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import botocore.session
import pytest
import regex
from PIL import Image

from facebank.operations import Context
from facebank.settings import Settings
from facebank.storage import Storage
from facebank.wiring import embedded_context

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEBANK_SHARED", ROOT.parent / "shared"))
FACES = SHARED / "faces"
MODEL = botocore.session.get_session().get_service_model("rekognition")
# Errors of the AWS JSON protocol itself, which every such service returns and no service model lists.
PROTOCOL_ERRORS = {
    "ValidationException", "SerializationException", "UnknownOperationException", "InvalidSignatureException",
    "UnrecognizedClientException", "MissingAuthenticationTokenException",
}  # fmt: skip


def serialised_moto(mp: pytest.MonkeyPatch) -> None:
    """Dummy AWS credentials, and moto's request dispatch serialised: its backends are not
    thread-safe, while real DynamoDB/S3 apply each request atomically. Clients still interleave
    requests, conditional failures and retries."""
    from moto.core.botocore_stubber import BotocoreStubber

    lock = threading.RLock()
    dispatch = BotocoreStubber.process_request

    def serialised(self, request):
        with lock:
            return dispatch(self, request)

    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        mp.setenv(var, value)
    mp.setattr(BotocoreStubber, "process_request", serialised)


def settings(**overrides) -> Settings:
    """This process's settings (the CI's model cache and mirror) with test overrides."""
    return dataclasses.replace(Settings.from_env(), **overrides)


def embedded_ctx(data_dir: Path, **overrides) -> Context:
    """An operation Context over embedded storage in data_dir, as `facebank serve` builds it."""
    return embedded_context(settings(data_dir=Path(data_dir), **overrides))


def ctx_over(storage: Storage) -> Context:
    """An operation Context over storage the test opened (and may have wrapped)."""
    return Context.of(storage, settings())


def require_faces() -> Path:
    if not (FACES / "MANIFEST.tsv").is_file():
        pytest.skip(f"face photos not found at {FACES} (set FACEBANK_SHARED to the shared/ folder)")
    return FACES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, env: dict[str, str], data_dir: Path, extra_args: list[str] = ()):
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "facebank.cli", "serve", "--port", str(self.port), "--data-dir", str(data_dir)]
        # Open for the server's lifetime (closed in stop()), so not a with-block.
        self.log = open(data_dir.parent / f"server-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen([*args, *extra_args], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"facebank serve exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)  # readiness polling, not timing: bounded by the deadline
        raise RuntimeError("facebank serve did not become healthy")

    def client(self, **credentials):
        creds = {"aws_access_key_id": "local", "aws_secret_access_key": "local", **credentials}
        client = boto3.client("rekognition", endpoint_url=self.url, region_name="us-east-1", **creds)
        check_responses(client)
        return client

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(timeout=30)
        self.log.close()
        return code


def manifest_rows(name: str) -> list[dict[str, str]]:
    with open(require_faces() / name) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def dev_people() -> dict[str, list[str]]:
    """faces/dev photos by identity, both sorted: {identity: [relative paths]}."""
    people: dict[str, list[str]] = {}
    for row in manifest_rows("MANIFEST.tsv"):
        if row["path"].startswith("dev/"):
            people.setdefault(row["identity"], []).append(row["path"])
    return {k: sorted(v) for k, v in sorted(people.items())}


def image_bytes(relative: str) -> bytes:
    return (require_faces() / relative).read_bytes()


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def jpeg(size=(200, 200), color=(120, 130, 140)) -> bytes:
    return encode(Image.new("RGB", size, color), "JPEG")


def pixel_bomb() -> bytes:
    """A PNG of a few KB whose header declares 20000 x 20000 pixels."""
    return encode(Image.new("1", (20000, 20000)), "PNG", optimize=True)


# --- response shapes: botocore parses leniently and drops members it does not know, so a response
# that boto3 accepts can still differ from Rekognition's; these check the JSON itself.


def check_shape(shape, value, path: str = "") -> None:
    """Assert a decoded JSON value conforms to a botocore shape (members, types, enums, ranges,
    patterns)."""
    kind, meta = shape.type_name, shape.metadata
    if kind == "structure":
        assert isinstance(value, dict), f"{path}: {value!r} is not a structure"
        unknown = set(value) - set(shape.members)
        assert not unknown, f"{path}: members not in the model: {sorted(unknown)}"
        for name, item in value.items():
            check_shape(shape.members[name], item, f"{path}.{name}")
    elif kind == "map":
        assert isinstance(value, dict), f"{path}: {value!r} is not a map"
        assert meta.get("min", 0) <= len(value) <= meta.get("max", len(value)), f"{path}: {len(value)} entries"
        for key, item in value.items():
            check_shape(shape.key, key, f"{path}.<key>")
            check_shape(shape.value, item, f"{path}[{key!r}]")
    elif kind == "list":
        assert isinstance(value, list), f"{path}: not a list"
        # An empty list is allowed below a model's min: DeleteFaces' DeletedFaces (min 1) is [] when
        # every face is refused, and a client reads resp["DeletedFaces"] either way.
        assert not value or meta.get("min", 0) <= len(value), f"{path}: length {len(value)}"
        assert len(value) <= meta.get("max", len(value)), f"{path}: length {len(value)}"
        for i, item in enumerate(value):
            check_shape(shape.member, item, f"{path}[{i}]")
    elif kind == "string":
        assert isinstance(value, str), f"{path}: {value!r} is not a string"
        if shape.enum:
            assert value in shape.enum, f"{path}: {value!r} not in {shape.enum}"
        assert meta.get("min", 0) <= len(value) <= meta.get("max", len(value)), f"{path}: length"
        if "pattern" in meta:
            assert regex.fullmatch(meta["pattern"], value), f"{path}: {value!r} !~ {meta['pattern']}"
    elif kind in ("float", "double", "integer", "long"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{path}: {value!r}"
        if kind in ("integer", "long"):
            assert isinstance(value, int), f"{path}: {value!r} is not an integer"
        assert meta.get("min", value) <= value <= meta.get("max", value), f"{path}: {value} out of range"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{path}: {value!r}"
    elif kind == "timestamp":
        assert isinstance(value, (int, float)), f"{path}: {value!r}"
    else:
        raise AssertionError(f"{path}: unexpected shape type {kind}")


def check_responses(client) -> None:
    """Check every successful response `client` receives against its operation's output shape, and
    every error body for Rekognition's form: an error the operation declares, and a message."""

    def after_call(http_response, model, **_):
        body = json.loads(http_response.content or b"{}")
        if http_response.status_code == 200:
            check_shape(model.output_shape, body, model.name)
        else:
            assert set(body) == {"__type", "Message"}, f"{model.name}: error body {body}"
            declared = {e.name for e in model.error_shapes} | PROTOCOL_ERRORS
            assert body["__type"] in declared, f"{model.name} does not declare {body['__type']}"
            assert body["Message"], f"{model.name}: {body['__type']} without a message"

    client.meta.events.register("after-call.rekognition", after_call)


@contextlib.contextmanager
def serving(app, **server_options) -> Iterator[int]:
    """``app`` (a ``facebank.server.Facebank``) on uvicorn on a free loopback port, as ``facebank
    serve`` runs it, in this process; yields the port. ``server_options`` go to ``http_server``."""
    from facebank.server import http_server

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = http_server(app, **server_options)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    limit = time.monotonic() + 30
    while not server.started and time.monotonic() < limit:
        time.sleep(0.01)  # readiness polling, bounded
    assert server.started
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        app.pool.shutdown()
