"""The Rekognition wire protocol (AWS JSON 1.1), independent of any HTTP server.

``dispatch`` turns (operation name, raw body) into (status, headers, body) exactly as
Rekognition would, so botocore raises ``client.exceptions.<Name>`` for our errors. The local
server and the Lambda adapter both call it; neither knows anything about the API's shapes.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from facebank import storage
from facebank.errors import (
    InternalServerError,
    InvalidPaginationTokenException,
    InvalidParameterException,
    LimitExceededException,
    RekognitionError,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    SerializationException,
    ThrottlingException,
    UnknownOperationException,
)
from facebank.operations import OPERATIONS, Context
from facebank.validation import parse_request

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "RekognitionService."

log = logging.getLogger("facebank.protocol")


@dataclass
class WireResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def operation_name(target: str | None, path: str) -> str | None:
    """The operation named by ``X-Amz-Target: RekognitionService.<Op>`` or by a ``/<Op>`` path."""
    if target:
        return target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else None
    name = path.split("?", 1)[0].strip("/")
    return name or None


# What a storage error means to a caller, for the ones an operation lets through. Anything else
# that escapes an operation is a bug: InternalServerError (500), logged with its trace.
STORAGE_ERRORS: dict[type[Exception], Callable[[Any], RekognitionError]] = {
    storage.CollectionNotFound: lambda e: ResourceNotFoundException(
        f"The collection id: {e.collection_id} does not exist"
    ),
    storage.CollectionExists: lambda e: ResourceAlreadyExistsException(
        f"The collection id: {e.collection_id} already exists"
    ),
    storage.FaceNotFound: lambda e: InvalidParameterException(f"Face {e.face_id} does not exist"),
    storage.UserNotFound: lambda e: ResourceNotFoundException(f"User {e.user_id} does not exist"),
    storage.InvalidPaginationToken: lambda e: InvalidPaginationTokenException("Invalid pagination token"),
    # Contention outlasted the store's own bounded retries; botocore retries ThrottlingException itself.
    storage.StorageBusy: lambda e: ThrottlingException("Too many concurrent writes; retry"),
    storage.JobLimit: lambda e: LimitExceededException(
        f"{e.max_active} video jobs are in progress, the limit of this deployment; start more when one finishes"
    ),
}


def from_storage(exc: Exception) -> RekognitionError | None:
    """The Rekognition error a storage-layer exception means to a caller, or None (a bug: 500)."""
    for cls, make in STORAGE_ERRORS.items():
        if isinstance(exc, cls):
            return make(exc)
    return None


def error_response(error: RekognitionError, request_id: str) -> WireResponse:
    body = json.dumps({"__type": error.code, "Message": error.message}).encode()
    headers = {"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": request_id, "x-amzn-ErrorType": error.code}
    return WireResponse(error.status, body, headers)


def _not_json(constant: str) -> None:
    """NaN and Infinity are Python's JSON extensions, not JSON: a NaN threshold would pass every
    range check (all comparisons with NaN are false)."""
    raise ValueError(f"{constant} is not JSON")


def dispatch(name: str | None, body: bytes, ctx: Context, request_id: str | None = None) -> WireResponse:
    request_id = request_id or str(uuid.uuid4())
    try:
        fn = OPERATIONS.get(name) if name else None
        if name is None or fn is None:
            raise UnknownOperationException(f"Unknown operation {name!r}")
        try:
            payload = json.loads(body or b"{}", parse_constant=_not_json)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurd nesting
            raise SerializationException("Request body is not valid JSON") from None
        result = fn(parse_request(name, payload), ctx)
        data = json.dumps(result, separators=(",", ":")).encode()
        return WireResponse(200, data, {"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": request_id})
    except RekognitionError as error:
        return error_response(error, request_id)
    except Exception as exc:  # never leak a traceback to the caller; log it for the operator
        if (mapped := from_storage(exc)) is not None:
            return error_response(mapped, request_id)
        log.exception("unexpected failure in %s (request %s)", name, request_id)
        return error_response(InternalServerError("Amazon Rekognition experienced a service issue"), request_id)
