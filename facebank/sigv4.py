"""Server-side verification of AWS Signature Version 4, with botocore's own signer.

Used when ``facebank serve`` listens beyond loopback: a request is accepted only if its
signature recomputes identically from the configured secret key, and only if it is signed as AWS
requires it: ``host``, ``x-amz-date`` and ``x-amz-target`` (and ``content-type`` when the request
has one) among the signed headers, a credential scope for service ``rekognition`` dated the day of
``X-Amz-Date``. Any region is accepted (a client signs for the region it is configured with; the
region is part of what is signed). A signature replays for 15 minutes: beyond loopback, put TLS in
front of the server (README).
"""

from __future__ import annotations

import datetime as dt
import hmac
import re

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from facebank.errors import (
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,\s*"
    r"SignedHeaders=(?P<signed>[^,]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)
MAX_SKEW = dt.timedelta(minutes=15)
SERVICE = "rekognition"
# Headers that must be signed when the request carries them; host and x-amz-date always.
MUST_SIGN = ("host", "x-amz-date", "x-amz-target", "content-type")


def verify(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    credentials: dict[str, str],
    now: dt.datetime | None = None,
    service: str = SERVICE,
) -> None:
    """Raise a Rekognition auth error unless the request is signed with a configured key.

    ``credentials`` maps access key id -> secret access key; ``headers`` keys are lower-case.
    """
    header = headers.get("authorization")
    if not header:
        raise MissingAuthenticationTokenException("Request is missing Authentication Token")
    match = _AUTH.fullmatch(header.strip())
    if not match:
        raise InvalidSignatureException("Authorization header is not a valid AWS Signature Version 4")
    secret = credentials.get(match["key"])
    if secret is None:
        raise UnrecognizedClientException("The security token included in the request is invalid.")
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise InvalidSignatureException("X-Amz-Date is missing or malformed") from None
    now = now or dt.datetime.now(dt.UTC)
    if abs(now - signed_at) > MAX_SKEW:
        raise InvalidSignatureException("Signature expired: X-Amz-Date is more than 15 minutes from server time")
    if match["service"] != service:
        raise InvalidSignatureException(f"Credential should be scoped to correct service: '{service}'.")
    if match["date"] != amz_date[:8]:
        raise InvalidSignatureException(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{match['date']}' != '{amz_date[:8]}', from 'X-Amz-Date'."
        )
    signed = match["signed"].split(";")
    for name in MUST_SIGN:
        if name not in signed and (name in ("host", "x-amz-date") or name in headers):
            raise InvalidSignatureException(f"'{name}' must be a 'SignedHeader' in the AWS Authorization.")
    if missing := [h for h in signed if h not in headers]:
        raise InvalidSignatureException(f"Signed header {missing[0]!r} is not in the request.")
    request = AWSRequest(method=method, url=url, data=body, headers={h: headers.get(h, "") for h in signed})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(match["key"], secret), match["service"], match["region"])
    string_to_sign = signer.string_to_sign(request, signer.canonical_request(request))
    expected = signer.signature(string_to_sign, request)
    if not hmac.compare_digest(expected, match["signature"]):
        raise InvalidSignatureException(
            "The request signature we calculated does not match the signature you provided."
        )
