"""One adapter from API Gateway proxy events to the operation registry.

Every API function in ``functions/`` is ``handler = handler_for("<Operation>")``: the event is
turned into the same (operation, body) pair the local server dispatches, so both transports share
the protocol, validation and operations byte for byte. Logging, metrics and tracing are added here,
once (``facebank.aws.runtime.lambda_entry``), not per function.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from facebank.aws import MAX_REQUEST_BODY
from facebank.aws.runtime import lambda_entry, logger, metrics, shared_context
from facebank.errors import ImageTooLargeException
from facebank.protocol import dispatch, error_response

# Lambda's synchronous payload limit is 6 MB; API Gateway's is 10 MB. A body above our limit may
# not arrive at all, and if it does it is refused with the way out: S3Object.
MAX_EVENT_BODY = MAX_REQUEST_BODY


def handler_for(operation: str) -> Callable[[dict, Any], dict]:
    @lambda_entry(correlation_id_path=correlation_paths.API_GATEWAY_REST)
    def handler(event: dict, lambda_context: Any) -> dict:
        started = time.perf_counter()
        request_id = event.get("requestContext", {}).get("requestId") or lambda_context.aws_request_id
        body = event.get("body") or ""
        raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
        if len(raw) > MAX_EVENT_BODY:
            response = error_response(
                ImageTooLargeException(
                    f"Request body is {len(raw)} bytes, over the {MAX_EVENT_BODY} bytes this API accepts "
                    "(Lambda's 6 MB payload limit); pass the image as S3Object instead of Bytes"
                ),
                request_id or "",
            )
        else:
            response = dispatch(operation, raw, shared_context(), request_id)
        error = response.headers.get("x-amzn-ErrorType")
        if error:  # Lambda's own metrics count invocations; 4xx/5xx answers are ours to count
            metrics.add_dimension("Operation", operation)
            name = "ServerErrors" if response.status >= 500 else "ClientErrors"
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
        logger.info(
            "request",
            extra={
                "operation": operation,
                "status": response.status,
                "error": error,
                "request_bytes": len(raw),
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return {
            "statusCode": response.status,
            "headers": response.headers,
            "body": response.body.decode(),
            "isBase64Encoded": False,
        }

    handler.__name__ = f"{operation}_handler"
    handler.__qualname__ = handler.__name__
    return handler
