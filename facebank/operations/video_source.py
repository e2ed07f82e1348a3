"""A stored video in S3 as a seekable, read-only binary file: ranged GetObject calls.

FFmpeg (engine.video) seeks around an MP4 (the moov index is often at the end, the frames of a
segment in the middle), so the file is read in ranges rather than downloaded: a segment worker
reads only what it decodes. A BufferedReader of ``BUFFER_BYTES`` in front keeps the number of
GETs low (FFmpeg reads 32 KiB at a time).

The object is pinned when the source opens: by its VersionId when the request gave one, else by
its ETag (``IfMatch``), so an object replaced while a job reads it fails the job rather than
mixing frames of two files.
"""

from __future__ import annotations

import io
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from facebank.operations.images import s3_object_args

BUFFER_BYTES = 8 << 20


class VideoUnreadable(Exception):
    """The video could not be read from S3 (gone, replaced, denied); the message is user-facing."""


def describe(obj: dict) -> str:
    return s3_object_args(obj)[1]


class S3VideoSource(io.RawIOBase):
    def __init__(self, s3: Any, obj: dict):
        super().__init__()
        self._s3 = s3
        self._where = describe(obj)
        self._args: dict[str, str] = {"Bucket": obj["Bucket"], "Key": obj["Name"]}
        if obj.get("Version"):
            self._args["VersionId"] = obj["Version"]
        try:
            head = s3.head_object(**self._args)
        except (ClientError, BotoCoreError) as exc:
            raise VideoUnreadable(f"Unable to read the video {self._where} from S3: {_reason(exc)}") from None
        self.size = int(head["ContentLength"])
        if "VersionId" not in self._args and head.get("ETag"):
            self._args["IfMatch"] = head["ETag"]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        position = base + offset
        if position < 0:
            raise OSError(f"seek to {position} before the start of {self._where}")
        self._pos = position
        return position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= self.size or len(view) == 0:
            return 0
        last = min(self.size, self._pos + len(view)) - 1
        try:
            response = self._s3.get_object(Range=f"bytes={self._pos}-{last}", **self._args)
            data = response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise VideoUnreadable(f"Unable to read the video {self._where} from S3: {_reason(exc)}") from None
        n = min(len(data), len(view))
        view[:n] = data[:n]
        self._pos += n
        return n


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "412"):
            return "the object was replaced while the job read it"
        return code or str(exc)
    return str(exc)


def open_video(s3: Any, obj: dict) -> io.BufferedReader:
    """The S3Object's bytes as a buffered, seekable file. Raises VideoUnreadable."""
    return io.BufferedReader(S3VideoSource(s3, obj), buffer_size=BUFFER_BYTES)
