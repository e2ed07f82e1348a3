"""Stream processors (issue 26): CreateStreamProcessor, DescribeStreamProcessor,
ListStreamProcessors, StartStreamProcessor, StopStreamProcessor, DeleteStreamProcessor,
UpdateStreamProcessor, and the tags of a processor (TagResource & co. on its ARN).

What is checked here is what a Rekognition user would be told at once: the name is free
(ResourceInUseException, as Rekognition answers a taken name), the settings are FaceSearch's
(ConnectedHome label detection is out of scope: InvalidParameterException saying so), the
collection exists and is of this pack, the ARNs name a Kinesis video stream, a Kinesis data stream,
an IAM role and an SNS topic, and the processor's state allows the call (ResourceInUseException).
Parameters Rekognition documents for label detection only (RegionsOfInterest, KmsKeyId,
Output.S3Destination) are refused, as their API reference says they "should not be used" with a
face search processor. StartSelector / StopSelector, documented for label detection too, are
accepted and honoured (start at a fragment or producer time; stop after MaxDurationInSeconds).

The record is the store's (``ctx.storage.streams``); every state change is its conditional
transition, so racing calls never interleave. Start makes the processor STARTING in a new session
and hands it to the runtime (``ctx.start_stream_processor``): embedded, facebank serve's stream
runner; on AWS, the stream consumer function. Stop only marks it STOPPING: the runtime sees it
within seconds and makes it STOPPED. Nothing here loads numpy, PyAV or a model.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import regex

from facebank.errors import (
    InvalidParameterException,
    LimitExceededException,
    RekognitionError,
    ResourceInUseException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
    ThrottlingException,
)
from facebank.operations import Context, Request, Response, operation
from facebank.operations.collections import MAX_TAGS, TAGGABLE, get_collection
from facebank.storage import StreamProcessorRecord
from facebank.storage.errors import StreamProcessorExists, StreamProcessorLimit
from facebank.storage.ports import STREAM_STATUSES

log = logging.getLogger(__name__)

DEFAULT_PAGE = 1000  # ListStreamProcessors' MaxResults default, as Rekognition documents
DEFAULT_THRESHOLD = 80.0  # FaceMatchThreshold: "The default is 80 ... values lower than 80 are set to 80"
STARTABLE = ("STOPPED", "FAILED")
STOPPABLE = ("RUNNING", "STARTING")
# Delete and Update need a processor that is not running: STOPPED or FAILED.
IDLE = ("STOPPED", "FAILED")

# The resource part of the ARNs (botocore's patterns only check the prefix): a Kinesis video
# stream is stream/<name>/<creation time in ms>, a Kinesis data stream stream/<name>.
# The creation time is optional: the developer guide's own CreateStreamProcessor example leaves it out
# (a stream that does not exist fails the run, as Rekognition's does, not the Create).
KVS_ARN = regex.compile(r"arn:aws[a-z-]*:kinesisvideo:([a-z0-9-]+):(\d{12}):stream/([a-zA-Z0-9_.\-]{1,256})(?:/(\d+))?")
KDS_ARN = regex.compile(r"arn:aws[a-z-]*:kinesis:([a-z0-9-]+):(\d{12}):stream/([a-zA-Z0-9_.\-]{1,128})")
SNS_ARN = regex.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[a-zA-Z0-9_\-]{1,256}(\.fifo)?")
# One namespace for the SessionIds StartStreamProcessor answers (never change it).
_SESSION_NAMESPACE = uuid.UUID("0b7b6f0e-3b51-4a8e-93c2-7d6b1c0f5a27")


def processor_arn(ctx: Context, name: str) -> str:
    return f"arn:aws:rekognition:{ctx.region}:{ctx.settings.account_id}:streamprocessor/{name}"


def kinesis_video_stream_name(arn: str) -> str:
    """The stream name of a Kinesis video stream ARN (the runtimes map it to a source)."""
    match = KVS_ARN.fullmatch(arn)
    if match is None:
        raise ValueError(f"{arn} is not a Kinesis video stream ARN")
    return match.group(3)


def session_id(rec: StreamProcessorRecord) -> str:
    """StartStreamProcessor's SessionId for the record's session: one per processor and Start."""
    return str(uuid.uuid5(_SESSION_NAMESPACE, f"{rec.arn}\0{rec.created!r}\0{rec.session}"))


def not_found(name: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"The stream processor {name} does not exist")


def _get(ctx: Context, name: str) -> StreamProcessorRecord:
    rec = ctx.storage.streams.get(name)
    if rec is None:
        raise not_found(name)
    return rec


def _in_use(ctx: Context, name: str, action: str, allowed: tuple[str, ...]) -> RekognitionError:
    """The error for a transition whose condition failed: the processor is gone or in another state."""
    rec = ctx.storage.streams.get(name)
    if rec is None:
        return not_found(name)
    return ResourceInUseException(
        f"The stream processor {name} is {rec.status}: it can be {action} only when {' or '.join(allowed)}"
    )


# --- CreateStreamProcessor


def _face_search(settings: dict, ctx: Context) -> tuple[str, float]:
    if "ConnectedHome" in settings:
        raise InvalidParameterException(
            "Settings.ConnectedHome (label detection stream processors) is not supported by facebank: "
            "only face search stream processors (Settings.FaceSearch) are"
        )
    face_search = settings.get("FaceSearch")
    if not face_search or not face_search.get("CollectionId"):
        raise InvalidParameterException("Settings.FaceSearch with a CollectionId is required")
    try:
        collection = get_collection(ctx, face_search["CollectionId"], check_pack=True)
    except ResourceNotFoundException as exc:
        # CreateStreamProcessor declares no ResourceNotFoundException: a missing collection is a
        # bad parameter here (Start, which declares it, answers ResourceNotFoundException).
        raise InvalidParameterException(f"Settings.FaceSearch.CollectionId: {exc.message}") from None
    threshold = float(face_search.get("FaceMatchThreshold", DEFAULT_THRESHOLD))
    return collection.collection_id, max(threshold, DEFAULT_THRESHOLD)


def _arn(value: str | None, pattern: regex.Pattern, what: str, example: str) -> str:
    if not value or pattern.fullmatch(value) is None:
        raise InvalidParameterException(f"{what} {value!r} is not a valid ARN (expected {example})")
    return value


def _io(request: Request) -> tuple[str, str]:
    kvs = (request["Input"].get("KinesisVideoStream") or {}).get("Arn")
    input_arn = _arn(
        kvs, KVS_ARN, "Input.KinesisVideoStream.Arn", "arn:aws:kinesisvideo:<region>:<account>:stream/<name>[/<time>]"
    )
    output = request["Output"]
    if "S3Destination" in output:
        raise InvalidParameterException(
            "Output.S3Destination is for label detection stream processors; a face search stream processor "
            "writes to Output.KinesisDataStream"
        )
    kds = (output.get("KinesisDataStream") or {}).get("Arn")
    output_arn = _arn(kds, KDS_ARN, "Output.KinesisDataStream.Arn", "arn:aws:kinesis:<region>:<account>:stream/<name>")
    return input_arn, output_arn


def _label_detection_only(request: Request) -> None:
    for parameter in ("RegionsOfInterest", "KmsKeyId"):
        if request.get(parameter):
            raise InvalidParameterException(
                f"{parameter} is a parameter of label detection stream processors and cannot be used with a "
                "face search stream processor"
            )


def _tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise ServiceQuotaExceededException(f"A stream processor can have at most {MAX_TAGS} tags")
    return dict(tags)


@operation("CreateStreamProcessor")
def create_stream_processor(request: Request, ctx: Context) -> Response:
    name = request["Name"]
    _label_detection_only(request)
    input_arn, output_arn = _io(request)
    channel = request.get("NotificationChannel")
    topic = (
        _arn(channel["SNSTopicArn"], SNS_ARN, "NotificationChannel.SNSTopicArn", "an SNS topic ARN")
        if channel
        else None
    )
    collection_id, threshold = _face_search(request["Settings"], ctx)
    now = time.time()
    rec = StreamProcessorRecord(
        name=name,
        arn=processor_arn(ctx, name),
        status="STOPPED",
        input_arn=input_arn,
        output_arn=output_arn,
        role_arn=request["RoleArn"],
        collection_id=collection_id,
        face_match_threshold=threshold,
        created=now,
        updated=now,
        notification_sns_arn=topic,
        data_sharing_opt_in=bool((request.get("DataSharingPreference") or {}).get("OptIn", False)),
        tags=_tags(request.get("Tags") or {}),
    )
    try:
        ctx.storage.streams.create(rec, ctx.settings.max_stream_processors)
    except StreamProcessorExists:
        raise ResourceInUseException(f"The stream processor {name} already exists") from None
    except StreamProcessorLimit:
        raise LimitExceededException(
            f"This deployment holds {ctx.settings.max_stream_processors} stream processors, its limit "
            "(FACEBANK_MAX_STREAM_PROCESSORS); delete one first"
        ) from None
    return {"StreamProcessorArn": rec.arn}


# --- DescribeStreamProcessor / ListStreamProcessors


def describe(rec: StreamProcessorRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Name": rec.name,
        "StreamProcessorArn": rec.arn,
        "Status": rec.status,
        "CreationTimestamp": rec.created,
        "LastUpdateTimestamp": rec.updated,
        "Input": {"KinesisVideoStream": {"Arn": rec.input_arn}},
        "Output": {"KinesisDataStream": {"Arn": rec.output_arn}},
        "RoleArn": rec.role_arn,
        "Settings": {"FaceSearch": {"CollectionId": rec.collection_id, "FaceMatchThreshold": rec.face_match_threshold}},
        "DataSharingPreference": {"OptIn": rec.data_sharing_opt_in},
    }
    if rec.status_message:
        out["StatusMessage"] = rec.status_message
    if rec.notification_sns_arn:
        out["NotificationChannel"] = {"SNSTopicArn": rec.notification_sns_arn}
    return out


@operation("DescribeStreamProcessor")
def describe_stream_processor(request: Request, ctx: Context) -> Response:
    return describe(_get(ctx, request["Name"]))


@operation("ListStreamProcessors")
def list_stream_processors(request: Request, ctx: Context) -> Response:
    records, token = ctx.storage.streams.list(request.get("MaxResults") or DEFAULT_PAGE, request.get("NextToken"))
    out: Response = {"StreamProcessors": [{"Name": r.name, "Status": r.status} for r in records]}
    if token:
        out["NextToken"] = token
    return out


# --- StartStreamProcessor / StopStreamProcessor


def _selectors(request: Request) -> tuple[dict | None, dict | None]:
    start = request.get("StartSelector")
    if start is not None:
        kvs = start.get("KVSStreamStartSelector") or {}
        if "ProducerTimestamp" in kvs and "FragmentNumber" in kvs:
            raise InvalidParameterException(
                "StartSelector.KVSStreamStartSelector takes a ProducerTimestamp or a FragmentNumber, not both"
            )
        start = {"KVSStreamStartSelector": kvs} if kvs else None
    stop = request.get("StopSelector") or None
    return start, stop


@operation("StartStreamProcessor")
def start_stream_processor(request: Request, ctx: Context) -> Response:
    name = request["Name"]
    start, stop = _selectors(request)
    rec = _get(ctx, name)
    get_collection(ctx, rec.collection_id, check_pack=True)  # deleted since Create: nothing to search
    started = ctx.storage.streams.transition(
        name, STARTABLE, "STARTING", None, new_session=True, changes={"start_selector": start, "stop_selector": stop}
    )
    if started is None:
        raise _in_use(ctx, name, "started", STARTABLE)
    try:
        ctx.start_stream_processor(name)
    except Exception as exc:
        # Never leave it STARTING with nothing to run it: FAILED, with why, and the caller told.
        reason = exc.message if isinstance(exc, RekognitionError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, RekognitionError):
            log.exception("stream processor %s could not be handed to its runtime", name)
        message = f"The stream processor could not be started: {reason}"
        ctx.storage.streams.transition(name, ("STARTING",), "FAILED", message, session=started.session)
        if isinstance(exc, RekognitionError):
            raise
        raise ThrottlingException(f"{message}. It is FAILED; start it again") from None
    return {"SessionId": session_id(started)}


@operation("StopStreamProcessor")
def stop_stream_processor(request: Request, ctx: Context) -> Response:
    name = request["Name"]
    if ctx.storage.streams.transition(name, STOPPABLE, "STOPPING") is None:
        raise _in_use(ctx, name, "stopped", STOPPABLE)
    return {}


# --- DeleteStreamProcessor / UpdateStreamProcessor


@operation("DeleteStreamProcessor")
def delete_stream_processor(request: Request, ctx: Context) -> Response:
    name = request["Name"]
    if not ctx.storage.streams.delete(name, IDLE):
        raise _in_use(ctx, name, "deleted", IDLE)
    return {}


def _update_changes(request: Request) -> dict[str, Any]:
    if (request.get("SettingsForUpdate") or {}).get("ConnectedHomeForUpdate"):
        raise InvalidParameterException(
            "SettingsForUpdate.ConnectedHomeForUpdate updates label detection settings; facebank's stream "
            "processors are face search processors (ConnectedHome is not supported)"
        )
    if request.get("RegionsOfInterestForUpdate"):
        raise InvalidParameterException(
            "RegionsOfInterestForUpdate is a parameter of label detection stream processors and cannot be used "
            "with a face search stream processor"
        )
    if "ConnectedHomeMinConfidence" in (request.get("ParametersToDelete") or []):
        raise InvalidParameterException(
            "ConnectedHomeMinConfidence is a label detection setting; this is a face search stream processor"
        )
    # ParametersToDelete RegionsOfInterest: a face search processor has none, so nothing to delete.
    changes: dict[str, Any] = {}
    preference = request.get("DataSharingPreferenceForUpdate")
    if preference is not None:
        changes["data_sharing_opt_in"] = bool(preference["OptIn"])
    return changes


Changes = dict[str, Any] | Callable[[StreamProcessorRecord], dict[str, Any]]


def change(ctx: Context, name: str, expect: tuple[str, ...], changes: Changes, action: str) -> None:
    """Set fields of the record without moving its status (the status, message and session it had
    are the write's condition; a runtime moving it meanwhile makes the write try again, with
    ``changes`` computed again from the record it then reads when it is a function)."""
    for _ in range(5):
        rec = _get(ctx, name)
        if rec.status not in expect:
            raise _in_use(ctx, name, action, expect)
        values = changes(rec) if callable(changes) else changes
        if not values:
            return
        done = ctx.storage.streams.transition(
            name, (rec.status,), rec.status, rec.status_message, session=rec.session, changes=values
        )
        if done is not None:
            return
    raise ThrottlingException(f"The stream processor {name} is changing state; retry")


@operation("UpdateStreamProcessor")
def update_stream_processor(request: Request, ctx: Context) -> Response:
    change(ctx, request["Name"], IDLE, _update_changes(request), "updated")
    return {}


# --- tags (TagResource, UntagResource, ListTagsForResource on a streamprocessor ARN)


def _processor_of(arn: str, ctx: Context) -> StreamProcessorRecord:
    prefix, _, name = arn.partition(":streamprocessor/")
    rec = ctx.storage.streams.get(name) if name and prefix.startswith("arn:") else None
    if rec is None or rec.arn != arn:
        raise ResourceNotFoundException(f"The resource {arn} does not exist")
    return rec


def _tag(ctx: Context, arn: str, put: dict[str, str], remove: list[str]) -> None:
    def tags(rec: StreamProcessorRecord) -> dict[str, Any]:
        new = {k: v for k, v in rec.tags.items() if k not in remove} | put
        if len(new) > MAX_TAGS:
            raise ServiceQuotaExceededException(f"A resource can have at most {MAX_TAGS} tags")
        return {"tags": new} if new != rec.tags else {}

    change(ctx, _processor_of(arn, ctx).name, STREAM_STATUSES, tags, "tagged")


def _list_tags(ctx: Context, arn: str) -> dict[str, str]:
    return dict(_processor_of(arn, ctx).tags)


TAGGABLE[":streamprocessor/"] = (_tag, _list_tags)
