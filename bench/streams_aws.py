#!/usr/bin/env python3
"""Stream processors on AWS: what one stream-hour of the stream consumer costs, from its measured
AWS requests per fragment, next to Rekognition's stream processor price.

    python bench/streams_aws.py [--repeat 8] [--fragment-s 1,2] [--memory 2048]

(The collection is empty: every sampled frame is searched, none matches; the search's S3 LISTs of
its segments are counted as measured.)

Measures (this machine; the real consumer handler, ``functions/stream_consumer.py``, in this
process; DynamoDB and Kinesis on moto; Kinesis Video is tests/kvs_fake.py):
1. a 1280x720 30 fps H.264 stream (libx264 veryfast, no B-frames, a key frame every fragment)
   made with PyAV from ../shared/videos' asl-book clip (one person signing, the face in every
   frame: every sampled frame is detected and searched and writes a record, the costly case),
   played --repeat times, served by the fake endpoint as GetMedia MKV fragments;
2. StartStreamProcessor through its API handler, then the consumer over the whole stream (one
   invocation; a second, the hand-over, resumes for the last fragments), then Stop;
3. every AWS request the consumer makes (botocore events), per fragment: DynamoDB reads and
   writes with their item sizes (-> request units), PutRecords with their records (-> 25 KB PUT
   payload units), GetMedia bytes; and the consumer's process CPU per second of video.

Model of a stream-hour (us-east-1 list prices, as docs/cost.md and bench/streams.py):
* Lambda: the consumer runs for the whole hour (it waits for live media), so it is billed
  memory x 3600 s whatever its CPU use, + 3600 / (900 - YIELD_MARGIN) invocations (the chain);
* DynamoDB: the measured request units per fragment x fragments per hour (--fragment-s: Kinesis
  Video producers cut fragments at key frames, typically every 1-2 s);
* S3: the segment LISTs / GETs of the collection's searches, per second of video;
* Kinesis Data Streams: PUT payload units per record x records per hour (the output stream's
  shard-hours are the user's, as with Rekognition, and not counted);
* Kinesis Video GetMedia: $0.0085 per GB consumed, at the measured bytes per second of video.
Rekognition: $0.12 per minute of streaming video face search (bench/streams.py cites it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("FACEBANK_ORT_THREADS", "1")

LAMBDA_GB_S = 0.0000133334  # arm64
LAMBDA_REQUEST = 0.20 / 1e6
DYNAMO_RRU = 0.125 / 1e6  # on-demand, per read request unit (4 KB strongly consistent)
DYNAMO_WRU = 0.625 / 1e6  # per write request unit (1 KB)
KDS_PUT_UNIT = 0.014 / 1e6  # per 25 KB PUT payload unit
S3_LIST = 0.005 / 1000  # LIST (the collection's segments, when the index refreshes)
S3_GET = 0.0004 / 1000
KVS_CONSUMED_GB = 0.0085
REKOGNITION_PER_MIN = 0.12
CLIP = "intel_asl-book.mp4"
REGION, ACCOUNT = "us-east-1", "000000000000"


class Meter:
    """AWS requests by (service, operation), with DynamoDB request units from the item sizes
    (a strongly consistent read: 1 RRU per 4 KB of item; a write: 1 WRU per 1 KB of the item as
    written, which for an UpdateItem is the whole item), Kinesis PUT payload units and records."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.rru = self.wru = self.put_units = 0.0
        self.records = 0
        self.item_bytes: list[int] = []  # sizes of the processor's item as read

    def __call__(self, params: dict, model, **_) -> None:
        key = f"{model.service_model.service_name}.{model.name}"
        self.requests[key] = self.requests.get(key, 0) + 1
        if key == "dynamodb.UpdateItem":
            written = len(json.dumps(params.get("ExpressionAttributeValues", {})))
            self.wru += max(1, math.ceil(max(written, self.item_bytes[-1] if self.item_bytes else 0) / 1024))
        elif key == "kinesis.PutRecords":
            for r in params["Records"]:
                self.records += 1
                self.put_units += max(1, math.ceil((len(r["Data"]) + len(r["PartitionKey"])) / 25_600))

    def read(self, parsed, **_) -> None:
        size = len(json.dumps(parsed.get("Item", {})))
        self.item_bytes.append(size)
        self.rru += max(1, math.ceil(size / 4096))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=8, help="plays of the 3.6 s clip (default 8: 29 s)")
    parser.add_argument("--fragment-s", default="1,2", help="fragment lengths to price (the bench uses 1 s)")
    parser.add_argument("--memory", type=int, default=2048, help="the consumer's memory (infra/streams.py)")
    args = parser.parse_args()

    import boto3
    from kvs_fake import FakeKinesisVideo, make_fragments
    from moto import mock_aws
    from support import SHARED
    from test_streams_aws import Clock, FakeLambda

    clip = SHARED / "videos" / CLIP
    if not clip.is_file():
        print(f"{clip} not found (set FACEBANK_SHARED)")
        return 1
    t0 = time.monotonic()
    fragments = make_fragments(clip, 1.0, size=(1280, 720), repeat=args.repeat)
    video_s = sum(f.frames for f in fragments) / 30.0
    media_bytes = sum(len(f.chunk(0)) for f in fragments)
    made = time.monotonic() - t0
    print(f"stream: {len(fragments)} fragments, {video_s:.1f} s of 1280x720 30 fps ({made:.0f} s to make)")

    from facebank.aws import runtime, stream_client, streams
    from facebank.storage.dynamodb import TableNames, create_tables
    from facebank.storage.dynamodb_streams import create_streams_table

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "FACEBANK_VECTOR_BUCKET": "bench-vectors",
        "FACEBANK_TABLE_PREFIX": "facebank-",
        "FACEBANK_ACCOUNT_ID": ACCOUNT,
        "FACEBANK_STREAM_CONSUMER_FUNCTION": "facebank-StreamConsumer",
        "POWERTOOLS_METRICS_NAMESPACE": "bench",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    with FakeKinesisVideo() as kvs, mock_aws():
        os.environ.update(env | {"AWS_ENDPOINT_URL_KINESIS_VIDEO": kvs.url})
        session = boto3.session.Session(region_name=REGION)
        boto3.DEFAULT_SESSION = session
        ddb = session.client("dynamodb")
        create_tables(ddb, TableNames.with_prefix("facebank-"))
        create_streams_table(ddb, "facebank-streams")
        session.client("s3").create_bucket(Bucket="bench-vectors")
        kinesis = session.client("kinesis")
        kinesis.create_stream(StreamName="out", ShardCount=1)
        out_arn = kinesis.describe_stream(StreamName="out")["StreamDescription"]["StreamARN"]
        stream = kvs.add_stream("camera", fragments)
        from test_aws_handlers import Recorder

        lam = FakeLambda(Recorder())
        stream_client.lambda_client = lambda settings: lam  # type: ignore[assignment]
        runtime.reset_shared_context()
        from test_aws_video import apigw_event, snake

        from facebank.aws.runtime import LocalContext

        def api(operation: str, request: dict) -> dict:
            import importlib

            handler = importlib.import_module(f"functions.{snake(operation)}").handler
            result = handler(apigw_event(operation, json.dumps(request)), LocalContext())
            assert result["statusCode"] == 200, result["body"]
            return json.loads(result["body"])

        meter = Meter()  # registered before any client exists: clients copy the session's handlers
        session.events.register("provide-client-params.*.*", meter, unique_id="bench-meter")
        session.events.register("after-call.dynamodb.GetItem", meter.read, unique_id="bench-size")
        api("CreateCollection", {"CollectionId": "bench"})
        api(
            "CreateStreamProcessor",
            {
                "Name": "camera",
                "Input": {"KinesisVideoStream": {"Arn": stream.arn}},
                "Output": {"KinesisDataStream": {"Arn": out_arn}},
                "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/bench",
                "Settings": {"FaceSearch": {"CollectionId": "bench"}},
            },
        )
        api(
            "StartStreamProcessor",
            {"Name": "camera", "StartSelector": {"KVSStreamStartSelector": {"FragmentNumber": fragments[0].number}}},
        )
        meter.__init__()  # the consumer's requests only
        streams.idle_sleep = lambda s: api("StopStreamProcessor", {"Name": "camera"})  # type: ignore[assignment]
        import functions.stream_consumer as consumer

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.monotonic()
        hop = lam.events[-1]
        first = consumer.handler(hop, Clock(len(fragments) - 2))
        second = consumer.handler(lam.events[-1], Clock(10_000))
        wall = time.monotonic() - wall0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        print(
            f"consumer: hop 0 {first['result']}, hop 1 {second['result']}; {wall:.1f} s wall, {cpu:.1f} s CPU "
            f"(incl. moto in this process) for {video_s:.1f} s of video: {cpu / video_s:.2f} CPU-s per video-s"
        )
    n = len(fragments)
    per_fragment = {k: v / n for k, v in sorted(meter.requests.items())}
    print("AWS requests per fragment: " + ", ".join(f"{k} {v:.2f}" for k, v in per_fragment.items()))
    print(
        f"DynamoDB per fragment: {meter.rru / n:.2f} RRU, {meter.wru / n:.2f} WRU; "
        f"records {meter.records} ({meter.records / video_s:.2f}/s), {meter.put_units / max(1, meter.records):.2f} "
        f"PUT units each; media {media_bytes / video_s / 1e6 * 8:.2f} Mbit/s"
    )
    from facebank.aws.streams import YIELD_MARGIN_MS

    gb = args.memory / 1024
    lam_hour = gb * 3600 * LAMBDA_GB_S + 3600 / (900 - YIELD_MARGIN_MS / 1000) * LAMBDA_REQUEST
    kds = meter.put_units / video_s * 3600 * KDS_PUT_UNIT
    kvs_cost = media_bytes / video_s * 3600 / 1e9 * KVS_CONSUMED_GB
    rek = REKOGNITION_PER_MIN * 60
    print(f"\nCost per stream-hour (consumer {args.memory} MB arm64, us-east-1) vs Rekognition ${rek:.2f}:")
    for fs in [float(x) for x in args.fragment_s.split(",")]:
        frags = 3600 / fs
        # Per-fragment requests scale with fragments; the measured 1 s fragments' per-fragment units hold.
        ddb_cost = frags * (meter.rru / n * DYNAMO_RRU + meter.wru / n * DYNAMO_WRU)
        s3_requests = (
            meter.requests.get("s3.ListObjectsV2", 0) * S3_LIST + meter.requests.get("s3.GetObject", 0) * S3_GET
        )
        s3_cost = s3_requests / video_s * 3600  # per search, i.e. per sampled frame: by video time
        total = lam_hour + ddb_cost + s3_cost + kds + kvs_cost
        print(
            f"  fragments of {fs:g} s: Lambda ${lam_hour:.4f} + DynamoDB ${ddb_cost:.4f} + S3 ${s3_cost:.4f} "
            f"+ Kinesis PUTs ${kds:.4f} "
            f"+ KVS GetMedia ${kvs_cost:.4f} = ${total:.4f} ({rek / total:.0f}x less than Rekognition)"
        )
    sizes = meter.item_bytes or [0]
    print(
        f"(median fragment {statistics.median(len(f.chunk(0)) for f in fragments) / 1e3:.0f} KB; the processor's "
        f"item with its checkpoint: median {statistics.median(sizes) / 1e3:.1f} KB, max {max(sizes) / 1e3:.1f} KB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
