"""The celebrity gallery: the people an operator imported (``facebank celebrities import``), with
the Urls and KnownGender they supplied and one unit vector per person, for RecognizeCelebrities,
GetCelebrityInfo and the celebrity video jobs.

One port, two adapters, one contract suite (``tests/storage/test_storage_celebrities.py``):

* ``SqliteCelebrityGallery``: ``<data-dir>/celebrities.sqlite3`` (its own file, so the metadata
  database's schema version does not move);
* ``DynamoCelebrityGallery``: the stack's ``<prefix>celebrities`` table, HASH ``celebrity_id`` (S).

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
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from facebank.storage.errors import StorageBusy, StorageError

if TYPE_CHECKING:
    import numpy as np

KNOWN_GENDERS = ("Male", "Female", "Nonbinary", "Unlisted")  # botocore's KnownGenderType
MAX_URLS = 255  # botocore's Urls: at most 255 entries
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


class CelebrityIdConflict(StorageError):
    def __init__(self, celebrity_id: str, name: str, existing: str):
        super().__init__(f"celebrity Id {celebrity_id} of {name!r} is already taken by {existing!r}")
        self.celebrity_id, self.name, self.existing = celebrity_id, name, existing


@dataclass(frozen=True)
class CelebrityRecord:
    celebrity_id: str
    name: str
    urls: tuple[str, ...]
    known_gender: str | None  # one of KNOWN_GENDERS, or None when the operator gave none
    pack: str  # the model pack the vector was computed with; other packs never compare it
    face_model_version: str
    vector: bytes  # float32 little-endian unit vector (the re-normalised mean of the photos' faces)
    photos: int  # photos whose face went into the vector
    updated: float = field(default_factory=time.time)

    def unit_vector(self) -> np.ndarray:
        import numpy as np

        return np.frombuffer(self.vector, dtype="<f4")


class CelebrityGallery(Protocol):
    """Contract (tests/storage/test_storage_celebrities.py, both adapters):

    * ``put_celebrity`` inserts or replaces a record whole, atomically with a generation bump; a
      record whose Id belongs to another name raises CelebrityIdConflict and changes nothing.
    * ``delete_celebrity`` returns whether a record was removed (bumping the generation only then).
    * ``generation`` is a number that changes after every successful put or delete, seen by every
      process; ``list_celebrities`` returns every record, ordered by Id.
    """

    def put_celebrity(self, rec: CelebrityRecord) -> None: ...
    def get_celebrity(self, celebrity_id: str) -> CelebrityRecord | None: ...
    def delete_celebrity(self, celebrity_id: str) -> bool: ...
    def list_celebrities(self) -> list[CelebrityRecord]: ...
    def generation(self) -> int: ...
    def close(self) -> None: ...


# --- embedded: SQLite

_SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS celebrities (
        celebrity_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        urls TEXT NOT NULL,
        known_gender TEXT,
        pack TEXT NOT NULL,
        face_model_version TEXT NOT NULL,
        vector BLOB NOT NULL,
        photos INTEGER NOT NULL,
        updated REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS gallery_state (k INTEGER PRIMARY KEY CHECK (k = 0), generation INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO gallery_state (k, generation) VALUES (0, 0)",
)
_COLS = "celebrity_id, name, urls, known_gender, pack, face_model_version, vector, photos, updated"


def _from_row(row: tuple) -> CelebrityRecord:
    import json

    return CelebrityRecord(
        celebrity_id=row[0],
        name=row[1],
        urls=tuple(json.loads(row[2])),
        known_gender=row[3],
        pack=row[4],
        face_model_version=row[5],
        vector=bytes(row[6]),
        photos=row[7],
        updated=row[8],
    )


class SqliteCelebrityGallery:
    """The gallery in its own SQLite file (WAL). A connection per call: gallery calls are few
    (an import, a listing, one generation read per recognition), and a fresh connection is safe
    across threads and forks without the bookkeeping a long-lived one needs."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 60_000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout = busy_timeout_ms / 1000
        with self._write() as db:
            for statement in _SQLITE_SCHEMA:
                db.execute(statement)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            yield db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # the write lock up front: concurrent importers queue
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def put_celebrity(self, rec: CelebrityRecord) -> None:
        import json

        with self._write() as db:
            row = db.execute("SELECT name FROM celebrities WHERE celebrity_id = ?", (rec.celebrity_id,)).fetchone()
            if row is not None and row[0] != rec.name:
                raise CelebrityIdConflict(rec.celebrity_id, rec.name, row[0])
            db.execute(
                f"INSERT OR REPLACE INTO celebrities ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.celebrity_id,
                    rec.name,
                    json.dumps(list(rec.urls)),
                    rec.known_gender,
                    rec.pack,
                    rec.face_model_version,
                    rec.vector,
                    rec.photos,
                    rec.updated,
                ),
            )
            db.execute("UPDATE gallery_state SET generation = generation + 1 WHERE k = 0")

    def get_celebrity(self, celebrity_id: str) -> CelebrityRecord | None:
        with self._connect() as db:
            row = db.execute(f"SELECT {_COLS} FROM celebrities WHERE celebrity_id = ?", (celebrity_id,)).fetchone()
        return _from_row(row) if row else None

    def delete_celebrity(self, celebrity_id: str) -> bool:
        with self._write() as db:
            deleted = db.execute("DELETE FROM celebrities WHERE celebrity_id = ?", (celebrity_id,)).rowcount > 0
            if deleted:
                db.execute("UPDATE gallery_state SET generation = generation + 1 WHERE k = 0")
        return deleted

    def list_celebrities(self) -> list[CelebrityRecord]:
        with self._connect() as db:
            rows = db.execute(f"SELECT {_COLS} FROM celebrities ORDER BY celebrity_id").fetchall()
        return [_from_row(r) for r in rows]

    def generation(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT generation FROM gallery_state WHERE k = 0").fetchone()[0])

    def close(self) -> None:
        pass  # no connection outlives a call


# --- AWS: DynamoDB

_GENERATION_KEY = "~generation"  # "~" is outside [0-9A-Za-z]: no celebrity Id can take this key
_RETRYABLE = {"TransactionConflict", "ProvisionedThroughputExceeded", "ThrottlingError"}
_MAX_ATTEMPTS = 8


def create_celebrity_table(dynamodb: Any, name: str, *, wait: bool = True) -> None:
    """The gallery's table as the stack declares it (infra/celebrities.py), for tests and tooling."""
    from botocore.exceptions import ClientError

    client = dynamodb.meta.client if hasattr(dynamodb, "Table") else dynamodb
    try:
        client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "celebrity_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "celebrity_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceInUseException":
            raise
    if wait:
        client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})


def _ddb_record(item: dict[str, Any]) -> CelebrityRecord:
    return CelebrityRecord(
        celebrity_id=item["celebrity_id"]["S"],
        name=item["name"]["S"],
        urls=tuple(v["S"] for v in item.get("urls", {}).get("L", [])),
        known_gender=item["known_gender"]["S"] if "known_gender" in item else None,
        pack=item["pack"]["S"],
        face_model_version=item["face_model_version"]["S"],
        vector=bytes(item["vector"]["B"]),
        photos=int(item["photos"]["N"]),
        updated=float(item["updated"]["N"]),
    )


class DynamoCelebrityGallery:
    """The gallery in one DynamoDB table: an item per celebrity plus the ``~generation`` counter
    item, written in one TransactWriteItems with each put or delete. Reads are strongly consistent."""

    def __init__(self, dynamodb: Any, table: str):
        self._client = dynamodb.meta.client if hasattr(dynamodb, "Table") else dynamodb
        self.table = table
        self._bump = {
            "Update": {
                "TableName": table,
                "Key": {"celebrity_id": {"S": _GENERATION_KEY}},
                "UpdateExpression": "ADD generation :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        }

    def _transact(self, items: list[dict], on_condition_failed) -> bool:
        """Run the transaction, retrying contention a bounded number of times; False when the
        first item's condition failed (after ``on_condition_failed`` had its say)."""
        from botocore.exceptions import ClientError

        for attempt in range(_MAX_ATTEMPTS):
            try:
                self._client.transact_write_items(TransactItems=items)
                return True
            except ClientError as e:
                if e.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code") for r in e.response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    on_condition_failed()
                    return False
                if not set(reasons) & _RETRYABLE:
                    raise
            time.sleep(min(0.05 * 2**attempt, 1.0))
        raise StorageBusy("the celebrity gallery stayed contended; retry")

    def put_celebrity(self, rec: CelebrityRecord) -> None:
        item = {
            "celebrity_id": {"S": rec.celebrity_id},
            "name": {"S": rec.name},
            "urls": {"L": [{"S": u} for u in rec.urls]},
            "pack": {"S": rec.pack},
            "face_model_version": {"S": rec.face_model_version},
            "vector": {"B": rec.vector},
            "photos": {"N": str(rec.photos)},
            "updated": {"N": repr(rec.updated)},
        }
        if rec.known_gender is not None:
            item["known_gender"] = {"S": rec.known_gender}
        put = {
            "Put": {
                "TableName": self.table,
                "Item": item,
                # A replace of the same person, or a new Id: never another name's record.
                "ConditionExpression": "attribute_not_exists(celebrity_id) OR #n = :n",
                "ExpressionAttributeNames": {"#n": "name"},
                "ExpressionAttributeValues": {":n": {"S": rec.name}},
            }
        }

        def conflict() -> None:
            existing = self.get_celebrity(rec.celebrity_id)
            raise CelebrityIdConflict(rec.celebrity_id, rec.name, existing.name if existing else "?")

        self._transact([put, self._bump], conflict)

    def get_celebrity(self, celebrity_id: str) -> CelebrityRecord | None:
        if celebrity_id == _GENERATION_KEY:
            return None
        item = self._client.get_item(
            TableName=self.table, Key={"celebrity_id": {"S": celebrity_id}}, ConsistentRead=True
        ).get("Item")
        return _ddb_record(item) if item else None

    def delete_celebrity(self, celebrity_id: str) -> bool:
        if celebrity_id == _GENERATION_KEY:
            return False
        delete = {
            "Delete": {
                "TableName": self.table,
                "Key": {"celebrity_id": {"S": celebrity_id}},
                "ConditionExpression": "attribute_exists(celebrity_id)",
            }
        }
        return self._transact([delete, self._bump], lambda: None)

    def list_celebrities(self) -> list[CelebrityRecord]:
        records, start = [], None
        while True:
            args: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
            if start:
                args["ExclusiveStartKey"] = start
            page = self._client.scan(**args)
            records += [_ddb_record(i) for i in page.get("Items", []) if i["celebrity_id"]["S"] != _GENERATION_KEY]
            start = page.get("LastEvaluatedKey")
            if not start:
                return sorted(records, key=lambda r: r.celebrity_id)

    def generation(self) -> int:
        item = self._client.get_item(
            TableName=self.table, Key={"celebrity_id": {"S": _GENERATION_KEY}}, ConsistentRead=True
        ).get("Item")
        return int(item["generation"]["N"]) if item else 0

    def close(self) -> None:
        pass


def open_embedded_gallery(data_dir: str | Path) -> SqliteCelebrityGallery:
    return SqliteCelebrityGallery(Path(data_dir) / "celebrities.sqlite3")


def open_aws_gallery(table: str, *, dynamodb: Any = None, region_name: str | None = None) -> DynamoCelebrityGallery:
    if dynamodb is None:
        import boto3
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "max_attempts": 8})
        dynamodb = boto3.client("dynamodb", region_name=region_name, config=config)
    return DynamoCelebrityGallery(dynamodb, table)


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
