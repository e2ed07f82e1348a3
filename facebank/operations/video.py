"""Stored-video face jobs: StartFaceDetection / GetFaceDetection, StartFaceSearch / GetFaceSearch.

Start* checks what can be told at once (the S3 object exists and is within the size limit, the
notification channel is well formed and allowed, the collection exists and is of this pack),
records the job (``ctx.storage.jobs``, which enforces the deployment's limit on jobs in
progress) and hands it to the runtime (``ctx.submit_video_job``); the analysis itself is
``video_jobs``. Get* reads the job and the result pages. Nothing here loads numpy or PyAV, so
the Start*/Get* Lambda functions stay small.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from fnmatch import fnmatchcase
from typing import Any

import regex

from facebank.errors import (
    InvalidPaginationTokenException,
    InvalidParameterException,
    ResourceNotFoundException,
    VideoTooLargeException,
)
from facebank.operations import Context, Request, Response, operation
from facebank.operations.collections import get_collection
from facebank.operations.idempotency import run_once
from facebank.operations.images import s3_errors, s3_object_args
from facebank.storage import JobExists, JobRecord

MAX_VIDEO_BYTES = 10 * 1024**3  # Rekognition Video's stored-video limit: 10 GB
LEDGER_SCOPE = "video-jobs"
MAX_PAGE = 1000  # MaxResults above 1000 returns 1000, as Rekognition documents
PAGE_ITEMS = 1000  # items per stored result page (video_jobs writes them)
ROLE_ARN = regex.compile(r"arn:aws(-[a-z]+)*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")
DETECTION, SEARCH = "StartFaceDetection", "StartFaceSearch"


# --- Start*


def _check_video(video: dict, ctx: Context) -> dict:
    obj = video.get("S3Object")
    if not obj or not obj.get("Bucket") or not obj.get("Name"):
        raise InvalidParameterException("Video must contain an S3Object with a Bucket and an object Name")
    args, where = s3_object_args(obj)
    with s3_errors(where):
        head = ctx.s3.head_object(**args)
    size = int(head.get("ContentLength", 0))
    if size > MAX_VIDEO_BYTES:
        raise VideoTooLargeException(f"{where} is {size} bytes; the limit for stored videos is {MAX_VIDEO_BYTES} bytes")
    if size == 0:
        raise InvalidParameterException(f"{where} is empty: it is not a video")
    return {"S3Object": {k: obj[k] for k in ("Bucket", "Name", "Version") if obj.get(k)}}


def _check_channel(channel: dict | None, ctx: Context) -> dict | None:
    if channel is None:
        return None
    role, topic = channel.get("RoleArn", ""), channel.get("SNSTopicArn", "")
    if not ROLE_ARN.fullmatch(role):
        raise InvalidParameterException(f"NotificationChannel.RoleArn {role!r} is not an IAM role ARN")
    allowed = ctx.settings.notification_topics or _own_topics(ctx)
    if not any(fnmatchcase(topic, pattern) for pattern in allowed):
        raise InvalidParameterException(
            f"This deployment may not publish to {topic}: its notification topics are {', '.join(allowed)}"
        )
    return {"SNSTopicArn": topic, "RoleArn": role}


_PUBLISHER_ACCOUNTS: dict[str, str] = {}


def _own_topics(ctx: Context) -> tuple[str, ...]:
    """The default when no topics are configured: the topics of the account whose credentials the
    server publishes with, in its region. Anything wider is an explicit FACEBANK_NOTIFICATION_TOPICS
    (``*`` allows any topic). On AWS the stack always configures the list (docs/video.md)."""
    from botocore.exceptions import BotoCoreError, ClientError

    sns = ctx.sns
    key = f"{sns.meta.endpoint_url} {sns.meta.region_name}"
    if key not in _PUBLISHER_ACCOUNTS:
        import boto3

        try:
            sts = boto3.client("sts", region_name=sns.meta.region_name, endpoint_url=ctx.settings.sns_endpoint_url)
            _PUBLISHER_ACCOUNTS[key] = sts.get_caller_identity()["Account"]
        except (BotoCoreError, ClientError) as exc:
            raise InvalidParameterException(
                "NotificationChannel: this server cannot tell which account its credentials belong to "
                f"({exc}); set FACEBANK_NOTIFICATION_TOPICS to the topic ARNs it may publish to"
            ) from None
    return (f"arn:aws:sns:{sns.meta.region_name}:{_PUBLISHER_ACCOUNTS[key]}:*",)


def _start(api: str, request: Request, ctx: Context, params: dict) -> Response:
    """Claim the ClientRequestToken (``facebank.operations.idempotency``; same token and parameters:
    the first JobId; other parameters: IdempotentParameterMismatchException), then check, record
    and submit the job. The claim reserves the JobId before any job exists, so concurrent callers
    with one token create one job between them (the job store's conditional create decides)."""
    token = request.get("ClientRequestToken")
    if token is None:
        return {"JobId": _create(api, request, ctx, params, uuid.uuid4().hex)}
    payload = {"API": api, **{k: v for k, v in request.items() if k != "ClientRequestToken"}}

    def run(reserved: str) -> Response:
        # An entry claimed before JobIds were reserved has none: a fresh id, as then.
        return {"JobId": _create(api, request, ctx, params, reserved or uuid.uuid4().hex)}

    return run_once(ctx.ledger, LEDGER_SCOPE, token, payload, run, reservation=uuid.uuid4().hex)


def _create(api: str, request: Request, ctx: Context, params: dict, job_id: str) -> str:
    """Check, record and submit the job ``job_id``; if another request with the same token
    created it first, nothing (it is that request's job, already submitted)."""
    video = _check_video(request["Video"], ctx)
    channel = _check_channel(request.get("NotificationChannel"), ctx)
    job = JobRecord(
        job_id=job_id,
        api=api,
        status="IN_PROGRESS",
        video=video,
        # The settings that shape the analysis are the job's own, so a job resumed after a
        # restart (or analysed by other processes) samples and segments as it began.
        params={
            **params,
            "pack": ctx.model_pack.name,
            "sample_fps": ctx.settings.video_sample_fps,
            "segment_s": ctx.settings.video_segment_s,
        },
        created=time.time(),
        job_tag=request.get("JobTag"),
        notification_channel=channel,
    )
    try:
        ctx.storage.jobs.create_job(job, ctx.settings.max_video_jobs)  # JobLimit -> LimitExceededException
    except JobExists:
        return job.job_id
    try:
        ctx.submit_video_job(job.job_id)
    except Exception:
        # Never leave a job IN_PROGRESS that nothing will run (it would also hold a slot).
        ctx.storage.jobs.finish_job(job.job_id, "FAILED", "The job could not be queued for analysis", 0)
        raise
    return job.job_id


@operation("StartFaceDetection")
def start_face_detection(request: Request, ctx: Context) -> Response:
    return _start(DETECTION, request, ctx, {"FaceAttributes": request.get("FaceAttributes", "DEFAULT")})


@operation("StartFaceSearch")
def start_face_search(request: Request, ctx: Context) -> Response:
    collection = get_collection(ctx, request["CollectionId"], check_pack=True)
    params = {
        "CollectionId": collection.collection_id,
        "FaceMatchThreshold": float(request.get("FaceMatchThreshold", 80.0)),
    }
    return _start(SEARCH, request, ctx, params)


# --- Get*


def page_name(sort: str, page: int) -> str:
    """The stored result page holding items [page * PAGE_ITEMS, (page + 1) * PAGE_ITEMS) in sort order."""
    return f"{sort}-{page:06d}.json"


def _job_tag(job_id: str) -> str:
    return hashlib.sha256(job_id.encode()).hexdigest()[:8]


def encode_next_token(job_id: str, offset: int, sort: str) -> str:
    raw = json.dumps({"j": _job_tag(job_id), "o": offset, "s": sort}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_next_token(job_id: str, token: str, sort: str) -> int:
    """The offset a NextToken of this job and SortBy continues at; anything else is refused."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset = data["o"]
        valid = data["j"] == _job_tag(job_id) and data["s"] == sort and isinstance(offset, int) and offset >= 0
    except (ValueError, TypeError, KeyError):
        valid = False
    if not valid:
        raise InvalidPaginationTokenException("Invalid pagination token")
    return offset


def _read_items(job: JobRecord, ctx: Context, sort: str, offset: int, count: int) -> list[dict]:
    items: list[dict] = []
    end = min(offset + count, job.result_count)
    for page in range(offset // PAGE_ITEMS, (end - 1) // PAGE_ITEMS + 1 if end > offset else 0):
        stored = json.loads(ctx.storage.results.get(job.job_id, page_name(sort, page)))
        first = page * PAGE_ITEMS
        items += stored[max(offset - first, 0) : end - first]
    return items


def _get(request: Request, ctx: Context, api: str, member: str, sort: str) -> Response:
    job_id = request["JobId"]
    job = ctx.storage.jobs.get_job(job_id)
    if job is None or job.api != api:
        raise ResourceNotFoundException(f"The job id: {job_id} does not exist")
    token = request.get("NextToken")
    offset = decode_next_token(job_id, token, sort) if token else 0
    response: dict[str, Any] = {"JobStatus": job.status}
    if job.status_message:
        response["StatusMessage"] = job.status_message
    elif job.status == "IN_PROGRESS" and job.segments_total:  # progress, within Rekognition's shape
        response["StatusMessage"] = f"{len(job.segments_done)} of {job.segments_total} segments analysed"
    if job.video_metadata:
        response["VideoMetadata"] = job.video_metadata
    items: list[dict] = []
    if job.status == "SUCCEEDED":
        size = min(request.get("MaxResults") or MAX_PAGE, MAX_PAGE)
        items = _read_items(job, ctx, sort, offset, size)
        if offset + len(items) < job.result_count:
            response["NextToken"] = encode_next_token(job_id, offset + len(items), sort)
    response[member] = items
    response["JobId"] = job_id
    response["Video"] = job.video
    if job.job_tag:
        response["JobTag"] = job.job_tag
    return response


@operation("GetFaceDetection")
def get_face_detection(request: Request, ctx: Context) -> Response:
    return _get(request, ctx, DETECTION, "Faces", "TIMESTAMP")


@operation("GetFaceSearch")
def get_face_search(request: Request, ctx: Context) -> Response:
    return _get(request, ctx, SEARCH, "Persons", request.get("SortBy", "TIMESTAMP"))


# Public names of the Start/Get steps, for the other job APIs built on this framework
# (facebank.operations.celebrities: StartCelebrityRecognition / GetCelebrityRecognition).
start_job = _start
get_job = _get
