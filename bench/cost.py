#!/usr/bin/env python3
"""Cost per 1,000 calls of each operation on the deployed stack, from measured handler runs.

    python bench/cost.py [--runs 10] [--faces 40]

Runs the real Lambda handlers (functions/<op>.py, API Gateway proxy events, warm) against moto's
DynamoDB and S3 in this process, times each call, and records every AWS request it makes. Then it
prices a call at AWS list prices (us-east-1, arm64; see PRICES) as

  Lambda      billed ms x memory GB x $/GB-s  +  $/request
  API Gateway REST API $/request
  DynamoDB    on-demand read/write request units from the recorded requests
  S3          GET / PUT+LIST requests from the recorded requests (DELETE is free)

Billed time = (measured time - time spent inside moto) x CPU scale + modelled AWS latency:
* Lambda gives a function CPU in proportion to memory, one full vCPU at 1,769 MB; we assume one
  core of this machine ~ one Graviton vCPU, so compute time scales by max(1, 1769 / memory MB)
  (metadata-only functions run at 512 MB: x3.46);
* each DynamoDB request adds LATENCY_MS["dynamodb"], each S3 request LATENCY_MS["s3"] (moto answers
  in microseconds, the real services in milliseconds).
Not included: cold starts (about 1-3 s of init, billed, on the first call of each execution
environment), CloudWatch Logs ingestion (~0.6 KB per call: $0.0003 per 1,000), X-Ray (sampled,
~5% of calls at $5 per million traces), custom metrics (only on errors), data transfer out, and
the free tiers. Rekognition's prices are list prices for the first 1M images a month; its API calls
that are not image analyses (collection/user management, ListFaces, DeleteFaces) are not billed
per call.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import statistics
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import dev_images, shared_dir  # noqa: E402 - bench/ is put on the path just above

REGION, ACCOUNT, PREFIX = "us-east-1", "000000000000", "facebank-"
VECTOR_BUCKET, IMAGE_BUCKET = "facebank-bench-vectors", "facebank-bench-images"

PRICES = {  # us-east-1 list prices
    "lambda_gb_s_arm64": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "apigw_rest_request": 3.50 / 1e6,  # first 333M requests a month
    "dynamodb_rru": 0.125 / 1e6,  # on-demand, per read request unit
    "dynamodb_wru": 0.625 / 1e6,  # on-demand, per write request unit
    "s3_get": 0.0004 / 1000,
    "s3_put_list": 0.005 / 1000,
    "rekognition_image": 1.00 / 1000,  # first 1M images a month
    "rekognition_face_month": 0.00001,
    "dynamodb_gb_month": 0.25,
    "s3_gb_month": 0.023,
}
LATENCY_MS = {"dynamodb": 6.0, "s3": 20.0}
FULL_VCPU_MB = 1769
REKOGNITION_BILLED = {  # image-analysis APIs Rekognition bills per image (Group 1 and 2)
    "DetectFaces", "CompareFaces", "IndexFaces", "SearchFaces", "SearchFacesByImage",
    "SearchUsers", "SearchUsersByImage", "AssociateFaces", "DisassociateFaces",
}  # fmt: skip


def snake(op: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()


class Meter:
    """Counts AWS requests, their request units, and the time spent in them (moto)."""

    def __init__(self) -> None:
        self.reset()
        self._started: dict[int, float] = {}

    def reset(self) -> None:
        self.rru = self.wru = 0.0
        self.requests: dict[str, int] = defaultdict(int)  # dynamodb / s3_get / s3_put_list / s3_free
        self.moto_s = 0.0

    def start(self, context, **_):
        context["facebank_t0"] = time.perf_counter()

    def count(self, params, model, **_):
        service, op = model.service_model.service_name, model.name
        if service == "dynamodb":
            self.requests["dynamodb"] += 1
            if op == "TransactWriteItems":
                self.wru += 2 * len(params["TransactItems"])  # transactions cost 2 units per item (<1 KB)
            elif op == "BatchWriteItem":
                self.wru += sum(len(v) for v in params["RequestItems"].values())
            elif op in ("PutItem", "UpdateItem", "DeleteItem"):
                self.wru += 1
            elif op == "GetItem":
                self.rru += 1  # strongly consistent, item < 4 KB
            elif op == "BatchGetItem":
                self.rru += sum(len(v["Keys"]) for v in params["RequestItems"].values())
        elif service == "s3":
            kind = {
                "GetObject": "s3_get",
                "HeadObject": "s3_get",
                "PutObject": "s3_put_list",
                "ListObjectsV2": "s3_put_list",
                "ListObjects": "s3_put_list",
            }.get(op, "s3_free")
            self.requests[kind] += 1

    def after(self, http_response, parsed, model, context, **_):
        if "facebank_t0" in context:
            self.moto_s += time.perf_counter() - context.pop("facebank_t0")
        if model.service_model.service_name == "dynamodb" and model.name in ("Query", "Scan"):
            size = len(json.dumps(parsed.get("Items", [])))
            self.rru += max(1, math.ceil(size / 4096))  # strongly consistent: 1 unit per 4 KB read


def setup(meter: Meter):
    import boto3
    from moto import mock_aws

    env = {
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION, "FACEBANK_VECTOR_BUCKET": VECTOR_BUCKET, "FACEBANK_TABLE_PREFIX": PREFIX,
        "FACEBANK_ACCOUNT_ID": ACCOUNT, "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true",
    }  # fmt: skip
    os.environ.update(env)
    os.environ.setdefault("FACEBANK_MODEL_MIRROR", str(shared_dir() / "models"))
    mock = mock_aws()
    mock.start()
    session = boto3.session.Session(region_name=REGION)
    from facebank.storage.dynamodb import TableNames, create_tables

    create_tables(session.client("dynamodb"), TableNames.with_prefix(PREFIX))
    s3 = session.client("s3")
    for bucket in (VECTOR_BUCKET, IMAGE_BUCKET):
        s3.create_bucket(Bucket=bucket)
    session.events.register("provide-client-params.*.*", meter.count)
    session.events.register("before-call.*.*", meter.start)
    session.events.register("after-call.*.*", meter.after)
    boto3.DEFAULT_SESSION = session
    return session


def invoke(op: str, request: dict) -> dict:
    import importlib

    from facebank.aws.runtime import LocalContext

    handler = importlib.import_module(f"functions.{snake(op)}").handler
    event = {
        "resource": f"/{op}",
        "path": f"/{op}",
        "httpMethod": "POST",
        "headers": {},
        "requestContext": {"requestId": str(uuid.uuid4())},
        "body": json.dumps(request),
        "isBase64Encoded": False,
    }
    result = handler(event, LocalContext(function_name=f"facebank-{op}"))
    body = json.loads(result["body"])
    if result["statusCode"] != 200:
        raise RuntimeError(f"{op} failed: {body}")
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed calls per operation (after one warm-up)")
    parser.add_argument("--faces", type=int, default=40, help="faces/dev images indexed into the collection first")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()

    from infra.access import access_for

    meter = Meter()
    setup(meter)
    from facebank.operations import OPERATIONS

    images = [p for p, _ in dev_images()]

    def b64(p):
        return base64.b64encode(Path(p).read_bytes()).decode()

    photo = b64(images[0])  # a 250x250 faces/dev portrait, one face
    group = shared_dir() / "faces" / "groups" / "face_recognition_two_people.jpg"
    collection = "bench"
    invoke("CreateCollection", {"CollectionId": collection})
    face_ids = []
    for i, path in enumerate(images[: args.faces]):
        out = invoke(
            "IndexFaces", {"CollectionId": collection, "Image": {"Bytes": b64(path)}, "ExternalImageId": f"img{i}"}
        )
        face_ids += [r["Face"]["FaceId"] for r in out["FaceRecords"]]
    has_users = "CreateUser" in OPERATIONS
    if has_users:
        invoke("CreateUser", {"CollectionId": collection, "UserId": "bench-user"})
        invoke("AssociateFaces", {"CollectionId": collection, "UserId": "bench-user", "FaceIds": face_ids[:3]})

    counter = iter(range(10**9))

    def fresh(prefix: str) -> str:
        return f"{prefix}-{next(counter)}"

    # Each entry: operation -> request factory (a new request per call where the operation changes state).
    scenarios = {
        "DetectFaces": lambda: {"Image": {"Bytes": b64(group)}},
        "CompareFaces": lambda: {"SourceImage": {"Bytes": photo}, "TargetImage": {"Bytes": b64(group)}},
        "CreateCollection": lambda: {"CollectionId": fresh("c")},
        "DescribeCollection": lambda: {"CollectionId": collection},
        "ListCollections": dict,
        "IndexFaces": lambda: {"CollectionId": collection, "Image": {"Bytes": photo}, "ExternalImageId": fresh("x")},
        "ListFaces": lambda: {"CollectionId": collection, "MaxResults": 100},
        "SearchFaces": lambda: {"CollectionId": collection, "FaceId": face_ids[0]},
        "SearchFacesByImage": lambda: {"CollectionId": collection, "Image": {"Bytes": photo}},
    }
    if has_users:
        scenarios |= {
            "CreateUser": lambda: {"CollectionId": collection, "UserId": fresh("u")},
            "ListUsers": lambda: {"CollectionId": collection},
            "SearchUsers": lambda: {"CollectionId": collection, "UserId": "bench-user"},
            "SearchUsersByImage": lambda: {"CollectionId": collection, "Image": {"Bytes": photo}},
        }
    # Operations that consume state get it made before each timed call (not metered).
    prepare = {
        "DeleteCollection": lambda: (c := fresh("d"), invoke("CreateCollection", {"CollectionId": c}))[0],
        "DeleteFaces": lambda: invoke(
            "IndexFaces", {"CollectionId": collection, "Image": {"Bytes": photo}, "ExternalImageId": fresh("del")}
        )["FaceRecords"][0]["Face"]["FaceId"],
    }
    scenarios["DeleteCollection"] = lambda c: {"CollectionId": c}
    scenarios["DeleteFaces"] = lambda f: {"CollectionId": collection, "FaceIds": [f]}
    if has_users:

        def new_face() -> str:
            out = invoke(
                "IndexFaces", {"CollectionId": collection, "Image": {"Bytes": photo}, "ExternalImageId": fresh("m")}
            )
            return out["FaceRecords"][0]["Face"]["FaceId"]

        def new_user(with_face: bool) -> tuple[str, str]:
            user, face = fresh("u"), new_face()
            invoke("CreateUser", {"CollectionId": collection, "UserId": user})
            if with_face:
                invoke("AssociateFaces", {"CollectionId": collection, "UserId": user, "FaceIds": [face]})
            return user, face

        prepare |= {
            "DeleteUser": lambda: new_user(with_face=True),
            "AssociateFaces": lambda: new_user(with_face=False),
            "DisassociateFaces": lambda: new_user(with_face=True),
        }
        scenarios["DeleteUser"] = lambda uf: {"CollectionId": collection, "UserId": uf[0]}
        scenarios["AssociateFaces"] = lambda uf: {"CollectionId": collection, "UserId": uf[0], "FaceIds": [uf[1]]}
        scenarios["DisassociateFaces"] = lambda uf: {"CollectionId": collection, "UserId": uf[0], "FaceIds": [uf[1]]}

    rows = []
    for op in sorted(OPERATIONS):
        if op not in scenarios:
            print(f"warning: no cost scenario for {op}", file=sys.stderr)
            continue
        access = access_for(op)
        memory = 2048 if access.heavy else 512
        samples = []
        for i in range(args.runs + 1):
            request = scenarios[op](prepare[op]()) if op in prepare else scenarios[op]()
            meter.reset()
            t0 = time.perf_counter()
            invoke(op, request)
            wall = time.perf_counter() - t0
            if i:  # the first call warms caches (models, segments)
                samples.append((wall, meter.moto_s, meter.rru, meter.wru, dict(meter.requests)))
        wall = statistics.median(s[0] for s in samples)
        compute = statistics.median(s[0] - s[1] for s in samples)
        rru = statistics.mean(s[2] for s in samples)
        wru = statistics.mean(s[3] for s in samples)
        reqs = {
            k: statistics.mean(s[4].get(k, 0) for s in samples)
            for k in ("dynamodb", "s3_get", "s3_put_list", "s3_free")
        }
        scale = max(1.0, FULL_VCPU_MB / memory)
        billed_ms = math.ceil(
            compute * 1000 * scale
            + reqs["dynamodb"] * LATENCY_MS["dynamodb"]
            + (reqs["s3_get"] + reqs["s3_put_list"] + reqs["s3_free"]) * LATENCY_MS["s3"]
        )
        lam = 1000 * (billed_ms / 1000 * memory / 1024 * PRICES["lambda_gb_s_arm64"] + PRICES["lambda_request"])
        api = 1000 * PRICES["apigw_rest_request"]
        ddb = 1000 * (rru * PRICES["dynamodb_rru"] + wru * PRICES["dynamodb_wru"])
        s3 = 1000 * (reqs["s3_get"] * PRICES["s3_get"] + reqs["s3_put_list"] * PRICES["s3_put_list"])
        rek = (
            1000 * PRICES["rekognition_image"] * (2 if op == "CompareFaces" else 1)
            if op in REKOGNITION_BILLED
            else None
        )
        rows.append(
            {
                "op": op,
                "memory": memory,
                "measured_ms": wall * 1000,
                "compute_ms": compute * 1000,
                "billed_ms": billed_ms,
                "rru": rru,
                "wru": wru,
                "requests": reqs,
                "lambda_": lam,
                "api": api,
                "dynamodb": ddb,
                "s3": s3,
                "total": lam + api + ddb + s3,
                "rekognition": rek,
            }
        )

    from facebank.engine.packs import pack
    from facebank.settings import Settings

    pack_name = pack(Settings.from_env().pack).name
    print(
        f"Cost per 1,000 calls (us-east-1 list prices, arm64, warm; pack {pack_name}; {args.runs} timed calls "
        f"each; collection of {len(face_ids)} faces)\n"
    )
    print(
        "| operation | memory | measured ms | billed ms (model) | Lambda | API Gateway | DynamoDB | S3 "
        "| **facebank** | Rekognition |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rek = f"${r['rekognition']:.2f}" if r["rekognition"] is not None else "not billed"
        print(
            f"| {r['op']} | {r['memory']} MB | {r['measured_ms']:.0f} | {r['billed_ms']} | ${r['lambda_']:.4f} | "
            f"${r['api']:.4f} | ${r['dynamodb']:.5f} | ${r['s3']:.5f} | **${r['total']:.4f}** | {rek} |"
        )
    face_item_kb, vector_kb = 0.45, 0.55  # DynamoDB face item with overhead; 128 float32 + id in a segment
    storage = face_item_kb / 1e6 * PRICES["dynamodb_gb_month"] + vector_kb / 1e6 * PRICES["s3_gb_month"]
    print(
        f"\nStorage per face-month: facebank ${storage:.8f} (DynamoDB item ~{face_item_kb} KB + vector ~{vector_kb} KB "
        f"in S3) vs Rekognition ${PRICES['rekognition_face_month']:.5f}."
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
