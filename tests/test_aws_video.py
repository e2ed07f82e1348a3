"""Stored-video jobs on the AWS side, in this process on moto (S3, SQS, DynamoDB, SNS with an SQS
subscription, as Amazon's sample code sets it up).

Start*/Get* run through their Lambda handlers (``functions/<op>.py``) with API Gateway proxy
events; the video worker (``functions/video_worker.py``) is driven by a pump that receives from the
moto queues and calls the handler with SQS-shaped events, as Lambda's event source would: a
message the handler reports failed is made visible again (the backoff elapsed), and after three
receives moto moves it to the dead-letter queue, whose messages the pump delivers from there.
Every AWS call a handler makes is checked against its function's role in the synthesised template
(tests/test_aws_handlers.py), and every response against botocore's output shape.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from support import MODEL, check_shape, serialised_moto
from test_aws_handlers import (
    ACCOUNT,
    INGEST_BUCKET,
    REGION,
    TABLE_PREFIX,
    VECTOR_BUCKET,
    VIDEO_QUEUE,
    Recorder,
    check_calls_allowed,
)

VIDEO_BUCKET = INGEST_BUCKET  # videos come from a bucket the stack may read (the ingest bucket)
QUEUE, DLQ = VIDEO_QUEUE, "facebank-video-dead-letters"
TOPIC = "video-jobs-done"
PUMP_DEADLINE_S = 600.0  # a bound on a stuck pipeline, not a timing assertion


def snake(operation: str) -> str:
    import re

    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def apigw_event(operation: str, body: str) -> dict:
    return {
        "resource": f"/{operation}",
        "path": f"/{operation}",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/x-amz-json-1.1"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "stage": "v1",
            "resourcePath": f"/{operation}",
            "httpMethod": "POST",
            "identity": {"accessKey": "AKIDTEST", "caller": "AIDATEST", "user": "AIDATEST"},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def sqs_record(message: dict, queue_arn: str) -> dict:
    """A received SQS message as Lambda's event source hands it to the function."""
    attributes = message.get("Attributes", {})
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {
            "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
            "SentTimestamp": attributes.get("SentTimestamp", str(int(time.time() * 1000))),
            "SenderId": attributes.get("SenderId", "AIDATEST"),
            "ApproximateFirstReceiveTimestamp": attributes.get("ApproximateFirstReceiveTimestamp", "0"),
        },
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def _reset() -> None:
    """Forget the shared Context and the worker over it: the next call reads the settings again."""
    from facebank.aws import runtime, video

    runtime.reset_shared_context()
    video._worker = None


@dataclass
class Delivery:
    queue: str  # QUEUE or DLQ
    message: dict  # the decoded body
    receive_count: int
    failed: bool


@dataclass
class VideoAws:
    session: boto3.session.Session
    recorder: Recorder
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    topic_arn: str
    inbox_url: str  # the SQS queue subscribed to the topic
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def s3(self) -> Any:
        return self.session.client("s3")

    @property
    def sqs(self) -> Any:
        return self.session.client("sqs")

    @contextlib.contextmanager
    def configured(self, **env: str) -> Iterator[None]:
        """FACEBANK_* variables for the functions inside the block (a fresh shared Context reads them)."""
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.items():
                mp.setenv(name, value)
            _reset()
            try:
                yield
            finally:
                _reset()

    def _as(self, function: str, fn: Callable, *args: Any) -> Any:
        self.recorder.function = function
        try:
            return fn(*args)
        finally:
            self.recorder.function = None

    def api(self, operation: str, request: dict) -> tuple[int, dict]:
        """Call an operation's Lambda handler with an API Gateway proxy event."""
        from facebank.aws.runtime import LocalContext

        handler = importlib.import_module(f"functions.{snake(operation)}").handler
        event = apigw_event(operation, json.dumps(request))
        result = self._as(operation, handler, event, LocalContext(function_name=f"facebank-{operation}"))
        body = json.loads(result["body"])
        if result["statusCode"] == 200:
            check_shape(MODEL.operation_model(operation).output_shape, body, operation)
        else:
            assert set(body) == {"__type", "Message"} and body["Message"], body
        return result["statusCode"], body

    def start(self, operation: str, request: dict) -> str:
        status, body = self.api(operation, request)
        assert status == 200, body
        return body["JobId"]

    def deliver(self, queue_url: str, queue_arn: str, message: dict) -> bool:
        """Hand one received message to the worker; True if it succeeded (the event source then
        deletes it), else it is made visible again at once (the handler's backoff has elapsed)."""
        from facebank.aws.runtime import LocalContext

        handler = importlib.import_module("functions.video_worker").handler
        event = {"Records": [sqs_record(message, queue_arn)]}
        result = self._as("VideoWorker", handler, event, LocalContext(function_name="facebank-VideoWorker"))
        failed = bool(result["batchItemFailures"])
        count = int(message["Attributes"]["ApproximateReceiveCount"])
        name = QUEUE if queue_url == self.queue_url else DLQ
        self.deliveries.append(Delivery(name, json.loads(message["Body"]), count, failed))
        if failed:
            self.sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
        else:
            self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return not failed

    def steps(self, job_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.message.get("job_id") == job_id]

    def receive(self, queue_url: str) -> dict | None:
        messages = self.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=1, AttributeNames=["All"], WaitTimeSeconds=0
        ).get("Messages", [])
        return messages[0] if messages else None

    def pump(self, *job_ids: str) -> dict[str, Any]:
        """Run the worker on every message until both queues are empty and the jobs are finished;
        returns the jobs' records."""
        from facebank.aws.runtime import shared_context

        jobs = shared_context().storage.jobs
        deadline = time.monotonic() + PUMP_DEADLINE_S
        while time.monotonic() < deadline:
            for url, arn in ((self.queue_url, self.queue_arn), (self.dlq_url, self.dlq_arn)):
                message = self.receive(url)
                if message is not None:
                    self.deliver(url, arn, message)
                    break
            else:  # both queues empty
                records = {j: jobs.get_job(j) for j in job_ids}
                assert all(r is not None for r in records.values()), records
                if all(r.status != "IN_PROGRESS" for r in records.values()):
                    return records
                raise AssertionError(f"queues empty but jobs still in progress: {records}")
        raise AssertionError(f"jobs {job_ids} not finished within {PUMP_DEADLINE_S} s")

    def notifications(self) -> list[dict]:
        """Completion messages delivered to the topic's SQS subscriber (the SNS envelope's Message)."""
        out = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.inbox_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return out
            for m in messages:
                envelope = json.loads(m["Body"])
                assert envelope["Type"] == "Notification" and envelope["TopicArn"] == self.topic_arn
                out.append(json.loads(envelope["Message"]))
                self.sqs.delete_message(QueueUrl=self.inbox_url, ReceiptHandle=m["ReceiptHandle"])

    def put_video(self, key: str, data: bytes) -> dict:
        self.s3.put_object(Bucket=VIDEO_BUCKET, Key=key, Body=data)
        return {"S3Object": {"Bucket": VIDEO_BUCKET, "Name": key}}

    def channel(self) -> dict:
        return {"SNSTopicArn": self.topic_arn, "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/rekognition-video"}

    def check_iam(self) -> set[str]:
        return check_calls_allowed(self.recorder.take())


@pytest.fixture(scope="module")
def video_aws(model_env) -> Iterator[VideoAws]:
    from moto import mock_aws

    from facebank.aws import runtime
    from facebank.storage.dynamodb import TableNames, create_tables
    from facebank.storage.dynamodb_jobs import create_jobs_table

    with pytest.MonkeyPatch.context() as mp:
        serialised_moto(mp)
        for k, v in {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "FACEBANK_VECTOR_BUCKET": VECTOR_BUCKET,
            "FACEBANK_TABLE_PREFIX": TABLE_PREFIX,
            "FACEBANK_ACCOUNT_ID": ACCOUNT,
            "FACEBANK_NOTIFICATION_TOPICS": f"arn:aws:sns:{REGION}:{ACCOUNT}:*",
            "POWERTOOLS_METRICS_NAMESPACE": "facebank-test",
            "MOTO_ACCOUNT_ID": ACCOUNT,  # topics and queues in the account the functions run in
        }.items():
            mp.setenv(k, v)
        with mock_aws():
            session = boto3.session.Session(region_name=REGION)
            recorder = Recorder()
            session.events.register("provide-client-params.*.*", recorder, unique_id="facebank-video-recorder")
            mp.setattr(boto3, "DEFAULT_SESSION", session)
            ddb = session.client("dynamodb")
            create_tables(ddb, TableNames.with_prefix(TABLE_PREFIX))
            create_jobs_table(ddb, f"{TABLE_PREFIX}jobs")
            s3 = session.client("s3")
            for bucket in (VECTOR_BUCKET, VIDEO_BUCKET):
                s3.create_bucket(Bucket=bucket)
            sqs = session.client("sqs")
            dlq_url = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
            queue_url = sqs.create_queue(
                QueueName=QUEUE, Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": "1800"}
            )["QueueUrl"]
            queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            sns = session.client("sns")
            topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
            inbox_url = sqs.create_queue(QueueName="video-inbox")["QueueUrl"]
            inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox_url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=inbox_arn)
            mp.setenv("FACEBANK_VIDEO_QUEUE_URL", queue_url)
            runtime.reset_shared_context()
            recorder.take()
            env = VideoAws(session, recorder, queue_url, queue_arn, dlq_url, dlq_arn, topic_arn, inbox_url)
            _reset()
            try:
                yield env
            finally:
                runtime.reset_shared_context()


# --- videos made from ../shared/faces photos (tests/video_clips.py), exact ground truth


@pytest.fixture(scope="module")
def people() -> list[tuple[str, list]]:
    """Two identities with at least two dev photos each: (identity, [photo paths])."""
    from support import FACES, dev_people

    chosen = [(who, [FACES / p for p in photos]) for who, photos in dev_people().items() if len(photos) >= 2]
    if len(chosen) < 2:
        pytest.skip("need two identities with two dev photos in ../shared/faces")
    return chosen[:2]


def clip(*shown, duration_ms: int) -> bytes:
    from video_clips import make_clip

    return make_clip(list(shown), duration_ms=duration_ms)


def shown(photo, start_ms: int, end_ms: int, left: int = 200):
    from video_clips import Shown

    return Shown(photo, left=left, top=60, start_ms=start_ms, end_ms=end_ms)


def get_all(env: VideoAws, operation: str, job_id: str, member: str, **kw: Any) -> tuple[dict, list]:
    """Every item of a finished job, following NextToken; returns (first page, items)."""
    status, first = env.api(operation, {"JobId": job_id, "MaxResults": 7, **kw})
    assert status == 200, first
    items, page = list(first[member]), first
    while "NextToken" in page:
        status, page = env.api(operation, {"JobId": job_id, "MaxResults": 7, "NextToken": page["NextToken"], **kw})
        assert status == 200, page
        items += page[member]
    return first, items


def test_face_detection_job_runs_through_the_queue_and_notifies_its_topic(video_aws, people):
    env = video_aws
    (_, photos), _ = people
    video = env.put_video("detect/one.mp4", clip(shown(photos[0], 1000, 3000), duration_ms=4000))
    request = {"Video": video, "NotificationChannel": env.channel(), "JobTag": "detect-1", "ClientRequestToken": "t-1"}
    job_id = env.start("StartFaceDetection", request)
    assert env.start("StartFaceDetection", request) == job_id  # same token, same parameters: same job
    status, body = env.api("StartFaceDetection", {**request, "JobTag": "other"})
    assert (status, body["__type"]) == (400, "IdempotentParameterMismatchException")
    status, body = env.api("GetFaceDetection", {"JobId": job_id})
    assert status == 200 and body["JobStatus"] == "IN_PROGRESS"

    [job] = env.pump(job_id).values()
    assert job.status == "SUCCEEDED" and job.segments_total == 1
    first, faces = get_all(env, "GetFaceDetection", job_id, "Faces")
    assert first["JobStatus"] == "SUCCEEDED" and first["JobTag"] == "detect-1" and first["Video"] == video
    assert first["VideoMetadata"]["DurationMillis"] >= 3900 and first["VideoMetadata"]["FrameWidth"] == 640
    stamps = [f["Timestamp"] for f in faces]
    assert stamps == sorted(stamps) and stamps and 1000 <= min(stamps) <= 1200 and 2800 <= max(stamps) < 3000
    assert all(f["Face"]["Confidence"] > 90 for f in faces)
    [note] = env.notifications()
    assert note["JobId"] == job_id and note["Status"] == "SUCCEEDED" and note["API"] == "StartFaceDetection"
    assert note["JobTag"] == "detect-1" and note["Video"] == {
        "S3ObjectName": "detect/one.mp4",
        "S3Bucket": VIDEO_BUCKET,
    }
    assert [d.message["type"] for d in env.steps(job_id)] == ["plan", "segment", "assemble"]
    assert {"StartFaceDetection", "GetFaceDetection", "VideoWorker"} <= env.check_iam()


def test_multi_segment_face_search_joins_tracks_so_one_person_keeps_one_index(video_aws, people):
    env = video_aws
    (who, photos), (_, others) = people
    collection = f"video-{uuid.uuid4().hex[:8]}"
    assert env.api("CreateCollection", {"CollectionId": collection})[0] == 200
    status, indexed = env.api(
        "IndexFaces",
        {"CollectionId": collection, "Image": {"Bytes": _b64(photos[1].read_bytes())}, "ExternalImageId": who},
    )
    assert status == 200 and len(indexed["FaceRecords"]) == 1
    face_id = indexed["FaceRecords"][0]["Face"]["FaceId"]
    # The indexed person is on screen across both segment boundaries (2 s segments); someone else
    # (not in the collection) is beside them for a while.
    video = env.put_video(
        "search/three-segments.mp4",
        clip(shown(photos[0], 400, 5600, left=40), shown(others[0], 2400, 4000, left=360), duration_ms=6000),
    )
    with env.configured(FACEBANK_VIDEO_SEGMENT_S="2"):
        job_id = env.start(
            "StartFaceSearch", {"Video": video, "CollectionId": collection, "NotificationChannel": env.channel()}
        )
        [job] = env.pump(job_id).values()
    assert job.status == "SUCCEEDED" and job.segments_total == 3
    assert sorted(d.message.get("segment") for d in env.steps(job_id) if d.message["type"] == "segment") == [0, 1, 2]
    first, persons = get_all(env, "GetFaceSearch", job_id, "Persons")
    assert first["JobStatus"] == "SUCCEEDED" and first["VideoMetadata"]["DurationMillis"] >= 5900
    stamps = [p["Timestamp"] for p in persons]
    assert stamps == sorted(stamps)
    # Matched in all three segments, always as the same Person.Index, always the indexed face.
    assert min(stamps) < 2000 <= max(stamps) and any(2000 <= t < 4000 for t in stamps) and max(stamps) >= 4000
    assert len({p["Person"]["Index"] for p in persons}) == 1
    assert {m["Face"]["FaceId"] for p in persons for m in p["FaceMatches"]} == {face_id}
    _, by_index = get_all(env, "GetFaceSearch", job_id, "Persons", SortBy="INDEX")
    assert sorted(by_index, key=lambda p: p["Timestamp"]) == persons
    [note] = env.notifications()
    assert (note["JobId"], note["Status"], note["API"]) == (job_id, "SUCCEEDED", "StartFaceSearch")
    assert {"StartFaceSearch", "GetFaceSearch", "VideoWorker", "IndexFaces"} <= env.check_iam()


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def test_a_segment_failing_three_times_ends_the_job_failed_from_the_dead_letter_queue(video_aws, people, monkeypatch):
    from facebank.operations import video_jobs

    env = video_aws
    (_, photos), _ = people
    analyse = video_jobs.analyse_segment

    def segment_one_breaks(job, segment, start_ms, end_ms, ctx, *args):
        if segment == 1:
            raise OSError("simulated: the worker lost its connection mid-segment")
        return analyse(job, segment, start_ms, end_ms, ctx, *args)

    monkeypatch.setattr(video_jobs, "analyse_segment", segment_one_breaks)
    video = env.put_video("fail/two-segments.mp4", clip(shown(photos[0], 0, 3600), duration_ms=4000))
    with env.configured(FACEBANK_VIDEO_SEGMENT_S="2"):
        job_id = env.start("StartFaceDetection", {"Video": video, "NotificationChannel": env.channel()})
        [job] = env.pump(job_id).values()
    assert job.status == "FAILED" and job.segments_done == {0}
    assert "segment 1" in job.status_message and "after 3 attempts" in job.status_message
    tries = [(d.queue, d.receive_count, d.failed) for d in env.steps(job_id) if d.message.get("segment") == 1]
    assert tries == [(QUEUE, 1, True), (QUEUE, 2, True), (QUEUE, 3, True), (DLQ, 4, False)]
    assert "assemble" not in [d.message["type"] for d in env.steps(job_id)]
    status, body = env.api("GetFaceDetection", {"JobId": job_id})
    assert status == 200 and body["JobStatus"] == "FAILED" and body["StatusMessage"] == job.status_message
    assert body["Faces"] == []
    [note] = env.notifications()
    assert (note["JobId"], note["Status"]) == (job_id, "FAILED")
    # The freed slot: the in-progress counter is back where it was.
    assert all(j.job_id != job_id for j in _jobs().active_jobs())
    # Each failure asked SQS for a short backoff rather than the 30-minute visibility timeout.
    delays = [c[3]["VisibilityTimeout"] for c in env.recorder.calls if c[2] == "ChangeMessageVisibility"]
    assert delays == [30, 60, 120]
    assert "VideoWorker" in env.check_iam()


def test_a_file_that_is_not_a_video_fails_its_job_at_once_with_the_reason(video_aws):
    env = video_aws
    video = env.put_video("bad/not-a-video.mp4", b"this is a text file, not an MP4 " * 100)
    job_id = env.start("StartFaceDetection", {"Video": video, "NotificationChannel": env.channel()})
    [job] = env.pump(job_id).values()
    assert job.status == "FAILED" and job.status_message
    assert [(d.message["type"], d.failed) for d in env.steps(job_id)] == [("plan", False)]  # no retries
    status, body = env.api("GetFaceDetection", {"JobId": job_id})
    assert status == 200 and (body["JobStatus"], body["StatusMessage"]) == ("FAILED", job.status_message)
    [note] = env.notifications()
    assert (note["JobId"], note["Status"]) == (job_id, "FAILED")
    env.check_iam()


def test_concurrent_jobs_are_limited_and_a_finished_job_frees_its_slot(video_aws, people):
    env = video_aws
    (_, photos), _ = people
    video = env.put_video("limit/short.mp4", clip(shown(photos[0], 0, 1000), duration_ms=1000))
    with env.configured(FACEBANK_MAX_VIDEO_JOBS="2"):
        first = [env.start("StartFaceDetection", {"Video": video}) for _ in range(2)]
        status, body = env.api("StartFaceDetection", {"Video": video})
        assert (status, body["__type"]) == (400, "LimitExceededException")
        env.pump(*first)
        third = env.start("StartFaceDetection", {"Video": video})
        [job] = env.pump(third).values()
    assert job.status == "SUCCEEDED"
    env.check_iam()


def test_retried_and_duplicated_segments_count_once_and_change_nothing(video_aws, people):
    env = video_aws
    (_, photos), _ = people
    video = env.put_video("retry/two-segments.mp4", clip(shown(photos[0], 500, 3500), duration_ms=4000))
    with env.configured(FACEBANK_VIDEO_SEGMENT_S="2"):
        reference = env.start("StartFaceDetection", {"Video": video})
        env.pump(reference)
        job_id = env.start("StartFaceDetection", {"Video": video, "NotificationChannel": env.channel()})
        plan = env.receive(env.queue_url)
        assert env.deliver(env.queue_url, env.queue_arn, plan)
        segments = [env.receive(env.queue_url) for _ in range(2)]
        assert {json.loads(m["Body"])["segment"] for m in segments} == {0, 1}
        # SQS delivers at least once: segment 0 arrives twice (a second copy), and is retried after
        # its first run succeeded but before its deletion (a worker timed out).
        zero = next(m for m in segments if json.loads(m["Body"])["segment"] == 0)
        env.sqs.send_message(QueueUrl=env.queue_url, MessageBody=zero["Body"])
        assert env.deliver(env.queue_url, env.queue_arn, zero)
        duplicate = env.receive(env.queue_url)
        assert json.loads(duplicate["Body"]) == json.loads(zero["Body"])
        assert env.deliver(env.queue_url, env.queue_arn, duplicate)
        job = _jobs().get_job(job_id)
        assert (job.segments_done, job.segments_total, job.status) == ({0}, 2, "IN_PROGRESS")
        one = next(m for m in segments if m is not zero)
        env.sqs.change_message_visibility(
            QueueUrl=env.queue_url, ReceiptHandle=one["ReceiptHandle"], VisibilityTimeout=0
        )
        [job] = env.pump(job_id).values()
    assert job.status == "SUCCEEDED" and job.segments_done == {0, 1}
    _, expected = get_all(env, "GetFaceDetection", reference, "Faces")
    _, got = get_all(env, "GetFaceDetection", job_id, "Faces")
    assert got == expected and got
    assert len([n for n in env.notifications() if n["JobId"] == job_id]) == 1
    env.check_iam()


def test_start_refuses_topics_outside_the_configured_patterns_and_get_unknown_jobs(video_aws, people):
    env = video_aws
    video = env.put_video("refuse/clip.mp4", b"\x00" * 100)
    outside = {"SNSTopicArn": "arn:aws:sns:us-east-1:999999999999:theirs", "RoleArn": env.channel()["RoleArn"]}
    status, body = env.api("StartFaceDetection", {"Video": video, "NotificationChannel": outside})
    assert (status, body["__type"]) == (400, "InvalidParameterException") and "999999999999" in body["Message"]
    status, body = env.api("StartFaceDetection", {"Video": {"S3Object": {"Bucket": VIDEO_BUCKET, "Name": "nope.mp4"}}})
    assert (status, body["__type"]) == (400, "InvalidS3ObjectException")
    status, body = env.api("StartFaceSearch", {"Video": video, "CollectionId": "no-such-collection"})
    assert (status, body["__type"]) == (400, "ResourceNotFoundException")
    for operation in ("GetFaceDetection", "GetFaceSearch"):
        status, body = env.api(operation, {"JobId": uuid.uuid4().hex})
        assert (status, body["__type"]) == (400, "ResourceNotFoundException")
    env.check_iam()


def _jobs() -> Any:
    from facebank.aws.runtime import shared_context

    return shared_context().storage.jobs


class HandlerRekognition:
    """The sample's ``rekognition_client`` on the AWS side: each call is its operation's Lambda
    handler with an API Gateway event; Start* then lets the worker drain the video queue (the pump),
    as the deployed event source would while the sample waits for its notification."""

    def __init__(self, env: VideoAws):
        self.env = env

    def _call(self, operation: str, request: dict) -> dict:
        status, body = self.env.api(operation, request)
        assert status == 200, body
        return body

    def start_face_detection(self, **request: Any) -> dict:
        body = self._call("StartFaceDetection", request)
        self.env.pump(body["JobId"])
        return body

    def get_face_detection(self, **request: Any) -> dict:
        return self._call("GetFaceDetection", request)


def test_amazons_sample_flow_gets_real_face_detections_from_the_aws_handlers(video_aws):
    """RekognitionVideo.do_face_detection (tests/video_sample_flow.py) with its own SNS topic, SQS
    queue and IAM role, made by the sample's calls, on a real clip with two faces in every frame."""
    from support import SHARED
    from video_sample_flow import SampleVideoFlow

    clip_path = SHARED / "videos" / "intel_head-pose-face-detection-female-and-male.mp4"
    if not clip_path.is_file():
        pytest.skip(f"{clip_path} not found (set FACEBANK_SHARED to the shared/ folder)")
    env = video_aws
    video = env.put_video(clip_path.name, clip_path.read_bytes())
    flow = SampleVideoFlow(video, clip_path.name, HandlerRekognition(env))
    session = env.session
    flow.create_notification_channel(
        "doc-example-video-rekognition", session.resource("iam"), session.resource("sns"), session.resource("sqs")
    )
    faces = flow.do_face_detection()
    by_time: dict[int, int] = {}
    for face in faces:
        by_time[face.timestamp] = by_time.get(face.timestamp, 0) + 1
        assert face.bounding_box and face.confidence > 50 and len(face.landmarks) == 5
    assert len(by_time) >= 16 and set(by_time.values()) == {2}  # 4.5 s at 4 fps, two people throughout
    assert [f.timestamp for f in faces] == sorted(f.timestamp for f in faces)
    assert {"StartFaceDetection", "GetFaceDetection", "VideoWorker"} <= env.check_iam()
