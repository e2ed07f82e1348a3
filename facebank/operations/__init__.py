"""Operations: plain functions from a validated request dict to a response dict.

The registry is shared by the local server and the Lambda handlers, so both transports run the
same code. ``Context`` carries what an operation needs from its environment (the face engine, an
S3 client), created lazily so a process only loads what it uses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import boto3
from botocore.config import Config

from facebank.engine import FaceEngine, get_engine

Request = dict[str, Any]
Response = dict[str, Any]
Operation = Callable[[Request, "Context"], Response]

OPERATIONS: dict[str, Operation] = {}


def operation(name: str) -> Callable[[Operation], Operation]:
    def register(fn: Operation) -> Operation:
        OPERATIONS[name] = fn
        return fn

    return register


@dataclass
class Context:
    """Dependencies of the operations. ``s3_endpoint_url`` None means boto3's own resolution
    (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or the real S3)."""

    pack: str | None = None
    s3_endpoint_url: str | None = None

    @property
    def engine(self) -> FaceEngine:
        return get_engine(self.pack)

    @functools.cached_property
    def s3(self):
        return boto3.client(
            "s3", endpoint_url=self.s3_endpoint_url, config=Config(retries={"max_attempts": 3, "mode": "standard"})
        )


# Importing the modules registers their operations.
from facebank.operations import faces  # noqa: E402,F401
