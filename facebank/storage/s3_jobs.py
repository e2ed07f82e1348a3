"""AWS store of stored-video job results (``JobResults``, see ports.py): one S3 object per blob at
``<prefix><job_id>/<name>`` in the embeddings bucket (prefix ``jobs/``, beside ``vectors/``).

A PUT replaces an object atomically (readers see the old or the new bytes, never a mix) and S3 is
strongly read-after-write consistent, so a page written by the fan-in step is what Get* reads next.
Names are checked (no "/", no dot-names) so a name can never reach outside its job's prefix.
"""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import ClientError

from facebank.storage.errors import ResultNotFound

_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


def _part(value: str, what: str) -> str:
    if not _PART.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}")
    return value


class S3JobResults:
    def __init__(self, s3: Any, bucket: str, prefix: str = "jobs/"):
        self._s3 = s3.meta.client if hasattr(s3, "Bucket") else s3
        self.bucket = bucket
        self.prefix = prefix

    def _dir(self, job_id: str) -> str:
        return f"{self.prefix}{_part(job_id, 'job id')}/"

    def _key(self, job_id: str, name: str) -> str:
        return self._dir(job_id) + _part(name, "result name")

    def put(self, job_id: str, name: str, data: bytes) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=self._key(job_id, name), Body=data)

    def get(self, job_id: str, name: str) -> bytes:
        try:
            obj = self._s3.get_object(Bucket=self.bucket, Key=self._key(job_id, name))
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                raise ResultNotFound(job_id, name) from None
            raise
        return obj["Body"].read()

    def delete_job(self, job_id: str) -> None:
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._dir(job_id))
        keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
