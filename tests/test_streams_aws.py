"""Stream processors on the AWS side, in this process: the operations' Lambda handlers with API
Gateway events, the consumer's handler (``functions/stream_consumer.py``) with the events Lambda
would give it, DynamoDB and Kinesis Data Streams on moto, and the fake Kinesis Video endpoint
(tests/kvs_fake.py: real H.264 MKV fragments made from a clip of ../shared/videos, with the tags
Kinesis Video sends) reached through ``AWS_ENDPOINT_URL_KINESIS_VIDEO``.

Lambda itself is a stand-in: the asynchronous invocations (StartStreamProcessor's, and the
consumer's hand-over to its next run) are recorded, and the test runs each one by calling the
handler, as Lambda would, with a context whose remaining time it controls. Every AWS call the
handlers make is checked against their functions' roles in the synthesised template, and every
record read back from the output stream against the documented record shape.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from kvs_fake import BASE_PRODUCER_TIME, FakeKinesisVideo, FakeStream, make_fragments
from support import SHARED
from test_aws_handlers import ACCOUNT, REGION, TABLE_PREFIX, VECTOR_BUCKET, Recorder, iam_pairs
from test_aws_video import apigw_event, snake

from facebank.aws.observability import LocalContext

CLIP = SHARED / "videos" / "intel_asl-book.mp4"  # one person signing, face visible in every frame, 3.6 s
FRAGMENT_S = 0.5  # a key frame every 0.5 s: 8 fragments, so a hand-over falls in the middle
CONSUMER = "facebank-StreamConsumer"
OUTPUT = "faces-out"


class Clock(LocalContext):
    """A Lambda context whose remaining time is plenty for ``calls`` questions, then nearly none."""

    def __init__(self, calls: int):
        super().__init__(function_name=CONSUMER)
        self.calls = calls

    def get_remaining_time_in_millis(self) -> int:
        self.calls -= 1
        return 900_000 if self.calls >= 0 else 1_000


@dataclass
class FakeLambda:
    """The Lambda client of stream_client: records asynchronous invocations as Lambda queues them."""

    recorder: Recorder
    events: list[dict] = field(default_factory=list)

    def invoke(self, **params: Any) -> dict:
        assert params["InvocationType"] == "Event"
        if self.recorder.function is not None:
            self.recorder.calls.append((self.recorder.function, "lambda", "Invoke", params))
        self.events.append(json.loads(params["Payload"]))
        return {"StatusCode": 202}


@dataclass
class StreamsAws:
    session: boto3.session.Session
    recorder: Recorder
    kvs: FakeKinesisVideo
    lam: FakeLambda
    output_arn: str
    idle: list[Callable[[], None]] = field(default_factory=list)  # what happens at the consumer's idle waits

    def _as(self, function: str, fn: Callable, *args: Any) -> Any:
        self.recorder.function = function
        try:
            return fn(*args)
        finally:
            self.recorder.function = None

    def api(self, operation: str, request: dict) -> tuple[int, dict]:
        handler = importlib.import_module(f"functions.{snake(operation)}").handler
        event = apigw_event(operation, json.dumps(request))
        result = self._as(operation, handler, event, LocalContext(function_name=f"facebank-{operation}"))
        return result["statusCode"], json.loads(result["body"])

    def ok(self, operation: str, request: dict) -> dict:
        status, body = self.api(operation, request)
        assert status == 200, (operation, body)
        return body

    def consume(self, event: dict, calls: int = 10_000) -> dict:
        """One invocation of the consumer, as Lambda would make it."""
        handler = importlib.import_module("functions.stream_consumer").handler
        return self._as("StreamConsumer", handler, event, Clock(calls))

    def describe(self, name: str) -> dict:
        return self.ok("DescribeStreamProcessor", {"Name": name})

    def records(self) -> list[dict]:
        kinesis = self.session.client("kinesis")
        out = []
        for shard in kinesis.list_shards(StreamARN=self.output_arn)["Shards"]:
            iterator = kinesis.get_shard_iterator(
                StreamARN=self.output_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                page = kinesis.get_records(StreamARN=self.output_arn, ShardIterator=iterator, Limit=1000)
                out += [json.loads(r["Data"]) for r in page["Records"]]
                iterator = page.get("NextShardIterator") if page["Records"] else None
        return out

    def create(self, name: str, stream: FakeStream, collection: str) -> None:
        self.ok(
            "CreateStreamProcessor",
            {
                "Name": name,
                "Input": {"KinesisVideoStream": {"Arn": stream.arn}},
                "Output": {"KinesisDataStream": {"Arn": self.output_arn}},
                "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/RekognitionStreams",
                "Settings": {"FaceSearch": {"CollectionId": collection, "FaceMatchThreshold": 80.0}},
            },
        )


@pytest.fixture(scope="module")
def fragments() -> tuple:
    if not CLIP.is_file():
        pytest.skip(f"{CLIP} not found (set FACEBANK_SHARED to the shared/ folder)")
    return make_fragments(CLIP, FRAGMENT_S)


@pytest.fixture(scope="module")
def aws_streams(model_env, fragments) -> Iterator[StreamsAws]:
    from moto import mock_aws

    from facebank.aws import runtime, stream_client, streams
    from facebank.storage.dynamodb import TableNames, create_tables
    from facebank.storage.dynamodb_streams import create_streams_table

    with FakeKinesisVideo() as kvs, pytest.MonkeyPatch.context() as mp:
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "FACEBANK_VECTOR_BUCKET": VECTOR_BUCKET,
            "FACEBANK_TABLE_PREFIX": TABLE_PREFIX,
            "FACEBANK_ACCOUNT_ID": ACCOUNT,
            "FACEBANK_STREAM_CONSUMER_FUNCTION": CONSUMER,
            "AWS_ENDPOINT_URL_KINESIS_VIDEO": kvs.url,
            "POWERTOOLS_METRICS_NAMESPACE": "facebank-test",
        }
        for k, v in env.items():
            mp.setenv(k, v)
        with mock_aws():
            session = boto3.session.Session(region_name=REGION)
            recorder = Recorder()
            session.events.register("provide-client-params.*.*", recorder, unique_id="facebank-streams-recorder")
            mp.setattr(boto3, "DEFAULT_SESSION", session)
            ddb = session.client("dynamodb")
            create_tables(ddb, TableNames.with_prefix(TABLE_PREFIX))
            create_streams_table(ddb, f"{TABLE_PREFIX}streams")
            session.client("s3").create_bucket(Bucket=VECTOR_BUCKET)
            kinesis = session.client("kinesis")
            kinesis.create_stream(StreamName=OUTPUT, ShardCount=1)
            output_arn = kinesis.describe_stream(StreamName=OUTPUT)["StreamDescription"]["StreamARN"]
            lam = FakeLambda(recorder)
            mp.setattr(stream_client, "lambda_client", lambda settings: lam)
            env_ = StreamsAws(session, recorder, kvs, lam, output_arn)

            def idle_sleep(seconds: float) -> None:
                assert env_.idle, "the consumer waited for media with nothing left to happen"
                env_.idle.pop(0)()

            mp.setattr(streams, "idle_sleep", idle_sleep)
            runtime.reset_shared_context()
            recorder.take()
            try:
                yield env_
            finally:
                runtime.reset_shared_context()


def jpeg(rgb: Any) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=92)
    return out.getvalue()


def check_record(record: dict, stream_arn: str) -> None:
    """The developer guide's "Reference: Kinesis face recognition record", field by field."""
    assert set(record) == {"InputInformation", "StreamProcessorInformation", "FaceSearchResponse"}
    video = record["InputInformation"]["KinesisVideo"]
    assert set(video) == {"StreamArn", "FragmentNumber", "ServerTimestamp", "ProducerTimestamp", "FrameOffsetInSeconds"}
    assert video["StreamArn"] == stream_arn and isinstance(video["FragmentNumber"], str)
    for key in ("ServerTimestamp", "ProducerTimestamp", "FrameOffsetInSeconds"):
        assert isinstance(video[key], int | float) and not isinstance(video[key], bool), key
    assert record["StreamProcessorInformation"] == {"Status": "RUNNING"}
    assert record["FaceSearchResponse"], "a record is written only for a frame with faces"
    for face in record["FaceSearchResponse"]:
        detected = face["DetectedFace"]
        assert set(detected) == {"BoundingBox", "Confidence", "Landmarks", "Pose", "Quality"}
        assert set(detected["BoundingBox"]) == {"Width", "Height", "Left", "Top"}
        assert set(detected["Pose"]) == {"Pitch", "Roll", "Yaw"}
        assert set(detected["Quality"]) == {"Brightness", "Sharpness"}
        assert all(set(mark) == {"Type", "X", "Y"} for mark in detected["Landmarks"])
        for match in face["MatchedFaces"]:
            assert set(match) == {"Similarity", "Face"}
            assert {"BoundingBox", "FaceId", "Confidence", "ImageId"} <= set(match["Face"])


def consumer_iam(template: dict, calls: list) -> None:
    """Every call the handlers made is allowed by their functions' roles in the template."""
    from test_infra import EXTRA_FUNCTIONS, grants

    def pairs(service: str, operation: str, params: dict) -> set[tuple[str, str]]:
        if service == "kinesisvideo":
            return {(f"kinesisvideo:{operation}", "video-streams")}
        if service == "kinesis-video-media":
            assert operation == "GetMedia", operation
            return {("kinesisvideo:GetMedia", "video-streams")}
        if service == "kinesis":
            assert params["StreamARN"].startswith(f"arn:aws:kinesis:{REGION}:"), params
            return {(f"kinesis:{operation}", "data-streams")}
        if service == "lambda":
            assert params["FunctionName"] == CONSUMER, params
            return {("lambda:InvokeFunction", "stream-consumer")}
        return iam_pairs(service, operation, params)

    missing: dict[str, set] = {}
    for function, service, operation, params in calls:
        handler = EXTRA_FUNCTIONS.get(function) or f"functions.{snake(function)}.handler"
        if lacking := pairs(service, operation, params) - grants(template, handler):
            missing.setdefault(function, set()).update(lacking)
    assert not missing, f"calls not granted to the function's role: {missing}"


def test_a_known_face_is_found_across_a_hand_over_that_loses_and_repeats_no_fragment(aws_streams, fragments):
    from facebank.engine.mkv import read_fragments

    env = aws_streams
    stream = env.kvs.add_stream("front-door", fragments)
    env.ok("CreateCollection", {"CollectionId": "household"})
    # The person's face, from a frame of the clip's last fragment.
    last = fragments[-1]
    [decoded] = read_fragments(io.BytesIO(last.chunk(0)))
    frames = list(decoded.frames)
    image = base64.b64encode(jpeg(frames[len(frames) // 2][1])).decode()
    request = {"CollectionId": "household", "Image": {"Bytes": image}, "ExternalImageId": "signer", "MaxFaces": 1}
    indexed = env.ok("IndexFaces", request)
    face_id = indexed["FaceRecords"][0]["Face"]["FaceId"]
    env.create("door", stream, "household")
    start = {"KVSStreamStartSelector": {"ProducerTimestamp": int(BASE_PRODUCER_TIME * 1000)}}
    assert env.ok("StartStreamProcessor", {"Name": "door", "StartSelector": start})["SessionId"]
    assert env.describe("door")["Status"] == "STARTING"
    [first] = env.lam.events
    assert first == {"name": "door", "session": first["session"], "hop": 0}

    # Hop 0: time for 3 fragments, then it hands over (between fragments) and returns.
    assert env.consume(first, calls=3)["result"] == "yield"
    assert env.describe("door")["Status"] == "RUNNING"
    second = env.lam.events[-1]
    assert second == {**first, "hop": 1}
    seen = {r["InputInformation"]["KinesisVideo"]["FragmentNumber"] for r in env.records()}
    assert 0 < len(seen) < len(fragments)  # the hand-over is in the middle of the clip
    # Hop 1 resumes after the checkpointed fragment; when the stream has nothing more, Stop comes.
    env.idle.append(lambda: env.ok("StopStreamProcessor", {"Name": "door"}))
    assert env.consume(second)["result"] == "stopped"
    assert env.describe("door")["Status"] == "STOPPED" and not env.idle
    # Hop 0 from the request's selector; hop 1 from its checkpoint (not NOW, not the start again).
    checkpointed = stream.get_media_calls[1]["AfterFragmentNumber"]
    assert stream.get_media_calls[0] == {"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": 1790000000}
    assert stream.get_media_calls[1] == {"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": checkpointed}
    assert checkpointed in seen and checkpointed != fragments[-1].number

    records = env.records()
    for record in records:
        check_record(record, stream.arn)
    videos = [r["InputInformation"]["KinesisVideo"] for r in records]
    assert sorted({v["FragmentNumber"] for v in videos}) == [f.number for f in fragments]  # none lost
    keys = [(v["FragmentNumber"], v["FrameOffsetInSeconds"]) for v in videos]
    assert len(keys) == len(set(keys))  # no frame analysed twice
    # One sampling clock across the hand-over: samples a multiple of 1/4 s apart (+- a frame at
    # 30 fps; a multiple when a sampled frame had no face detected), mostly exactly one step.
    times = sorted(v["ProducerTimestamp"] + v["FrameOffsetInSeconds"] for v in videos)
    steps = [(b - a) / 0.25 for a, b in zip(times, times[1:], strict=False)]
    assert all(round(k) >= 1 and abs(k - round(k)) <= 0.034 / 0.25 for k in steps), steps
    assert sum(round(k) == 1 for k in steps) >= 0.8 * len(steps)
    by_fragment = {f.number: f for f in fragments}
    for record in records:
        video = record["InputInformation"]["KinesisVideo"]
        sent = by_fragment[video["FragmentNumber"]]
        assert video["ProducerTimestamp"] == pytest.approx(sent.producer_timestamp, abs=1e-3)
        assert video["ServerTimestamp"] == pytest.approx(sent.server_timestamp, abs=1e-3)
    matched = [m for r in records for f in r["FaceSearchResponse"] for m in f["MatchedFaces"]]
    assert matched and {m["Face"]["FaceId"] for m in matched} == {face_id}
    assert all(m["Similarity"] >= 80 and m["Face"]["ExternalImageId"] == "signer" for m in matched)
    # Found in the fragments before the one the face was indexed from, not only in it.
    found = {
        r["InputInformation"]["KinesisVideo"]["FragmentNumber"]
        for r in records
        if any(f["MatchedFaces"] for f in r["FaceSearchResponse"])
    }
    assert len(found - {last.number}) >= len(fragments) // 2

    from test_infra import synth

    consumer_iam(synth()[0], env.recorder.take())


def test_a_stream_that_disappears_or_never_existed_ends_failed(aws_streams, fragments):
    env = aws_streams
    env.ok("CreateCollection", {"CollectionId": "gone"})
    stream = env.kvs.add_stream("porch", fragments, delete_after=fragments[2].number)
    env.create("porch", stream, "gone")
    start = {"KVSStreamStartSelector": {"FragmentNumber": fragments[0].number}}
    env.ok("StartStreamProcessor", {"Name": "porch", "StartSelector": start})
    assert env.consume(env.lam.events[-1])["result"] == "failed"
    described = env.describe("porch")
    assert described["Status"] == "FAILED"
    assert "was not found" in described["StatusMessage"] and stream.arn in described["StatusMessage"]
    assert stream.get_media_calls[0] == {
        "StartSelectorType": "FRAGMENT_NUMBER",
        "AfterFragmentNumber": fragments[0].number,
    }

    missing = FakeStream("never", [])
    env.create("nowhere", missing, "gone")
    env.ok("StartStreamProcessor", {"Name": "nowhere"})
    assert env.consume(env.lam.events[-1])["result"] == "failed"
    described = env.describe("nowhere")
    assert described["Status"] == "FAILED" and "was not found" in described["StatusMessage"]
    # It can be started again once the input is back.
    assert env.ok("StartStreamProcessor", {"Name": "nowhere"})["SessionId"]
    from test_infra import synth

    consumer_iam(synth()[0], env.recorder.take())


def test_a_crashed_chain_ends_failed_from_the_failure_queue_and_stop_is_honoured(aws_streams, fragments):
    from facebank.aws.streams import LeasedStreams

    env = aws_streams
    env.ok("CreateCollection", {"CollectionId": "crash"})
    stream = env.kvs.add_stream("garage", fragments)
    env.create("garage", stream, "crash")
    env.ok("StartStreamProcessor", {"Name": "garage"})
    event = env.lam.events[-1]

    def dead_letter(payload: dict) -> dict:
        body = {
            "version": "1.0",
            "requestContext": {"requestId": "r", "condition": "RetriesExhausted", "approximateInvokeCount": 3},
            "requestPayload": payload,
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": "Task timed out after 900.00 seconds"},
        }
        return {"Records": [{"messageId": "m", "body": json.dumps(body), "eventSource": "aws:sqs"}]}

    # Lambda gave up on an invocation (its retries exhausted): the processor does not stay STARTING.
    assert env.consume(dead_letter(event))["dead_letters"] == 1
    described = env.describe("garage")
    assert described["Status"] == "FAILED" and "Task timed out" in described["StatusMessage"]
    # A dead letter of an older session changes nothing in a newer one.
    env.ok("StartStreamProcessor", {"Name": "garage"})
    newer = env.lam.events[-1]
    env.consume(dead_letter(event))
    assert env.describe("garage")["Status"] == "STARTING"
    # Stop before the consumer ran: its invocation settles it STOPPED without reading the stream.
    env.ok("StopStreamProcessor", {"Name": "garage"})
    calls = len(stream.get_media_calls)
    assert env.consume(newer)["result"] == "stopped"
    assert env.describe("garage")["Status"] == "STOPPED" and len(stream.get_media_calls) == calls

    # The lease: a late copy of an earlier hop never takes the session back; a duplicate of the
    # same hop takes it over, and the first copy stops at its next checkpoint.
    env.ok("StartStreamProcessor", {"Name": "garage"})
    session = env.lam.events[-1]["session"]
    from facebank.aws.runtime import shared_context

    store = shared_context().storage.streams
    hop1 = LeasedStreams(store, "garage", session, 1)
    assert hop1.claim() == {"session": session}
    assert LeasedStreams(store, "garage", session, 0).claim() is None
    twin = LeasedStreams(store, "garage", session, 1)
    assert twin.claim() is not None
    assert not hop1.put_checkpoint("garage", session, {"session": session, "fragment": "1"})
    assert twin.put_checkpoint("garage", session, {"session": session, "fragment": "1"})
    assert store.get_checkpoint("garage")["fragment"] == "1"
    assert env.consume({**env.lam.events[-1], "hop": 0})["result"] == "lost"


def test_get_media_limits_are_waited_out(aws_streams, fragments):
    env = aws_streams
    env.ok("CreateCollection", {"CollectionId": "busy"})
    stream = env.kvs.add_stream("driveway", fragments[:2], throttle=2)
    env.create("driveway", stream, "busy")
    env.ok(
        "StartStreamProcessor",
        {"Name": "driveway", "StartSelector": {"KVSStreamStartSelector": {"FragmentNumber": fragments[0].number}}},
    )
    waits: list[str] = []
    env.idle += [lambda: waits.append("throttled"), lambda: waits.append("throttled")]
    env.idle.append(lambda: env.ok("StopStreamProcessor", {"Name": "driveway"}))
    assert env.consume(env.lam.events[-1])["result"] == "stopped"
    assert waits == ["throttled", "throttled"] and not env.idle
    assert len(stream.get_media_calls) >= 3
    done = {
        r["InputInformation"]["KinesisVideo"]["FragmentNumber"]
        for r in env.records()
        if r["InputInformation"]["KinesisVideo"]["StreamArn"] == stream.arn
    }
    assert done == {f.number for f in fragments[:2]}
