"""The embedded celebrity gallery: ``<data-dir>/celebrities.sqlite3`` (its own file, so the metadata
database's schema version does not move). The port and its contract: ``ports.CelebrityGallery``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from facebank.storage.errors import CelebrityIdConflict
from facebank.storage.ports import CelebrityRecord
from facebank.storage.sqlite_base import connect, write_transaction

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
        self._timeout_ms = busy_timeout_ms
        with self._write() as db:
            for statement in _SQLITE_SCHEMA:
                db.execute(statement)

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return connect(self.path, self._timeout_ms)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db, write_transaction(db):  # the write lock up front: importers queue
            yield db

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


def open_embedded_gallery(data_dir: str | Path) -> SqliteCelebrityGallery:
    return SqliteCelebrityGallery(Path(data_dir) / "celebrities.sqlite3")
