"""Embedded video job results: one file per blob at <root>/<job_id>/<name>.

A blob is written by ``atomic.atomic_write``: a dot-prefixed temp file in the job's directory,
fsynced, then renamed over the final name (atomic on POSIX), so a reader sees the old bytes or the
new, never a torn page.
Job ids and blob names are checked against a strict alphabet: they come from our own code, but a
path built from them must never leave the root.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from facebank.storage.atomic import atomic_write
from facebank.storage.errors import ResultNotFound

_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _component(value: str) -> str:
    if not _SAFE.match(value) or ".." in value:
        raise ValueError(f"not a safe job id or result name: {value!r}")
    return value


class FileJobResults:
    def __init__(self, root: str | os.PathLike, *, fsync: bool = True):
        self.root = Path(root)
        self._fsync = fsync

    def _path(self, job_id: str, name: str) -> Path:
        return self.root / _component(job_id) / _component(name)

    def put(self, job_id: str, name: str, data: bytes) -> None:
        atomic_write(self._path(job_id, name), data, fsync=self._fsync)

    def get(self, job_id: str, name: str) -> bytes:
        try:
            return self._path(job_id, name).read_bytes()
        except FileNotFoundError:
            raise ResultNotFound(job_id, name) from None

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.root / _component(job_id), ignore_errors=True)
