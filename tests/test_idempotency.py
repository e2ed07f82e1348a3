"""ClientRequestToken under concurrency (facebank.operations.idempotency): callers racing with one
token get one answer and create one job, on both adapters (SQLite; DynamoDB + S3 under moto) and
through a real ``facebank serve`` with boto3 (issue 23, point 6)."""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from support import Server, serialised_moto, settings

from facebank import protocol
from facebank.operations import Context
from facebank.storage import Storage, open_embedded

CALLERS = 8
NOT_YET_A_VIDEO = b"\x00\x00\x00\x18ftypmp42"  # HeadObject is all Start* reads; the job fails later


@dataclass
class Stack:
    storage: Storage
    s3: Any
    bucket: str


@pytest.fixture
def moto_aws() -> Iterator[Any]:
    """S3 (the videos Start* checks) and, for the "aws" adapter, DynamoDB, its dispatch serialised
    as real DynamoDB applies each request atomically. Per test: mock_aws intercepts every botocore
    call in the process, which the test through `facebank serve` must not meet."""
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        serialised_moto(mp)
        with mock_aws():
            yield boto3.session.Session(region_name="us-east-1")


_names = itertools.count()


@pytest.fixture(params=["embedded", "aws"])
def stack(request, tmp_path, moto_aws) -> Iterator[Stack]:
    s3 = moto_aws.client("s3")
    prefix = f"idem{next(_names)}-"
    bucket = f"{prefix}clips"
    s3.create_bucket(Bucket=bucket)
    if request.param == "embedded":
        storage = open_embedded(tmp_path / "data")
        yield Stack(storage, s3, bucket)
        storage.metadata.close()
        return
    from facebank.storage import open_aws
    from facebank.storage.dynamodb import TableNames, create_tables
    from facebank.storage.dynamodb_jobs import create_jobs_table

    dynamodb = moto_aws.client("dynamodb")
    create_tables(dynamodb, TableNames.with_prefix(prefix))
    create_jobs_table(dynamodb, f"{prefix}jobs")
    storage = open_aws(bucket=bucket, table_prefix=prefix, s3_prefix=prefix, dynamodb=dynamodb, s3=s3)
    yield Stack(storage, s3, bucket)


def context(stack: Stack, submitted: list[str], max_jobs: int = 20) -> Context:
    ctx = Context(settings(max_video_jobs=max_jobs), open_storage=lambda: stack.storage, open_s3=lambda: stack.s3)
    ctx.submit_video_job = submitted.append  # what the runtime was handed: one entry per job run
    return ctx


def at_once(calls: list[Any]) -> list[Any]:
    """Run the calls in threads released together (a barrier), return their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Any) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def start(ctx: Context, request: dict) -> tuple[int, dict]:
    wire = protocol.dispatch("StartFaceDetection", json.dumps(request).encode(), ctx)
    return wire.status, json.loads(wire.body)


def video(stack: Stack, name: str) -> dict:
    stack.s3.put_object(Bucket=stack.bucket, Key=name, Body=NOT_YET_A_VIDEO)
    return {"S3Object": {"Bucket": stack.bucket, "Name": name}}


def test_concurrent_starts_with_one_token_create_one_job(stack):
    submitted: list[str] = []
    ctx = context(stack, submitted, max_jobs=2)
    request = {"Video": video(stack, "a.mp4"), "ClientRequestToken": "one-token", "JobTag": "t"}

    answers = at_once([lambda: start(ctx, request)] * CALLERS)

    assert [status for status, _ in answers] == [200] * CALLERS, answers
    job_ids = {body["JobId"] for _, body in answers}
    assert len(job_ids) == 1
    [job_id] = job_ids
    assert submitted == [job_id]  # handed to the runtime once: one run, one completion message
    assert [job.job_id for job in stack.storage.jobs.active_jobs()] == [job_id]
    # One slot taken of the two: one more job fits, the next is over the limit.
    assert start(ctx, {"Video": request["Video"]})[0] == 200
    status, body = start(ctx, {"Video": request["Video"]})
    assert (status, body["__type"]) == (400, "LimitExceededException")
    # A retry after all that still answers the first JobId.
    assert start(ctx, request) == (200, {"JobId": job_id})


def test_concurrent_starts_with_one_token_and_other_parameters_get_a_mismatch(stack):
    submitted: list[str] = []
    ctx = context(stack, submitted)
    first = {"Video": video(stack, "b.mp4"), "ClientRequestToken": "shared", "JobTag": "first"}
    other = {**first, "JobTag": "other"}

    answers = at_once([lambda: start(ctx, first), lambda: start(ctx, other)] * (CALLERS // 2))

    ok = [body for status, body in answers if status == 200]
    refused = [body["__type"] for status, body in answers if status != 200]
    assert len(ok) == CALLERS // 2 and len({body["JobId"] for body in ok}) == 1
    assert refused == ["IdempotentParameterMismatchException"] * (CALLERS // 2)
    assert submitted == [ok[0]["JobId"]]


def test_a_token_whose_job_could_not_be_created_is_free_again(stack):
    submitted: list[str] = []
    ctx = context(stack, submitted)
    request = {"Video": {"S3Object": {"Bucket": stack.bucket, "Name": "late.mp4"}}, "ClientRequestToken": "retry-me"}
    assert start(ctx, request)[1]["__type"] == "InvalidS3ObjectException"
    video(stack, "late.mp4")  # the caller uploads it and retries with the same token
    status, body = start(ctx, request)
    assert status == 200 and submitted == [body["JobId"]]


def test_concurrent_starts_through_facebank_serve_create_one_job(model_env, s3_server, tmp_path):
    s3 = boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    bucket = f"idem-{tmp_path.name[-10:]}".lower().replace("_", "-")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="clip.mp4", Body=NOT_YET_A_VIDEO)
    env = {**model_env, "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}
    data_dir = tmp_path / "data"
    server = Server(env, data_dir, ["--s3-endpoint-url", s3_server])
    try:
        clients = [server.client() for _ in range(CALLERS)]
        video_ = {"S3Object": {"Bucket": bucket, "Name": "clip.mp4"}}
        answers = at_once(
            [lambda c=c: c.start_face_detection(Video=video_, ClientRequestToken="serve-token") for c in clients]
        )
    finally:
        server.stop()
    assert len({a["JobId"] for a in answers}) == 1
    assert jobs_in(data_dir) == [answers[0]["JobId"]]


def jobs_in(data_dir: Path) -> list[str]:
    """Every job the embedded job store holds, whatever its status (the store's own table)."""
    with sqlite3.connect(data_dir / "metadata.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT job_id FROM jobs")]
