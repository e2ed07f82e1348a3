"""One adapter from API Gateway proxy events to the operation registry.

Every function in ``functions/`` is ``handler = handler_for("<Operation>")``: the event is turned
into the same (operation, body) pair the local server dispatches, so both transports share the
protocol, validation and operations byte for byte.
"""

from __future__ import annotations

import base64
import os
from typing import Any, Callable

from facebank.errors import ImageTooLargeException
from facebank.operations import Context
from facebank.protocol import dispatch, error_response

# Lambda's synchronous payload limit is 6 MB; API Gateway's is 10 MB. A base64 image above this
# cannot arrive whole, so callers are told to pass S3Object instead.
MAX_EVENT_BODY = 6 * 1024 * 1024

_context: Context | None = None


def _shared_context() -> Context:
    # Created once per execution environment: warm invocations reuse loaded models and clients.
    global _context
    if _context is None:
        _context = Context(pack=os.environ.get("FACEBANK_PACK"))
    return _context


def handler_for(operation: str) -> Callable[[dict, Any], dict]:
    def handler(event: dict, lambda_context: Any = None) -> dict:
        request_id = getattr(lambda_context, "aws_request_id", None) or event.get("requestContext", {}).get("requestId")
        body = event.get("body") or ""
        raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
        if len(raw) > MAX_EVENT_BODY:
            response = error_response(
                ImageTooLargeException("Request exceeds Lambda's 6 MB payload limit; pass the image as S3Object"),
                request_id or "",
            )
        else:
            response = dispatch(operation, raw, _shared_context(), request_id)
        return {
            "statusCode": response.status,
            "headers": response.headers,
            "body": response.body.decode(),
            "isBase64Encoded": False,
        }

    handler.__name__ = f"{operation}_handler"
    return handler
