"""NotificationChannel's default topic policy: with no FACEBANK_NOTIFICATION_TOPICS, `facebank
serve` publishes only to topics of the account its own credentials belong to, in its region."""

from __future__ import annotations

import dataclasses
import json

import pytest
from support import embedded_ctx, serialised_moto
from video_clips import make_clip

from facebank.protocol import dispatch

BUCKET = "clips"


@pytest.fixture
def ctx(tmp_path):
    import boto3
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        serialised_moto(mp)
        with mock_aws():
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)
            s3.put_object(Bucket=BUCKET, Key="clip.mp4", Body=make_clip([], duration_ms=400, fps=5))
            context = embedded_ctx(tmp_path / "data")
            context.submit_video_job = lambda job: None  # type: ignore[method-assign, assignment]
            yield context


def start(ctx, topic: str) -> tuple[int, dict]:
    request = {
        "Video": {"S3Object": {"Bucket": BUCKET, "Name": "clip.mp4"}},
        "NotificationChannel": {"SNSTopicArn": topic, "RoleArn": "arn:aws:iam::123456789012:role/publish"},
    }
    response = dispatch("StartFaceDetection", json.dumps(request).encode(), ctx)
    return response.status, json.loads(response.body)


def test_default_allows_only_the_publishers_own_topics(ctx):
    # moto's credentials belong to account 123456789012.
    status, body = start(ctx, "arn:aws:sns:us-east-1:444455556666:elsewhere")
    assert status == 400 and body["__type"] == "InvalidParameterException"
    assert "arn:aws:sns:us-east-1:123456789012:*" in body["Message"]
    status, body = start(ctx, "arn:aws:sns:eu-west-1:123456789012:other-region")
    assert status == 400 and body["__type"] == "InvalidParameterException"
    status, body = start(ctx, "arn:aws:sns:us-east-1:123456789012:mine")
    assert status == 200 and body["JobId"]


def test_an_explicit_list_replaces_the_default(ctx):
    ctx.settings = dataclasses.replace(ctx.settings, notification_topics=("*",))
    status, body = start(ctx, "arn:aws:sns:us-east-1:444455556666:elsewhere")
    assert status == 200 and body["JobId"]
