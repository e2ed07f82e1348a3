"""Load on `facebank serve` (issue 23, point 8): N concurrent boto3 clients, each looping over a
search/index/list mix for a bounded time; prints throughput, p50/p99 per operation, errors by
code and the server's RSS (peak and at the end). Run against this tree and a peer checkout (its
own .venv) in the same session:

    python bench/load.py --clients 32 128 --seconds 30 --peer /work/main

Each server gets a fresh data directory with one collection of --faces faces (one IndexFaces call
each, so as many segments), then the clients start. Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

ROOT = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("FACEBANK_SHARED", ROOT.parent / "shared")) / "faces" / "dev"
MIX = [("SearchFacesByImage", 4), ("IndexFaces", 2), ("ListFaces", 2), ("ListCollections", 2)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class Server:
    def __init__(self, tree: Path, data: Path):
        python = tree / ".venv" / "bin" / "python"
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.log = open(data.parent / "server.log", "wb")  # noqa: SIM115 - open for the server's life
        args = [str(python), "-m", "facebank.cli", "serve", "--port", str(self.port), "--data-dir", str(data)]
        self.process = subprocess.Popen(args, cwd=tree, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def client(self):
        config = Config(max_pool_connections=4, retries={"max_attempts": 1}, read_timeout=120, connect_timeout=30)
        return boto3.client(
            "rekognition",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=config,
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)
        self.log.close()


def photos(n: int) -> list[bytes]:
    paths = sorted(FACES.rglob("*.jpg"))
    random.Random(1).shuffle(paths)
    return [p.read_bytes() for p in paths[:n]]


def run(tree: Path, clients: int, seconds: float, faces: int, images: list[bytes]) -> dict:
    work = Path(tempfile.mkdtemp(prefix="facebank-load-"))
    server = Server(tree, work / "data")
    try:
        setup = server.client()
        setup.create_collection(CollectionId="load")
        done = 0
        for i in range(faces):
            r = setup.index_faces(CollectionId="load", Image={"Bytes": images[i % len(images)]}, MaxFaces=1)
            done += len(r["FaceRecords"])
        latencies: dict[str, list[float]] = defaultdict(list)
        errors: Counter[str] = Counter()
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds
        peak = [0.0]

        def client_loop(seed: int) -> None:
            rng = random.Random(seed)
            client = server.client()
            ops = [name for name, weight in MIX for _ in range(weight)]
            while time.monotonic() < stop_at:
                name = rng.choice(ops)
                image = {"Bytes": images[rng.randrange(len(images))]}
                start = time.perf_counter()
                try:
                    if name == "SearchFacesByImage":
                        client.search_faces_by_image(CollectionId="load", Image=image, MaxFaces=5)
                    elif name == "IndexFaces":
                        client.index_faces(CollectionId="load", Image=image, MaxFaces=1)
                    elif name == "ListFaces":
                        client.list_faces(CollectionId="load", MaxResults=100)
                    else:
                        client.list_collections()
                    code = None
                except ClientError as exc:
                    code = exc.response["Error"]["Code"]
                except (ConnectionError, ReadTimeoutError) as exc:
                    code = type(exc).__name__
                elapsed = time.perf_counter() - start
                with lock:
                    if code is None:
                        latencies[name].append(elapsed)
                    else:
                        errors[f"{name}:{code}"] += 1

        def sample_rss() -> None:
            while time.monotonic() < stop_at:
                peak[0] = max(peak[0], rss_mb(server.process.pid)[0])
                time.sleep(0.5)

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
        threads.append(threading.Thread(target=sample_rss))
        began = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - began
        rss_end, hwm = rss_mb(server.process.pid)
        return {"latencies": latencies, "errors": errors, "wall": wall, "rss_end": rss_end, "rss_hwm": hwm}
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--faces", type=int, default=200, help="faces indexed before the clients start")
    parser.add_argument("--peer", type=Path, default=None, help="another checkout (with .venv) to compare")
    args = parser.parse_args()
    images = photos(60)
    trees = {"this": ROOT, **({"peer": args.peer} if args.peer else {})}
    for clients in args.clients:
        for label, tree in trees.items():
            r = run(tree, clients, args.seconds, args.faces, images)
            total = sum(len(v) for v in r["latencies"].values())
            print(
                f"{label:5s} clients={clients:4d} {args.seconds:.0f}s: {total / r['wall']:6.1f} ok/s, "
                f"errors {sum(r['errors'].values())} {dict(r['errors'])}, "
                f"server RSS end {r['rss_end']:.0f} MB, peak {r['rss_hwm']:.0f} MB"
            )
            for name, _ in MIX:
                values = r["latencies"].get(name, [])
                print(
                    f"      {name:20s} n={len(values):5d} "
                    f"p50 {pct(values, 0.5):8.0f} ms  p99 {pct(values, 0.99):8.0f} ms"
                )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
