"""What every facebank Lambda function shares: one operation ``Context`` per execution environment
(models and clients are loaded once, reused warm), and ``call`` to run an operation from a handler.

Configured from the FACEBANK_* variables the stack sets, read once into ``facebank.settings.Settings``.
Logging, metrics and tracing are in ``facebank.aws.observability`` (re-exported here).
"""

from __future__ import annotations

import json

from facebank.aws.observability import LocalContext, lambda_entry, logger, metrics, tracer
from facebank.operations import Context
from facebank.protocol import dispatch
from facebank.settings import Settings
from facebank.wiring import aws_context

__all__ = [
    "LocalContext",
    "OperationError",
    "call",
    "lambda_entry",
    "logger",
    "metrics",
    "reset_shared_context",
    "shared_context",
    "tracer",
]

_context: Context | None = None


def shared_context() -> Context:
    """The operation Context of this execution environment (created on first use)."""
    global _context
    if _context is None:
        _context = aws_context(Settings.from_env())
    return _context


def reset_shared_context() -> None:
    """Forget the shared Context and its settings (tests switch storage between cases)."""
    global _context
    _context = None


class OperationError(Exception):
    """An operation answered with a Rekognition error (code, message), as a caller would see it."""

    def __init__(self, code: str, message: str, status: int):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


def call(operation: str, request: dict, ctx: Context | None = None) -> dict:
    """Run a registered operation exactly as the API would (validation, errors and all) from a
    request in wire form (Image Bytes base64), for handlers that are not API calls themselves."""
    response = dispatch(operation, json.dumps(request).encode(), ctx or shared_context())
    body = json.loads(response.body or b"{}")
    if response.status != 200:
        raise OperationError(body.get("__type", "InternalServerError"), body.get("Message", ""), response.status)
    return body
