"""AWS CLI (v1) plugin: ``aws rekognition ... --endpoint-url <ApiUrl>`` against a deployed facebank API.

Enable it once (the module must be importable by the Python that runs ``aws``, e.g. after
``pip install facebank`` into the CLI's environment):

    aws configure set plugins.facebank facebank.aws.awscli

It applies the same two hooks as ``facebank.client`` to Rekognition calls whose endpoint is an
API Gateway stage URL (an ``execute-api`` host, or any endpoint URL with a path such as ``/v1``):
``POST <stage>/<Operation>`` signed for ``execute-api``, and a clear ImageTooLargeException for
bodies Lambda cannot take. Calls to the real Rekognition or to ``facebank serve`` (path ``/``) are
left alone.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from facebank.api_client import route, too_large


def is_facebank_api(url: str) -> bool:
    parts = urlsplit(url)
    return ".execute-api." in (parts.hostname or "") or parts.path.strip("/") != ""


def _before_sign(request: Any, operation_name: str, **kwargs: Any) -> None:
    # The URL already ends in /<Operation> when botocore re-signs a retried request.
    base = request.url.rsplit(f"/{operation_name}", 1)[0] if request.url.endswith(f"/{operation_name}") else request.url
    if is_facebank_api(base):
        route(request, operation_name, **kwargs)


def _before_call(params: dict, model: Any, **_: Any) -> None:
    if is_facebank_api(params.get("url", "")) and (error := too_large(params.get("body"), model.name)):
        raise ClientError(error, model.name)


def awscli_initialize(cli: Any) -> None:
    """Called by the AWS CLI for every plugin named in the [plugins] section of its config."""
    cli.register("before-sign.rekognition.*", _before_sign)
    cli.register("before-call.rekognition.*", _before_call)
