"""Operations: plain functions from a validated request dict to a response dict.

The registry is shared by the local server and the Lambda handlers, so both transports run the
same code. ``Context`` carries what an operation needs from its environment (the face engine, an
S3 client, storage), created lazily so a process only loads what it uses: DetectFaces never opens
storage, and a collection listing never loads a model.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from facebank.engine import FaceEngine, get_engine, packs
from facebank.engine.packs import Pack
from facebank.storage import MetadataStore, VectorIndex, open_aws, open_embedded

Request = dict[str, Any]
Response = dict[str, Any]
Operation = Callable[[Request, "Context"], Response]

OPERATIONS: dict[str, Operation] = {}


def operation(name: str) -> Callable[[Operation], Operation]:
    def register(fn: Operation) -> Operation:
        OPERATIONS[name] = fn
        return fn

    return register


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@dataclass
class Context:
    """Dependencies of the operations.

    Storage is embedded (SQLite + segment files) under ``data_dir`` when given, else DynamoDB + S3
    named by FACEBANK_VECTOR_BUCKET / FACEBANK_TABLE_PREFIX (the Lambda environment), else
    ``index`` may be injected directly. ``s3_endpoint_url`` None means boto3's own resolution
    (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or the real S3) for S3Object images.
    """

    pack: str | None = None
    s3_endpoint_url: str | None = None
    data_dir: str | os.PathLike | None = None
    region: str = field(default_factory=_region)
    account_id: str = field(default_factory=lambda: os.environ.get("FACEBANK_ACCOUNT_ID", "000000000000"))
    _index: VectorIndex | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def engine(self) -> FaceEngine:
        return get_engine(self.pack)

    @property
    def model_pack(self) -> Pack:
        """The pack's description (names, calibration) without loading its models."""
        return packs.pack(self.pack)

    @functools.cached_property
    def s3(self):
        return boto3.client(
            "s3", endpoint_url=self.s3_endpoint_url, config=Config(retries={"max_attempts": 3, "mode": "standard"})
        )

    @property
    def index(self) -> VectorIndex:
        """Faces' vectors and metadata (``index.metadata``), opened on first use."""
        with self._lock:
            if self._index is None:
                metadata, vectors = self._open_storage()
                self._index = VectorIndex(vectors, metadata)
            return self._index

    @property
    def metadata(self) -> MetadataStore:
        return self.index.metadata

    def _open_storage(self):
        if self.data_dir is not None:
            return open_embedded(self.data_dir)
        if bucket := os.environ.get("FACEBANK_VECTOR_BUCKET"):
            return open_aws(bucket=bucket, table_prefix=os.environ.get("FACEBANK_TABLE_PREFIX", "facebank-"))
        raise RuntimeError("no storage configured: pass data_dir or set FACEBANK_VECTOR_BUCKET")

    def collection_arn(self, collection_id: str) -> str:
        return f"arn:aws:rekognition:{self.region}:{self.account_id}:collection/{collection_id}"


# Importing the modules registers their operations.
from facebank.operations import collections, faces, users  # noqa: F401
