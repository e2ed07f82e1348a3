"""Embedded vector store: one file per segment at <root>/<collection dir>/<name>.seg.

A collection's directory is named by a digest of its id (``collection_dir``): an id may be 255
characters (a whole file name's limit), start with '.', or differ from another only in case, which
macOS's and Windows' filesystems would fold into one directory.

User-vector segments (user_vectors()) live at <root>/<collection dir>/users/<name>.seg: inside the
collection's directory, so deleting the collection removes them, and not listed with its faces.

A segment is written by ``atomic.atomic_write`` without overwrite: a dot-prefixed temp file in
the same directory, fsynced, then published with os.link, which is atomic and, unlike os.replace,
refuses to overwrite, so an existing immutable segment can never be clobbered. Listing ignores
dot files, so readers in any thread or process see a segment completely or not at all.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from facebank.storage import segments
from facebank.storage.atomic import atomic_write
from facebank.storage.errors import SegmentExists, SegmentNotFound

if TYPE_CHECKING:  # numpy loads only where vectors are handled, not for metadata calls
    import numpy as np

USERS_DIR = "users"  # not a valid segment file name (no .seg suffix), so never listed as one


def collection_dir(collection_id: str) -> str:
    segments.safe_component(collection_id)  # the same ids are refused as on S3
    return "c-" + hashlib.sha256(collection_id.encode()).hexdigest()[:40]


class FileVectorStore:
    def __init__(self, root: str | os.PathLike, *, fsync: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._sub: str | None = None  # "users" in the user_vectors() view
        # Finish deletions a crash interrupted (see delete_collection).
        for entry in self.root.glob(".deleting-*"):
            shutil.rmtree(entry, ignore_errors=True)

    def _dir(self, collection_id: str) -> Path:
        base = self.root / collection_dir(collection_id)
        return base / self._sub if self._sub else base

    def user_vectors(self) -> FileVectorStore:
        view = copy.copy(self)
        view._sub = USERS_DIR
        return view

    def _path(self, collection_id: str, name: str) -> Path:
        return self._dir(collection_id) / (segments.check_name(name) + segments.SUFFIX)

    def write_segment(self, collection_id: str, name: str, face_ids: list[str], vectors: np.ndarray) -> None:
        final = self._path(collection_id, name)
        data = segments.encode(face_ids, vectors)
        try:
            atomic_write(final, data, fsync=self._fsync, overwrite=False)
        except FileExistsError:
            raise SegmentExists(f"segment {name!r} already exists") from None

    def list_segments(self, collection_id: str) -> list[str]:
        try:
            entries = os.listdir(self._dir(collection_id))
        except FileNotFoundError:
            return []
        suffix = segments.SUFFIX
        return sorted(e[: -len(suffix)] for e in entries if e.endswith(suffix) and not e.startswith("."))

    def read_segment(self, collection_id: str, name: str) -> tuple[list[str], np.ndarray]:
        try:
            with open(self._path(collection_id, name), "rb") as f:
                return segments.read(f)
        except FileNotFoundError:
            raise SegmentNotFound(f"segment {name!r} not found") from None

    def delete_segment(self, collection_id: str, name: str) -> None:
        self._path(collection_id, name).unlink(missing_ok=True)

    def delete_collection(self, collection_id: str) -> None:
        # Rename first so the collection vanishes for readers in one step, then remove at leisure.
        src = self._dir(collection_id)
        doomed = self.root / f".deleting-{uuid.uuid4().hex}"
        try:
            os.rename(src, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)
