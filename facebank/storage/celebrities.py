"""The celebrity gallery: the people an operator imported (``facebank celebrities import``), with
the Urls and KnownGender they supplied and one unit vector per person, for RecognizeCelebrities,
GetCelebrityInfo and the celebrity video jobs.

The port (``ports.CelebrityGallery``, with ``CelebrityRecord``), two adapters beside the other
stores, one contract suite (``tests/storage/test_storage_celebrities.py``):

* ``sqlite_celebrities.SqliteCelebrityGallery``: ``<data-dir>/celebrities.sqlite3``;
* ``dynamodb_celebrities.DynamoCelebrityGallery``: the stack's ``<prefix>celebrities`` table.

This module holds what is the same on both: the deterministic Ids and the cached index readers
search (``CelebrityIndex``).

A record carries its vector inline (float32, 512 bytes for a 128-d pack, far below DynamoDB's
400 KB item limit): one write puts a celebrity whole, so a reader never sees a name without its
vector or a vector of another import, and there is no second store to order writes across.

Every write also bumps the gallery's *generation* in the same transaction. Readers cache the
gallery (``CelebrityIndex``) and check the generation on every call (one small read): an import
or a removal made by another process (the CLI while ``facebank serve`` runs, or the import
command against a deployed stack) is seen by the very next call, with no restart and no polling.
"""

from __future__ import annotations

import hashlib
import threading
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from facebank.storage.errors import CelebrityIdConflict
from facebank.storage.ports import KNOWN_GENDERS, MAX_URLS, CelebrityGallery, CelebrityRecord

if TYPE_CHECKING:
    import numpy as np

_ID_LENGTH = 8  # Rekognition's celebrity Ids are short [0-9A-Za-z] strings ("1SK7cR8M")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def normalised_name(name: str) -> str:
    """The name as it is stored and hashed: NFC, outer whitespace removed (so the same name typed
    on two systems gives the same Id)."""
    return unicodedata.normalize("NFC", name).strip()


def celebrity_id(name: str) -> str:
    """The deterministic Id of a celebrity: 8 base-62 characters of the SHA-256 of its name,
    inside botocore's RekognitionUniqueId pattern ``[0-9A-Za-z]*``. The same name gets the same Id
    on every import, machine and deployment; 62^8 ~ 2e14 values make a collision between two names
    of one gallery negligible, and a put refuses one rather than overwrite (CelebrityIdConflict)."""
    number = int.from_bytes(hashlib.sha256(normalised_name(name).encode()).digest(), "big")
    chars = []
    for _ in range(_ID_LENGTH):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(chars)


# --- the cached gallery readers search


@dataclass(frozen=True)
class GallerySnapshot:
    generation: int
    records: tuple[CelebrityRecord, ...]  # of the current pack and FaceModelVersion, by Id
    matrix: np.ndarray | None  # (len(records), dimension) float32; None when empty


class CelebrityIndex:
    """The gallery of one pack as a matrix, reloaded only when the gallery's generation moved.

    A reload reads the generation first and the records after: a write in between makes the next
    call reload again (never a stale cache labelled new). Records of another pack or
    FaceModelVersion are left out (their vectors live in another space); ``skipped`` counts them so
    the operator can be told to re-import."""

    def __init__(self, gallery: CelebrityGallery, pack: str, face_model_versions: tuple[str, ...]):
        # the pack's version and the earlier ones it still compares with (packs.Pack.compatible)
        self.gallery, self.pack, self.face_model_versions = gallery, pack, face_model_versions
        self._lock = threading.Lock()
        self._snapshot: GallerySnapshot | None = None
        self.skipped = 0

    def current(self) -> GallerySnapshot:
        generation = self.gallery.generation()
        with self._lock:
            if self._snapshot is not None and self._snapshot.generation == generation:
                return self._snapshot
        import numpy as np

        every = self.gallery.list_celebrities()
        records = tuple(r for r in every if r.pack == self.pack and r.face_model_version in self.face_model_versions)
        matrix = np.stack([r.unit_vector() for r in records]) if records else None
        snapshot = GallerySnapshot(generation, records, matrix)
        with self._lock:
            self._snapshot, self.skipped = snapshot, len(every) - len(records)
        return snapshot


__all__ = [
    "KNOWN_GENDERS",
    "MAX_URLS",
    "CelebrityGallery",
    "CelebrityIdConflict",
    "CelebrityIndex",
    "CelebrityRecord",
    "GallerySnapshot",
    "celebrity_id",
    "normalised_name",
]

# Where the adapters' names were before they moved beside the other adapters (loaded on use).
_MOVED = {
    "SqliteCelebrityGallery": "facebank.storage.sqlite_celebrities",
    "open_embedded_gallery": "facebank.storage.sqlite_celebrities",
    "DynamoCelebrityGallery": "facebank.storage.dynamodb_celebrities",
    "open_aws_gallery": "facebank.storage.dynamodb_celebrities",
    "create_celebrity_table": "facebank.storage.dynamodb_celebrities",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
