"""Test helpers: where shared/ is, its manifests, a `facebank serve` process, synthetic images."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEBANK_SHARED", ROOT.parent / "shared"))
FACES = SHARED / "faces"


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
        self.log = open(data_dir.parent / f"server-{self.port}.log", "wb")
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
        return boto3.client("rekognition", endpoint_url=self.url, region_name="us-east-1", **creds)

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
