"""Storage behind ports (see ports.py): metadata, vector segments and the request ledger, embedded
or on AWS, plus the ingest ledger on AWS. Opening storage gives them together, as one ``Storage``:

    storage = open_embedded("/var/lib/facebank")
    index = facebank.search.VectorIndex(storage.vectors, storage.metadata)

The vector search over these stores is ``facebank.search``'s, a layer above.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facebank.storage.errors import (
    CollectionExists,
    CollectionNotFound,
    CorruptSegment,
    FaceNotFound,
    FaceUserConflict,
    InvalidPaginationToken,
    JobExists,
    JobLimit,
    ResultNotFound,
    SegmentExists,
    SegmentNotFound,
    ShardFailed,
    ShardThrottled,
    StorageBusy,
    StorageError,
    UnsupportedSchemaVersion,
    UserExists,
    UserFaceLimit,
    UserNotFound,
)
from facebank.storage.ports import (
    CollectionRecord,
    FaceRecord,
    IngestLedger,
    IngestRecord,
    JobRecord,
    JobResults,
    JobStore,
    MetadataStore,
    RequestLedger,
    StreamProcessorRecord,
    StreamProcessorStore,
    UserRecord,
    VectorStore,
)
from facebank.storage.segments import new_segment_name

__all__ = [
    "CollectionExists",
    "CollectionNotFound",
    "CollectionRecord",
    "CorruptSegment",
    "FaceNotFound",
    "FaceRecord",
    "FaceUserConflict",
    "IngestLedger",
    "IngestRecord",
    "InvalidPaginationToken",
    "JobExists",
    "JobLimit",
    "JobRecord",
    "JobResults",
    "JobStore",
    "MetadataStore",
    "RequestLedger",
    "ResultNotFound",
    "SegmentExists",
    "SegmentNotFound",
    "ShardFailed",
    "ShardThrottled",
    "Storage",
    "StreamProcessorRecord",
    "StreamProcessorStore",
    "StorageBusy",
    "StorageError",
    "UnsupportedSchemaVersion",
    "UserExists",
    "UserFaceLimit",
    "UserNotFound",
    "UserRecord",
    "VectorStore",
    "new_segment_name",
    "open_aws",
    "open_embedded",
]


@dataclass(frozen=True)
class Storage:
    """One deployment's stores. ``ingest`` is only there on AWS, when an ingest table is named."""

    metadata: MetadataStore
    vectors: VectorStore
    ledger: RequestLedger
    ingest: IngestLedger | None = None
    # Stored-video jobs: their records and their result blobs (pages, segment partials).
    jobs: JobStore = field(default_factory=lambda: _unavailable("video job store"))
    results: JobResults = field(default_factory=lambda: _unavailable("video job results"))
    # Stream processors (issue 26): their records and their runs' checkpoints.
    streams: StreamProcessorStore = field(default_factory=lambda: _unavailable("stream processor store"))


class _Unavailable:
    """Stands in for a store an adapter set does not provide: any use says which, clearly."""

    def __init__(self, what: str):
        self._what = what

    def __getattr__(self, name: str) -> Any:
        # AttributeError, so isinstance(..., JobStore) is simply False for a stand-in.
        raise AttributeError(f"this storage has no {self._what}")


def _unavailable(what: str) -> Any:
    return _Unavailable(what)


def open_embedded(data_dir: str | os.PathLike) -> Storage:
    """SQLite at data_dir/metadata.sqlite3 (metadata, request ledger, video jobs, stream processors), segment files
    under data_dir/vectors/ and video job results under data_dir/jobs/. Raises
    UnsupportedSchemaVersion for a database this version cannot read."""
    from facebank.storage.files import FileVectorStore
    from facebank.storage.job_files import FileJobResults
    from facebank.storage.sqlite import SqliteDatabase, SqliteMetadataStore, SqliteRequestLedger
    from facebank.storage.sqlite_jobs import SqliteJobStore
    from facebank.storage.sqlite_streams import SqliteStreamProcessorStore

    root = Path(data_dir)
    database = SqliteDatabase(root / "metadata.sqlite3")
    return Storage(
        metadata=SqliteMetadataStore(database),
        vectors=FileVectorStore(root / "vectors"),
        ledger=SqliteRequestLedger(database),
        jobs=SqliteJobStore(database),
        results=FileJobResults(root / "jobs"),
        streams=SqliteStreamProcessorStore(database),
    )


def open_aws(
    *,
    bucket: str,
    table_prefix: str = "facebank-",
    s3_prefix: str = "vectors/",
    ingest_table: str | None = None,
    results_prefix: str = "jobs/",
    dynamodb: Any = None,
    s3: Any = None,
    region_name: str | None = None,
) -> Storage:
    """DynamoDB tables <table_prefix>{collections,faces,users} and s3://bucket/<s3_prefix>; the
    request ledger lives in the users table, the ingest ledger (if ingest_table) in its own; video
    jobs in <table_prefix>jobs, their results under s3://bucket/<results_prefix>; stream processors
    in <table_prefix>streams.

    Pass boto3 clients (or resources) to control sessions/endpoints; otherwise default ones are
    made. Tables are not created here (that is the CDK stack's job; see dynamodb.create_tables).
    """
    import boto3
    from botocore.config import Config

    from facebank.storage.dynamodb import DynamoMetadataStore
    from facebank.storage.dynamodb_jobs import DynamoJobStore
    from facebank.storage.dynamodb_ledgers import DynamoIngestLedger, DynamoRequestLedger
    from facebank.storage.dynamodb_streams import DynamoStreamProcessorStore
    from facebank.storage.dynamodb_tables import TableNames
    from facebank.storage.s3 import S3VectorStore
    from facebank.storage.s3_jobs import S3JobResults

    # Standard retry mode backs off on throttling, which on-demand tables do under bursts.
    config = Config(retries={"mode": "standard", "max_attempts": 8})
    dynamodb = dynamodb or boto3.client("dynamodb", region_name=region_name, config=config)
    s3 = s3 or boto3.client("s3", region_name=region_name, config=config)
    tables = TableNames.with_prefix(table_prefix)
    return Storage(
        metadata=DynamoMetadataStore(dynamodb, tables),
        vectors=S3VectorStore(s3, bucket, s3_prefix),
        ledger=DynamoRequestLedger(dynamodb, tables),
        ingest=DynamoIngestLedger(dynamodb, ingest_table) if ingest_table else None,
        jobs=DynamoJobStore(dynamodb, f"{table_prefix}jobs"),
        results=S3JobResults(s3, bucket, results_prefix),
        streams=DynamoStreamProcessorStore(dynamodb, f"{table_prefix}streams"),
    )
