#!/usr/bin/env python3
"""Stored-video jobs on the deployed stack: measured per-segment times -> wall time for an hour of
720p video with N segments in parallel, and the cost per video minute next to Rekognition's.

    python bench/video_aws.py [--seconds 60] [--segment-s 14] [--parallel 1,10,20,50,100] [--json FILE]

Measures (this machine, moto in this process, the real handlers):
1. a 720p (1280x720) H.264 30 fps clip of --seconds, made from ../shared/videos'
   one-by-one-person-detection clip (768x432 10 fps, people walking in and out: faces in about 13%
   of frames) scaled up and each frame repeated 3 times, so decoding costs what a 30 fps 720p
   camera file does;
2. StartFaceDetection (FaceAttributes ALL) and StartFaceSearch (a collection of 10 faces/dev
   faces) through their API handlers, then the VideoWorker handler on every SQS message, one by one
   (the pump of tests/test_aws_video.py): each invocation timed, less the time spent inside moto,
   with every AWS request counted (bench/cost.py's Meter);
3. the worker's cold start: a fresh Python importing functions/video_worker.py, PyAV and the
   engine, and loading the models (median of 3).

Model (method in docs/cost.md):
* per-segment billed seconds = measured compute (process CPU time, less moto's: other processes on
  a shared machine inflate wall time, not CPU time) x max(1, 1769 / memory MB) (Lambda's CPU share; one
  core of this machine taken as one Graviton vCPU) + modelled AWS latency per request (cost.py's
  LATENCY_MS); fitted as fixed + per-second-of-video x segment length, so the deployment's segment
  length (--deploy-segment-s, default 120 s) can differ from the bench's;
* wall time of an hour with N parallel workers = cold start + plan + ceil(segments / N) waves of
  one segment + assemble (scaled from the bench by item count) + one SQS hop (HOP_S) per step;
* cost per video minute = (Lambda GB-s and requests + SQS requests + S3 requests + DynamoDB request
  units + SNS publish + the Start/Get API calls) of a one-hour job / 60, at cost.py's us-east-1 list
  prices, next to Rekognition Video's $0.10 per minute (face detection or face search).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import dev_images, shared_dir  # noqa: E402
from cost import FULL_VCPU_MB, LATENCY_MS, PRICES, Meter, invoke  # noqa: E402

REGION, ACCOUNT, PREFIX = "us-east-1", "000000000000", "facebank-"
VECTOR_BUCKET, VIDEO_BUCKET = "facebank-bench-vectors", "facebank-bench-videos"
SOURCES = {  # ../shared/videos clips the 720p bench clip is made from (looped when shorter)
    "people": "intel_one-by-one-person-detection.mp4",  # 768x432 10 fps: faces in about 13% of frames
    "face": "intel_asl-book.mp4",  # 640x480 30 fps, 3.6 s: one face in every frame
}
SIZE, FPS = (1280, 720), 30
PRICES_VIDEO = {
    "sqs_request": 0.40 / 1e6,  # standard queue, per 64 KB request
    "sns_publish": 0.50 / 1e6,
    "rekognition_video_minute": 0.10,  # face detection or face search, stored video
}
HOP_S = 1.0  # SQS -> Lambda event source latency per step (AWS quotes "typically under a second"; assumed)


def make_720p(seconds: int, source: str) -> bytes:
    """--seconds of a shared clip at 1280x720, 30 fps (frames of a slower clip repeated; a shorter
    clip looped), H.264 (libx264 veryfast, crf 23: an ordinary camera/phone file's bitrate)."""
    import av

    path = shared_dir() / "videos" / SOURCES[source]
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as dst:
        stream = dst.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        written = 0
        while written < seconds * FPS:
            with av.open(str(path)) as src:
                rate = float(src.streams.video[0].average_rate or FPS)
                repeat = max(1, round(FPS / rate))
                for frame in src.decode(video=0):
                    pixels = frame.reformat(width=SIZE[0], height=SIZE[1], format="rgb24").to_ndarray()
                    for _ in range(repeat):
                        for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                            dst.mux(packet)
                        written += 1
                    if written >= seconds * FPS:
                        break
        for packet in stream.encode():
            dst.mux(packet)
    return out.getvalue()


def setup(meter: VideoMeter) -> dict:
    """moto in this process: tables (+ jobs), buckets, the video queue with its dead-letter queue,
    an SNS topic; the Lambda environment the stack gives the functions."""
    import boto3
    from moto import mock_aws

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "MOTO_ACCOUNT_ID": ACCOUNT,
            "FACEBANK_VECTOR_BUCKET": VECTOR_BUCKET,
            "FACEBANK_TABLE_PREFIX": PREFIX,
            "FACEBANK_ACCOUNT_ID": ACCOUNT,
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
    )
    os.environ.setdefault("FACEBANK_MODEL_MIRROR", str(shared_dir() / "models"))
    mock_aws().start()
    session = boto3.session.Session(region_name=REGION)
    from facebank.storage.dynamodb import TableNames, create_tables
    from facebank.storage.dynamodb_jobs import create_jobs_table

    ddb = session.client("dynamodb")
    create_tables(ddb, TableNames.with_prefix(PREFIX))
    create_jobs_table(ddb, f"{PREFIX}jobs")
    s3 = session.client("s3")
    for bucket in (VECTOR_BUCKET, VIDEO_BUCKET):
        s3.create_bucket(Bucket=bucket)
    sqs = session.client("sqs")
    dlq = sqs.create_queue(QueueName="facebank-video-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
    queue = sqs.create_queue(QueueName="facebank-video", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = session.client("sns").create_topic(Name="video-done")["TopicArn"]
    os.environ["FACEBANK_VIDEO_QUEUE_URL"] = queue
    session.events.register("provide-client-params.*.*", meter.count)
    session.events.register("before-call.*.*", meter.start)
    session.events.register("after-call.*.*", meter.after)
    boto3.DEFAULT_SESSION = session
    return {"session": session, "sqs": sqs, "s3": s3, "queue": queue, "arn": arn, "topic": topic}


class VideoMeter(Meter):
    """cost.py's Meter (DynamoDB and S3 requests, time inside moto), plus SQS and SNS requests and
    the process CPU time spent inside moto: compute is measured as process CPU time, which other
    processes on this shared machine do not inflate (wall time they do), less moto's."""

    def reset(self) -> None:
        super().reset()
        self.moto_cpu = 0.0

    def count(self, params, model, **kw):
        if model.service_model.service_name in ("sqs", "sns"):
            self.requests[model.service_model.service_name] += 1
        return super().count(params=params, model=model, **kw)

    def start(self, context, **kw):
        context["facebank_cpu0"] = time.process_time()
        return super().start(context=context, **kw)

    def after(self, http_response, parsed, model, context, **kw):
        if "facebank_cpu0" in context:
            self.moto_cpu += time.process_time() - context.pop("facebank_cpu0")
        return super().after(http_response=http_response, parsed=parsed, model=model, context=context, **kw)


def run_job(env: dict, meter: VideoMeter, api: str, request: dict) -> list[dict]:
    """Start a job through its API handler, then run the worker on each message until none is left.
    Returns one row per invocation: step, seconds of video, compute seconds, requests."""
    import importlib

    from facebank.aws.runtime import LocalContext

    worker = importlib.import_module("functions.video_worker").handler
    meter.reset()
    t0, cpu0 = time.perf_counter(), time.process_time()
    job_id = invoke(api, request)["JobId"]
    rows = [_row("start", None, t0, meter, cpu0)]
    while True:
        got = env["sqs"].receive_message(QueueUrl=env["queue"], AttributeNames=["All"]).get("Messages", [])
        if not got:
            break
        [message] = got
        body = json.loads(message["Body"])
        record = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {"ApproximateReceiveCount": message["Attributes"]["ApproximateReceiveCount"]},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": env["arn"],
            "awsRegion": REGION,
        }
        meter.reset()
        t0, cpu0 = time.perf_counter(), time.process_time()
        result = worker({"Records": [record]}, LocalContext(function_name="facebank-VideoWorker"))
        if result["batchItemFailures"]:
            raise RuntimeError(f"worker failed on {body}")
        span = (body["end_ms"] - body["start_ms"]) / 1000 if body["type"] == "segment" else None
        rows.append(_row(body["type"], span, t0, meter, cpu0))
        env["sqs"].delete_message(QueueUrl=env["queue"], ReceiptHandle=message["ReceiptHandle"])
    job = invoke(api.replace("Start", "Get"), {"JobId": job_id, "MaxResults": 1})
    if job["JobStatus"] != "SUCCEEDED":
        raise RuntimeError(f"{api} job ended {job['JobStatus']}: {job.get('StatusMessage')}")
    rows[-1]["items"] = _items(env, job_id)
    rows[-1]["sorts"] = 2 if api == "StartFaceSearch" else 1
    return rows


def _items(env: dict, job_id: str) -> int:
    from facebank.aws.runtime import shared_context

    return shared_context().storage.jobs.get_job(job_id).result_count


def _row(step: str, span: float | None, t0: float, meter: VideoMeter, cpu0: float) -> dict:
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "step": step,
        "video_s": span,
        "wall_s": wall - meter.moto_s,
        "compute_s": cpu - meter.moto_cpu,
        "rru": meter.rru,
        "wru": meter.wru,
        "requests": dict(meter.requests),
    }


def cold_start_s(runs: int = 3) -> float:
    """A fresh interpreter: import the worker, PyAV and the engine, load the models."""
    code = (
        "import time; t = time.perf_counter()\n"
        "import functions.video_worker, av\n"
        "from facebank.engine import get_engine\nfrom facebank.settings import Settings\n"
        "s = Settings.from_env(); get_engine(s.pack, s.resolved_model_dir, s.ort_threads)\n"
        "print(time.perf_counter() - t)\n"
    )
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, env=os.environ.copy()
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def billed(row: dict, memory: int) -> float:
    """Billed seconds of one invocation: compute at Lambda's CPU share plus modelled AWS latency."""
    reqs = row["requests"]
    latency_ms = reqs.get("dynamodb", 0) * LATENCY_MS["dynamodb"] + LATENCY_MS["s3"] * sum(
        reqs.get(k, 0) for k in ("s3_get", "s3_put_list", "s3_free")
    )
    latency_ms += (reqs.get("sqs", 0) + reqs.get("sns", 0)) * LATENCY_MS["dynamodb"]
    return row["compute_s"] * max(1.0, FULL_VCPU_MB / memory) + latency_ms / 1000


def fit_segments(rows: list[dict], memory: int) -> tuple[float, float]:
    """(fixed s, s per second of video): least squares over the measured segments, whose lengths
    differ (the last one is shorter); the fixed part is what a segment costs whatever its length
    (opening the video, decoding from the keyframe before its start)."""
    points = [(r["video_s"], billed(r, memory)) for r in rows if r["step"] == "segment"]
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        rate = sum(y for _, y in points) / sum(xs)
        return 0.0, rate
    mx, my = statistics.mean(xs), statistics.mean(y for _, y in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    if my - slope * mx < 0:  # no fixed part to see: the least-squares line through the origin
        return 0.0, sum(x * y for x, y in points) / sum(x * x for x in xs)
    return my - slope * mx, slope


def model(rows: list[dict], seconds: int, memory: int, deploy_segment_s: int, cold: float, parallel: list[int]):
    """Wall times for one hour at each N, and the cost per video minute of a one-hour job."""
    fixed, rate = fit_segments(rows, memory)
    hour = 3600
    segments = math.ceil(hour / deploy_segment_s)
    per_segment = fixed + rate * deploy_segment_s
    plan = sum(billed(r, memory) for r in rows if r["step"] == "plan")
    scale = hour / seconds  # requests and result items per second of video scale with the video's length
    # Assembly: its compute (parsing partials, sorting, writing pages) scaled by the item count,
    # plus one GET per segment partial and one PUT per page of each sort order.
    [done] = [r for r in rows if r["step"] == "assemble"]
    items = done.get("items", 0) * scale
    pages = math.ceil(items / 1000) * (2 if done.get("sorts", 1) == 2 else 1)
    assemble = done["compute_s"] * max(1.0, FULL_VCPU_MB / memory) * scale
    assemble += (segments + pages) * LATENCY_MS["s3"] / 1000 + done["requests"].get("dynamodb", 0) * LATENCY_MS[
        "dynamodb"
    ] / 1000
    walls = {
        n: cold + plan + math.ceil(segments / n) * per_segment + assemble + (2 + math.ceil(segments / n)) * HOP_S
        for n in parallel
    }
    # The bench job's requests (ranged GETs of the video, partials, pages, job updates) scaled to an
    # hour by video length: per-job requests (Start, HeadObject, the ledger) are over-counted, by cents
    # per million minutes.
    reqs: dict[str, float] = defaultdict(float)
    for r in rows:
        for k, v in r["requests"].items():
            reqs[k] += v * scale
        reqs["rru"] += r["rru"] * scale
        reqs["wru"] += r["wru"] * scale
    gb = memory / 1024
    # Cold starts: one per concurrent environment (N of them, at most one per segment), init billed.
    n_cold = min(max(parallel), segments)
    lambda_gb_s = gb * (plan + segments * per_segment + assemble + cold * n_cold)
    costs = {
        "lambda compute": lambda_gb_s * PRICES["lambda_gb_s_arm64"],
        "lambda requests": (segments + 2) * PRICES["lambda_request"],
        # each message: sent (batched by 10), received and deleted by the event source
        "sqs": (reqs.get("sqs", 0) + 2 * (segments + 2)) * PRICES_VIDEO["sqs_request"],
        "s3": reqs.get("s3_get", 0) * PRICES["s3_get"] + reqs.get("s3_put_list", 0) * PRICES["s3_put_list"],
        "dynamodb": reqs.get("rru", 0) * PRICES["dynamodb_rru"] + reqs.get("wru", 0) * PRICES["dynamodb_wru"],
        "sns + api": PRICES_VIDEO["sns_publish"] + 2 * PRICES["apigw_rest_request"],
    }
    per_minute = {k: v / 60 for k, v in costs.items()}
    return {
        "fixed_s": fixed,
        "s_per_video_s": rate,
        "segment_s": per_segment,
        "segments": segments,
        "plan_s": plan,
        "assemble_s": assemble,
        "cold_s": cold,
        "wall_s": walls,
        "wall_30s_segments": {
            n: cold
            + plan
            + math.ceil(math.ceil(hour / 30) / n) * (fixed + rate * 30)
            + assemble
            + (2 + math.ceil(math.ceil(hour / 30) / n)) * HOP_S
            for n in parallel
        },
        "per_minute": per_minute,
        "per_minute_total": sum(per_minute.values()),
        "n_cold": n_cold,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="length of the 720p bench clip")
    parser.add_argument("--segment-s", type=int, default=14, help="segment length of the bench jobs")
    parser.add_argument("--deploy-segment-s", type=int, default=120, help="segment length modelled (the default)")
    parser.add_argument("--memory", type=int, default=2048, help="the worker's memory (MB), as deployed")
    parser.add_argument("--parallel", default="1,10,20,50,100", help="parallel segment workers modelled")
    parser.add_argument("--source", choices=sorted(SOURCES), action="append", help="clip(s) to measure (default both)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    sources = args.source or ["people", "face"]
    parallel = [int(n) for n in args.parallel.split(",")]

    meter = VideoMeter()
    env = setup(meter)
    for source in sources:
        t0 = time.perf_counter()
        clip = make_720p(args.seconds, source)
        print(
            f"720p clip from {SOURCES[source]}: {args.seconds} s, {len(clip) / 1e6:.1f} MB "
            f"(made in {time.perf_counter() - t0:.0f} s)"
        )
        env["s3"].put_object(Bucket=VIDEO_BUCKET, Key=f"bench/{source}.mp4", Body=clip)
    os.environ["FACEBANK_NOTIFICATION_TOPICS"] = env["topic"].rsplit(":", 1)[0] + ":*"
    os.environ["FACEBANK_VIDEO_SEGMENT_S"] = str(args.segment_s)
    import base64

    invoke("CreateCollection", {"CollectionId": "bench"})
    for i, (path, _) in enumerate(dev_images()[:10]):
        image = {"Bytes": base64.b64encode(path.read_bytes()).decode()}
        invoke("IndexFaces", {"CollectionId": "bench", "Image": image, "ExternalImageId": f"p{i}"})
    channel = {"SNSTopicArn": env["topic"], "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/video"}
    jobs = {}
    for source in sources:
        video = {"S3Object": {"Bucket": VIDEO_BUCKET, "Name": f"bench/{source}.mp4"}}
        jobs[f"FaceDetection ALL, {source} clip"] = ("StartFaceDetection", {"Video": video, "FaceAttributes": "ALL"})
        jobs[f"FaceSearch, {source} clip"] = ("StartFaceSearch", {"Video": video, "CollectionId": "bench"})
    warm = {"S3Object": {"Bucket": VIDEO_BUCKET, "Name": f"bench/{sources[0]}.mp4"}}
    run_job(env, meter, "StartFaceDetection", {"Video": warm, "NotificationChannel": channel})  # warm-up
    cold = cold_start_s()
    load = os.getloadavg()[0]
    results = {}
    for name, (api, request) in jobs.items():
        rows = run_job(env, meter, api, {**request, "NotificationChannel": channel})
        results[name] = {
            "rows": rows,
            "model": model(rows, args.seconds, args.memory, args.deploy_segment_s, cold, parallel),
        }
    report(results, args, parallel, load)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


def report(results: dict, args, parallel: list[int], load: float) -> None:
    print(
        f"\nVideo jobs on AWS, modelled from measured runs (this machine, load {load:.1f}; worker "
        f"{args.memory} MB arm64; bench segments {args.segment_s} s, modelled {args.deploy_segment_s} s)\n"
    )
    for name, r in results.items():
        rows, m = r["rows"], r["model"]
        segs = [x for x in rows if x["step"] == "segment"]
        per_s = [billed(x, args.memory) / x["video_s"] for x in segs]
        wall = sum(x["wall_s"] for x in segs) / sum(x["video_s"] for x in segs)
        print(f"{name}: {len(segs)} segments measured; billed s per second of video "
              f"{statistics.mean(per_s):.3f} (range {min(per_s):.3f}-{max(per_s):.3f}; CPU time; "
              f"wall time here {wall:.3f}); "
              f"fit {m['fixed_s']:.2f} s + {m['s_per_video_s']:.3f} s/s; plan {m['plan_s']:.2f} s, "
              f"assemble (1 h) {m['assemble_s']:.2f} s, cold start {m['cold_s']:.2f} s; "
              f"{rows[-1].get('items', 0)} items")  # fmt: skip
        print(f"  one hour = {m['segments']} segments of {args.deploy_segment_s} s, {m['segment_s']:.1f} s each")
        print("  | parallel segments | " + " | ".join(str(n) for n in parallel) + " |")
        print("  |---" * (len(parallel) + 1) + "|")
        print(f"  | wall time, 1 h, {args.deploy_segment_s} s segments | "
              + " | ".join(_duration(m["wall_s"][n]) for n in parallel) + " |")  # fmt: skip
        print(
            "  | wall time, 1 h, 30 s segments | "
            + " | ".join(_duration(m["wall_30s_segments"][n]) for n in parallel)
            + " |"
        )
        parts = ", ".join(f"{k} ${v:.5f}" for k, v in m["per_minute"].items())
        rek = PRICES_VIDEO["rekognition_video_minute"]
        print(f"  cost per video minute: ${m['per_minute_total']:.5f} ({parts}); Rekognition ${rek:.2f} "
              f"({rek / m['per_minute_total']:.0f}x)\n")  # fmt: skip


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
