#!/usr/bin/env python3
"""Lambda cold start, measured locally: each handler in a fresh Python process, several times.

    python bench/coldstart.py [--tree DIR] [--runs 5] [--model-dir /tmp/modellayer/models]
                              [--image PATH] [--importtime N]

Two handlers, as their Lambdas run them:

* ``functions/list_collections.py`` (metadata only: it should never load a model), called with an
  API Gateway event for ListCollections against DynamoDB + S3 on a moto server;
* ``functions/detect_faces.py`` with the models of a built model layer
  (``python layers/build.py models --pack open --mirror /work/shared/models --out /tmp/modellayer``;
  ``--model-dir`` is its ``models`` directory, FACEBANK_MODEL_DIR in the Lambda) on a real photo.

The moto server runs in this (parent) process on loopback and the children reach it through
AWS_ENDPOINT_URL, so moto is never imported by, or counted in, a handler's process. Each child reads
its event, then times ``import functions.<name>`` (import), then ``handler(event)`` (first call,
which for DetectFaces includes loading the detector), and reports ru_maxrss (peak resident memory).
Wall time is what a Lambda bills; the process CPU time beside it is what to compare when other work
shares the machine (wall time then includes waiting for a core; CPU time hardly moves).
One untimed warm-up process per handler runs first, so every timed run finds the bytecode compiled
and the files in the page cache (a Lambda's deployment package is read from local disk too).

``--tree`` points at another checkout (e.g. ``git worktree add /tmp/before <commit>``): its
``facebank`` and ``functions`` are imported, with this interpreter, so before/after use one script.
``--importtime N`` also prints the N largest imports (cumulative and self) of one more run of each
handler under ``python -X importtime``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
TABLE_PREFIX = "facebank-"
VECTOR_BUCKET = "facebank-coldstart-vectors"
COLLECTION = "coldstart"
DEFAULT_IMAGE = "dev/barack_obama/3.jpg"  # a 596 KB photo of one face, a typical upload

# Targets from the "foundations" issue.
METADATA_IMPORT_TARGET_S = 0.4  # metadata-only handler: import
DETECT_TOTAL_TARGET_S = 2.0  # DetectFaces: import + model load + first call

# Runs inside the child. Only the handler import and the first call are timed; json (needed to read
# the event) is loaded before, as the Lambda runtime itself has it loaded already.
CHILD = r"""
import json, resource, sys, time
module_name, event_path = sys.argv[1], sys.argv[2]
with open(event_path) as f:
    event = json.load(f)
started, started_cpu = time.perf_counter(), time.process_time()
import importlib
module = importlib.import_module(module_name)
imported, imported_cpu = time.perf_counter(), time.process_time()
response = module.handler(event)
called, called_cpu = time.perf_counter(), time.process_time()
import facebank
print(json.dumps({
    "import_s": imported - started,
    "first_call_s": called - imported,
    "import_cpu_s": imported_cpu - started_cpu,
    "first_call_cpu_s": called_cpu - imported_cpu,
    "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "status": response["statusCode"],
    "body": response["body"][:300],
    "faces": len(json.loads(response["body"]).get("FaceDetails", [])),
    "onnx_loaded": "onnx" in sys.modules,
    "onnxruntime_loaded": "onnxruntime" in sys.modules,
    "numpy_loaded": "numpy" in sys.modules,
    "facebank": facebank.__file__,
}))
"""

# Creates the tables, the bucket and one collection with the tree's own code (untimed).
SETUP = r"""
import boto3, json, sys
from facebank.storage.dynamodb import TableNames, create_tables
create_tables(boto3.client("dynamodb"), TableNames.with_prefix(sys.argv[1]))
boto3.client("s3").create_bucket(Bucket=sys.argv[2])
from functions.create_collection import handler
event = json.load(open(sys.argv[3]))
response = handler(event)
assert response["statusCode"] in (200, 400), response  # 400: it exists from an earlier run
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def apigw_event(operation: str, body: dict) -> dict:
    """An API Gateway REST proxy event, as the stack's /v1/<Operation> routes deliver them."""
    return {
        "resource": f"/{operation}",
        "path": f"/v1/{operation}",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"RekognitionService.{operation}"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "requestContext": {"requestId": f"coldstart-{operation}", "stage": "v1", "resourcePath": f"/{operation}",
                           "httpMethod": "POST", "identity": {"accessKey": "AKIDCOLDSTART"}},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }  # fmt: skip


@dataclass
class Case:
    name: str
    module: str
    event: dict
    env: dict[str, str]


def child_env(tree: Path, endpoint: str, model_dir: Path) -> dict[str, str]:
    # Nothing from this shell's FACEBANK_* or AWS_* leaks in: the child sees what a Lambda would.
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {
        **keep,
        "PYTHONPATH": str(tree),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "FACEBANK_VECTOR_BUCKET": VECTOR_BUCKET,
        "FACEBANK_TABLE_PREFIX": TABLE_PREFIX,
        "FACEBANK_ACCOUNT_ID": "000000000000",
        "FACEBANK_PACK": "open",
        "FACEBANK_MODEL_DIR": str(model_dir),
        "FACEBANK_ORT_THREADS": "1",
        "POWERTOOLS_SERVICE_NAME": "facebank",
        "POWERTOOLS_METRICS_NAMESPACE": "facebank-coldstart",
    }


def _child_args(case: Case, event_file: Path, importtime: bool) -> list[str]:
    return [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", CHILD, case.module, str(event_file)]


def run_child(tree: Path, case: Case, event_file: Path) -> dict:
    """One cold start of ``case`` in a fresh process: its timings and what it loaded."""
    proc = subprocess.run(
        _child_args(case, event_file, False), cwd=tree, env=case.env, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        raise SystemExit(f"{case.name}: child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["status"] != 200:
        raise SystemExit(f"{case.name}: handler answered {result['status']}: {result['body']}")
    if not Path(result["facebank"]).is_relative_to(tree):
        raise SystemExit(f"{case.name}: imported facebank from {result['facebank']}, not from {tree}")
    return result


def importtime_log(tree: Path, case: Case, event_file: Path) -> str:
    """The ``-X importtime`` log of one more cold start (the first call's lazy imports included)."""
    args = _child_args(case, event_file, True)
    return subprocess.run(args, cwd=tree, env=case.env, capture_output=True, text=True, timeout=300).stderr


def top_imports(stderr: str, n: int) -> str:
    """The ``n`` largest imports of a ``-X importtime`` log, by cumulative and by self time."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        rows.append((int(self_us), int(cumulative_us), name))
    total = sum(r[0] for r in rows)
    by_cumulative = sorted(rows, key=lambda r: -r[1])[:n]
    by_self = sorted(rows, key=lambda r: -r[0])[:n]
    lines = [f"  total self time of all imports: {total / 1e6:.3f} s", "  cumulative s  module"]
    lines += [f"  {c / 1e6:12.3f}  {name}" for _, c, name in by_cumulative]
    lines += ["  self s        module"] + [f"  {s / 1e6:12.3f}  {name.strip()}" for s, _, name in by_self]
    return "\n".join(lines)


def report(case: Case, runs: list[dict]) -> None:
    """The runs of one case, their medians, and whether the case meets its target."""
    print(f"\n{case.name}  ({case.module})")
    print("       wall s                                 CPU s")
    print("  run  import  first call  import+call    import  first call  import+call  peak RSS MB")
    rows = [
        (
            r["import_s"], r["first_call_s"], r["import_s"] + r["first_call_s"],
            r["import_cpu_s"], r["first_call_cpu_s"], r["import_cpu_s"] + r["first_call_cpu_s"], r["maxrss_mb"],
        )
        for r in runs
    ]  # fmt: skip
    line = "  {:>3}  {:6.3f}  {:10.3f}  {:11.3f}    {:6.3f}  {:10.3f}  {:11.3f}  {:11.1f}"
    for i, row in enumerate(rows, 1):
        print(line.format(i, *row))
    medians = [statistics.median(column) for column in zip(*rows, strict=True)]
    print(line.format("med", *medians))
    imported, total = medians[0], medians[2]
    last = runs[-1]
    if case.module == "functions.detect_faces":
        print(f"  faces found: {last['faces']}")
    loaded = ", ".join(f"{m}={last[f'{m}_loaded']}" for m in ("onnx", "onnxruntime", "numpy"))
    print(f"  loaded in the process: {loaded}")
    if case.module == "functions.list_collections":
        verdict = "met" if imported <= METADATA_IMPORT_TARGET_S else "NOT met"
        print(f"  target: import <= {METADATA_IMPORT_TARGET_S} s -> {verdict}")
    else:
        verdict = "met" if total <= DETECT_TOTAL_TARGET_S else "NOT met"
        print(f"  target: import + model load + first call <= {DETECT_TOTAL_TARGET_S} s -> {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose facebank/functions to import")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/modellayer/models"))
    parser.add_argument("--image", type=Path, default=None, help=f"a face photo (default: faces/{DEFAULT_IMAGE})")
    parser.add_argument("--importtime", type=int, default=0, metavar="N", help="also print the N largest imports")
    args = parser.parse_args(argv)
    tree = args.tree.resolve()
    if not (args.model_dir / "yunet").is_dir():
        raise SystemExit(f"{args.model_dir} holds no model layer: python layers/build.py models --out ...")
    image = args.image or Path(os.environ.get("FACEBANK_SHARED", ROOT.parent / "shared")) / "faces" / DEFAULT_IMAGE

    from moto.server import ThreadedMotoServer  # imported here, in the parent only

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        env = child_env(tree, f"http://127.0.0.1:{port}", args.model_dir)
        cases = [
            Case("ListCollections (metadata only)", "functions.list_collections",
                 apigw_event("ListCollections", {}), env),
            Case("DetectFaces", "functions.detect_faces",
                 apigw_event("DetectFaces", {"Image": {"Bytes": base64.b64encode(image.read_bytes()).decode()}}), env),
        ]  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="facebank-coldstart-") as tmp:
            setup_event = Path(tmp) / "setup.json"
            setup_event.write_text(json.dumps(apigw_event("CreateCollection", {"CollectionId": COLLECTION})))
            setup = subprocess.run(
                [sys.executable, "-c", SETUP, TABLE_PREFIX, VECTOR_BUCKET, str(setup_event)],
                cwd=tree,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if setup.returncode != 0:
                raise SystemExit(f"setup failed:\n{setup.stderr[-3000:]}")
            commit = subprocess.run(
                ["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True, text=True
            )
            print(f"tree {tree}  ({commit.stdout.strip()[:90]})")
            print(
                f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
                f"image {image.name} ({image.stat().st_size // 1024} KB); models {args.model_dir}"
            )
            for case in cases:
                event_file = Path(tmp) / f"{case.module}.json"
                event_file.write_text(json.dumps(case.event))
                run_child(tree, case, event_file)  # warm-up: bytecode and page cache
                report(case, [run_child(tree, case, event_file) for _ in range(args.runs)])
                if args.importtime:
                    print("  largest imports (python -X importtime, one more run):")
                    print(top_imports(importtime_log(tree, case, event_file), args.importtime))
    finally:
        moto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
