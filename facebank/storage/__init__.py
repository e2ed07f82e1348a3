"""Storage behind two ports (see ports.py): metadata and vector segments, embedded or on AWS.

    meta, vecs = open_embedded("/var/lib/facebank")
    index = VectorIndex(vecs, meta)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from facebank.storage.errors import (
    CollectionExists,
    CollectionNotFound,
    CorruptSegment,
    FaceNotFound,
    FaceUserConflict,
    InvalidPaginationToken,
    SegmentExists,
    SegmentNotFound,
    StorageBusy,
    StorageError,
    UserExists,
    UserFaceLimit,
    UserNotFound,
)
from facebank.storage.index import CompactionResult, VectorIndex
from facebank.storage.ports import (
    CollectionRecord,
    FaceRecord,
    MetadataStore,
    UserRecord,
    VectorStore,
)
from facebank.storage.segments import new_segment_name
from facebank.storage.users import UserVectorIndex

__all__ = [
    "CollectionExists",
    "CollectionNotFound",
    "CollectionRecord",
    "CompactionResult",
    "CorruptSegment",
    "FaceNotFound",
    "FaceRecord",
    "FaceUserConflict",
    "InvalidPaginationToken",
    "MetadataStore",
    "SegmentExists",
    "SegmentNotFound",
    "StorageBusy",
    "StorageError",
    "UserExists",
    "UserFaceLimit",
    "UserNotFound",
    "UserRecord",
    "UserVectorIndex",
    "VectorIndex",
    "VectorStore",
    "new_segment_name",
    "open_aws",
    "open_embedded",
]


def open_embedded(data_dir: str | os.PathLike) -> tuple[MetadataStore, VectorStore]:
    """SQLite at data_dir/metadata.sqlite3 and segment files under data_dir/vectors/."""
    from facebank.storage.files import FileVectorStore
    from facebank.storage.sqlite import SqliteMetadataStore

    root = Path(data_dir)
    return SqliteMetadataStore(root), FileVectorStore(root / "vectors")


def open_aws(
    *,
    bucket: str,
    table_prefix: str = "facebank-",
    s3_prefix: str = "vectors/",
    dynamodb: Any = None,
    s3: Any = None,
    region_name: str | None = None,
) -> tuple[MetadataStore, VectorStore]:
    """DynamoDB tables <table_prefix>{collections,faces,users} and s3://bucket/<s3_prefix>.

    Pass boto3 clients (or resources) to control sessions/endpoints; otherwise default ones are
    made. Tables are not created here (that is the CDK stack's job; see dynamodb.create_tables).
    """
    import boto3
    from botocore.config import Config

    from facebank.storage.dynamodb import DynamoMetadataStore, TableNames
    from facebank.storage.s3 import S3VectorStore

    # Standard retry mode backs off on throttling, which on-demand tables do under bursts.
    config = Config(retries={"mode": "standard", "max_attempts": 8})
    dynamodb = dynamodb or boto3.client("dynamodb", region_name=region_name, config=config)
    s3 = s3 or boto3.client("s3", region_name=region_name, config=config)
    return (
        DynamoMetadataStore(dynamodb, TableNames.with_prefix(table_prefix)),
        S3VectorStore(s3, bucket, s3_prefix),
    )
