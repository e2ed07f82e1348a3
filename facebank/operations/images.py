"""The Image parameter: inline Bytes or an S3Object, decoded to RGB pixels."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as S3Unreachable

from facebank.errors import (
    ImageTooLargeException,
    InvalidParameterException,
    InvalidS3ObjectException,
    ThrottlingException,
)

S3_MAX_BYTES = 15 * 1024 * 1024  # Rekognition's limit for images stored in S3
# S3 answers that say "not now" rather than "not there": the caller should retry (botocore retries
# ThrottlingException itself), and S3-event ingest must not take them for a deleted object.
S3_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
}


if TYPE_CHECKING:
    import numpy as np


def image_bytes(image: dict, ctx) -> bytes:
    if ("Bytes" in image) == ("S3Object" in image):
        raise InvalidParameterException("Image must contain exactly one of Bytes or S3Object")
    if "Bytes" in image:
        return image["Bytes"]
    return _s3_bytes(image["S3Object"], ctx)


def load_image(image: dict, ctx) -> np.ndarray:
    from facebank.engine.image import decode  # numpy and Pillow: only operations given an image load them

    return decode(image_bytes(image, ctx))


def s3_object_args(obj: dict) -> tuple[dict, str]:
    """GetObject/HeadObject arguments of an ``S3Object`` and how to name it in messages."""
    args = {"Bucket": obj["Bucket"], "Key": obj["Name"]}
    if obj.get("Version"):
        args["VersionId"] = obj["Version"]
    where = f"s3://{obj['Bucket']}/{obj['Name']}" + (f" (version {obj['Version']})" if obj.get("Version") else "")
    return args, where


@contextmanager
def s3_errors(where: str) -> Iterator[None]:
    """S3 failures as a Rekognition client sees them: transient ones ThrottlingException (retry),
    the rest InvalidS3ObjectException."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in S3_TRANSIENT or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
            raise ThrottlingException(f"S3 could not serve {where} now ({code}); retry") from None
        raise InvalidS3ObjectException(f"Unable to get object metadata from S3 for {where}: {code}") from None
    except (S3Unreachable, HTTPClientError) as exc:
        raise ThrottlingException(f"S3 could not serve {where} now ({exc}); retry") from None
    except BotoCoreError as exc:
        raise InvalidS3ObjectException(f"Unable to read {where}: {exc}") from None


def _s3_bytes(obj: dict, ctx) -> bytes:
    if not obj.get("Bucket") or not obj.get("Name"):
        raise InvalidParameterException("S3Object must name a Bucket and an object Name")
    args, where = s3_object_args(obj)
    with s3_errors(where):
        response = ctx.s3.get_object(**args)
    body = response["Body"]
    try:
        if response.get("ContentLength", 0) > S3_MAX_BYTES:
            raise ImageTooLargeException(
                f"{where} is {response['ContentLength']} bytes; the limit for S3 images is {S3_MAX_BYTES} bytes"
            )
        return body.read(S3_MAX_BYTES + 1)
    finally:
        body.close()
