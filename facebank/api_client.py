"""A stock boto3 Rekognition client wired to a deployed facebank API.

    import facebank
    rek = facebank.client("https://abc123.execute-api.eu-west-1.amazonaws.com/v1/")
    rek.detect_faces(Image={"Bytes": data})      # unchanged Rekognition code from here on

The deployed API is API Gateway with AWS_IAM authorisation: ``POST <ApiUrl><Operation>``, signed
with SigV4 for the service ``execute-api``. botocore would POST Rekognition's JSON to ``/`` and sign
for ``rekognition``; one ``before-sign`` hook appends ``/<Operation>`` to the path and switches the
signing name, so everything else (serialisation, retries, credentials, errors as
``client.exceptions.<Name>``) is boto3's own.

Requests that Lambda could not take whole (bodies over ``facebank.aws.MAX_REQUEST_BODY``, about
4.4 MB of image Bytes) are refused before sending with ``ImageTooLargeException`` naming S3Object.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3

from facebank.aws import MAX_REQUEST_BODY

SIGNING_NAME = "execute-api"
_REGION_IN_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


def region_of(api_url: str) -> str | None:
    """The region in an ``https://<id>.execute-api.<region>.amazonaws.com/<stage>`` URL."""
    m = _REGION_IN_HOST.search(urlsplit(api_url).hostname or "")
    return m.group(1) if m else None


def route(request: Any, operation_name: str, **_: Any) -> None:
    """before-sign: POST /<stage>/<Operation>, signed for execute-api. Idempotent: botocore rebuilds
    the request from scratch for each retry, but a handler must not rely on that."""
    url = urlsplit(request.url)
    path = url.path.rstrip("/")
    if not path.endswith(f"/{operation_name}"):
        path = f"{path}/{operation_name}"
    request.url = urlunsplit(url._replace(path=path))
    request.context.setdefault("signing", {})["signing_name"] = SIGNING_NAME


def too_large(body: bytes | None, operation_name: str) -> dict | None:
    """The ImageTooLargeException error response for a body Lambda cannot take, else None."""
    size = len(body or b"")
    if size <= MAX_REQUEST_BODY:
        return None
    message = (
        f"The request is {size:,} bytes; the deployed API accepts at most {MAX_REQUEST_BODY:,} "
        f"(Lambda's 6 MB payload limit, about {MAX_REQUEST_BODY * 3 // 4 / 1e6:.1f} MB of image Bytes "
        "in base64). Upload the image to S3 and pass Image={'S3Object': {'Bucket': ..., 'Name': ...}} "
        "instead of Bytes."
    )
    return {"Error": {"Code": "ImageTooLargeException", "Message": message}, "ResponseMetadata": {}}


def _size_guard(client: Any):
    def check(params: dict, model: Any, **_: Any) -> None:
        if (error := too_large(params.get("body"), model.name)) is not None:
            raise client.exceptions.ImageTooLargeException(error, model.name)

    return check


def client(api_url: str, region: str | None = None, *, session: boto3.session.Session | None = None, **kwargs):
    """A boto3 ``rekognition`` client for the facebank API at ``api_url`` (the stack's ApiUrl output).

    ``region`` defaults to the one in an execute-api URL, else the session's. Credentials come from
    the session as usual (the caller needs ``execute-api:Invoke`` on the API). Extra keyword
    arguments go to ``session.client`` (e.g. ``config``).
    """
    session = session or boto3.session.Session()
    region = region or region_of(api_url) or session.region_name
    if not region:
        raise ValueError("facebank.client: pass region=..., the API URL does not name one")
    rek = session.client("rekognition", endpoint_url=api_url.rstrip("/"), region_name=region, **kwargs)
    rek.meta.events.register("before-sign.rekognition.*", route)
    rek.meta.events.register("before-call.rekognition.*", _size_guard(rek))
    return rek
