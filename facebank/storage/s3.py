"""AWS vector store: one S3 object per segment at <prefix><collection_id>/<name>.seg.

User-vector segments (user_vectors()) are at <prefix><collection_id>/users/<name>.seg: under the
collection's prefix, so delete_collection removes them, and skipped by list_segments of faces
(which ignores keys with a further "/").

A PUT is atomic (readers see the whole object or none) and S3 is strongly read-after-write
consistent, including LIST. PUT with If-None-Match: * keeps segments immutable.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from facebank.storage import segments
from facebank.storage.errors import SegmentExists, SegmentNotFound

if TYPE_CHECKING:  # numpy loads only where vectors are handled, not for metadata calls
    import numpy as np


def _client(s3: Any) -> Any:
    """Accept a boto3 S3 client or resource."""
    return s3.meta.client if hasattr(s3, "Bucket") else s3


class S3VectorStore:
    def __init__(self, s3: Any, bucket: str, prefix: str = "vectors/"):
        self._s3 = _client(s3)
        self.bucket = bucket
        self.prefix = prefix
        self._sub = ""  # "users/" in the user_vectors() view

    def _dir(self, collection_id: str) -> str:
        return f"{self.prefix}{segments.safe_component(collection_id)}/{self._sub}"

    def user_vectors(self) -> S3VectorStore:
        view = copy.copy(self)
        view._sub = "users/"
        return view

    def _key(self, collection_id: str, name: str) -> str:
        return self._dir(collection_id) + segments.check_name(name) + segments.SUFFIX

    def write_segment(self, collection_id: str, name: str, face_ids: list[str], vectors: np.ndarray) -> None:
        key = self._key(collection_id, name)
        body = segments.encode(face_ids, vectors)
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as e:
            # 412: the key exists; 409: a concurrent conditional PUT to the same key won.
            if e.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise SegmentExists(f"segment {name!r} already exists") from None
            raise

    def _keys(self, collection_id: str) -> list[str]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._dir(collection_id))
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def list_segments(self, collection_id: str) -> list[str]:
        base = len(self._dir(collection_id))
        suffix = segments.SUFFIX
        names = (k[base:] for k in self._keys(collection_id))
        return sorted(n[: -len(suffix)] for n in names if n.endswith(suffix) and "/" not in n)

    def read_segment(self, collection_id: str, name: str) -> tuple[list[str], np.ndarray]:
        try:
            obj = self._s3.get_object(Bucket=self.bucket, Key=self._key(collection_id, name))
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                raise SegmentNotFound(f"segment {name!r} not found") from None
            raise
        return segments.decode(obj["Body"].read())

    def delete_segment(self, collection_id: str, name: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self._key(collection_id, name))

    def delete_collection(self, collection_id: str) -> None:
        keys = self._keys(collection_id)
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
