"""Observability of every facebank Lambda function: the Powertools logger, metrics and tracer, and
``lambda_entry``, the decorator that applies them to a handler once.

Configured from Powertools' own variables, POWERTOOLS_SERVICE_NAME and POWERTOOLS_METRICS_NAMESPACE
(the stack sets them). Outside Lambda (tests, bench) the tracer disables itself and metrics print
their EMF lines to stdout. This module imports nothing of facebank: handlers and the outbound AWS
clients (``video_queue.py``, ``shard_client.py``) log through it without depending on each other or
on the composition root.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "facebank")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "facebank")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)


@dataclass
class LocalContext:
    """Stand-in for the Lambda context when a handler is called directly (tests, bench)."""

    function_name: str = "facebank-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:facebank-local"
    aws_request_id: str = ""
    timeout_ms: int = 900_000

    def __post_init__(self) -> None:
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())
        self._deadline = time.monotonic() + self.timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def lambda_entry(correlation_id_path: str | None = None) -> Callable:
    """Decorate a handler(event, context) with the Powertools logger, tracer and metrics, once for
    every function (the handlers in ``functions/`` stay one line). Response bodies are never
    put into traces or logs: they hold face data. Cold starts are a field of every log line
    (``cold_start``), not a metric: a per-function ColdStart metric would be ~20 custom metrics,
    about $6 a month, for what Lambda's Init Duration already reports."""

    def wrap(fn: Callable[[dict, Any], Any]) -> Callable[[dict, Any], Any]:
        inner = logger.inject_lambda_context(correlation_id_path=correlation_id_path, clear_state=True)(
            tracer.capture_lambda_handler(capture_response=False)(metrics.log_metrics(fn))
        )

        @functools.wraps(fn)
        def handler(event: dict, context: Any = None) -> Any:
            with warnings.catch_warnings():
                # Most invocations publish no custom metric (Lambda's own cover them): no warning.
                warnings.filterwarnings("ignore", message="No application metrics to publish")
                return inner(event, context if context is not None else LocalContext())

        return handler

    return wrap
