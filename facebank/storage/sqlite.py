"""Embedded metadata store and request ledger: two adapters on one SQLite database.

Connections and the write transaction (WAL, BEGIN IMMEDIATE, busy timeout) are ``sqlite_base``'s.
"""

from __future__ import annotations

import json
import sqlite3
import time

from facebank.storage.errors import (
    CollectionExists,
    CollectionNotFound,
    FaceNotFound,
    FaceUserConflict,
    UnsupportedSchemaVersion,
    UserExists,
    UserFaceLimit,
    UserNotFound,
)
from facebank.storage.pagination import check_max_results, decode_token, encode_token
from facebank.storage.ports import CollectionRecord, FaceRecord, UserRecord
from facebank.storage.sqlite_base import SqliteFile

SCHEMA_VERSION = 3  # PRAGMA user_version of _SCHEMA; a database at another version is refused

# Run statement by statement, split on ";": none may appear but at a statement's end.
_SCHEMA = """
CREATE TABLE collections (
    collection_id TEXT PRIMARY KEY,
    arn TEXT NOT NULL,
    face_model_version TEXT NOT NULL,
    pack TEXT NOT NULL,
    created REAL NOT NULL,
    tags TEXT NOT NULL,
    face_count INTEGER NOT NULL DEFAULT 0,
    user_count INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE faces (
    collection_id TEXT NOT NULL,
    face_id TEXT NOT NULL,
    image_id TEXT NOT NULL,
    external_image_id TEXT,
    bounding_box TEXT NOT NULL,
    confidence REAL NOT NULL,
    index_faces_model_version TEXT NOT NULL,
    user_id TEXT,
    segment TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (collection_id, face_id)
) WITHOUT ROWID;
CREATE INDEX faces_by_user ON faces (collection_id, user_id, face_id);
CREATE TABLE users (
    collection_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    client_request_token TEXT,
    created REAL NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    vector_id TEXT,
    PRIMARY KEY (collection_id, user_id)
) WITHOUT ROWID;
CREATE TABLE user_tombstones (
    collection_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    client_request_token TEXT,
    deleted REAL NOT NULL,
    PRIMARY KEY (collection_id, user_id)
) WITHOUT ROWID;
-- The request ledger: collection_id is the scope of an entry (delete_collection drops them with it).
CREATE TABLE request_ledger (
    collection_id TEXT NOT NULL,
    key TEXT NOT NULL,
    digest TEXT NOT NULL,
    response TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (collection_id, key)
) WITHOUT ROWID;
CREATE INDEX request_ledger_by_age ON request_ledger (collection_id, created);
"""

# Tables added within schema version 3: created if missing on every open, so databases written
# before them open unchanged (an older facebank ignores them).
_ADDED = """
CREATE TABLE IF NOT EXISTS shard_maps (
    collection_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (collection_id, kind)
) WITHOUT ROWID
"""

_USER_COLS = "user_id, status, client_request_token, created, version, vector_id"

_FACE_COLS = (
    "face_id, image_id, external_image_id, bounding_box, confidence, "
    "index_faces_model_version, user_id, segment, created"
)


def _face(row: tuple) -> FaceRecord:
    return FaceRecord(
        face_id=row[0],
        image_id=row[1],
        external_image_id=row[2],
        bounding_box=json.loads(row[3]),
        confidence=row[4],
        index_faces_model_version=row[5],
        user_id=row[6],
        segment=row[7],
        created=row[8],
    )


def _collection(row: tuple) -> CollectionRecord:
    return CollectionRecord(
        collection_id=row[0],
        arn=row[1],
        face_model_version=row[2],
        pack=row[3],
        created=row[4],
        tags=json.loads(row[5]),
        face_count=row[6],
        user_count=row[7],
    )


def _page(rows: list, max_results: int, kind: str, key) -> tuple[list, str | None]:
    """rows were fetched with LIMIT max_results + 1: the extra row only says "there is more"."""
    if len(rows) > max_results:
        rows = rows[:max_results]
        return rows, encode_token(kind, key(rows[-1]))
    return rows, None


class SqliteDatabase(SqliteFile):
    """The SQLite file behind the embedded metadata store, request ledger and job store.

    Opening creates the schema in a new file and refuses a file at another schema version.
    """

    def migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:  # a new file
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise UnsupportedSchemaVersion(self.path, version, SCHEMA_VERSION)
        db.execute(_ADDED)


class SqliteMetadataStore:
    def __init__(self, database: SqliteDatabase):
        self.database = database

    def close(self) -> None:
        """Close the database's connections (the request ledger's too: they are the same)."""
        self.database.close()

    @staticmethod
    def _require_collection(db: sqlite3.Connection, collection_id: str) -> None:
        if not db.execute("SELECT 1 FROM collections WHERE collection_id = ?", (collection_id,)).fetchone():
            raise CollectionNotFound(collection_id)

    # --- collections

    def create_collection(self, rec: CollectionRecord) -> None:
        with self.database.write() as db:
            try:
                db.execute(
                    "INSERT INTO collections VALUES (?, ?, ?, ?, ?, ?, 0, 0)",
                    (
                        rec.collection_id,
                        rec.arn,
                        rec.face_model_version,
                        rec.pack,
                        rec.created,
                        json.dumps(rec.tags),
                    ),
                )
            except sqlite3.IntegrityError:
                raise CollectionExists(rec.collection_id) from None

    def get_collection(self, collection_id: str) -> CollectionRecord | None:
        row = (
            self.database.connection()
            .execute("SELECT * FROM collections WHERE collection_id = ?", (collection_id,))
            .fetchone()
        )
        return _collection(row) if row else None

    def list_collections(
        self, max_results: int, next_token: str | None = None
    ) -> tuple[list[CollectionRecord], str | None]:
        check_max_results(max_results)
        after = decode_token("collections", next_token) or ""
        rows = (
            self.database.connection()
            .execute(
                "SELECT * FROM collections WHERE collection_id > ? ORDER BY collection_id LIMIT ?",
                (after, max_results + 1),
            )
            .fetchall()
        )
        recs = [_collection(r) for r in rows]
        return _page(recs, max_results, "collections", lambda c: c.collection_id)

    def delete_collection(self, collection_id: str) -> bool:
        with self.database.write() as db:
            cur = db.execute("DELETE FROM collections WHERE collection_id = ?", (collection_id,))
            if cur.rowcount == 0:
                return False
            db.execute("DELETE FROM faces WHERE collection_id = ?", (collection_id,))
            db.execute("DELETE FROM users WHERE collection_id = ?", (collection_id,))
            db.execute("DELETE FROM user_tombstones WHERE collection_id = ?", (collection_id,))
            db.execute("DELETE FROM request_ledger WHERE collection_id = ?", (collection_id,))
            db.execute("DELETE FROM shard_maps WHERE collection_id = ?", (collection_id,))
            return True

    def update_tags(self, collection_id: str, put: dict[str, str], remove: list[str]) -> dict[str, str]:
        with self.database.write() as db:
            row = db.execute("SELECT tags FROM collections WHERE collection_id = ?", (collection_id,)).fetchone()
            if row is None:
                raise CollectionNotFound(collection_id)
            tags = {k: v for k, v in json.loads(row[0]).items() if k not in remove} | put
            db.execute("UPDATE collections SET tags = ? WHERE collection_id = ?", (json.dumps(tags), collection_id))
            return tags

    # --- faces

    def put_faces(self, collection_id: str, faces: list[FaceRecord]) -> list[FaceRecord]:
        for f in faces:
            if f.user_id is not None:
                raise ValueError("new faces carry no user; associate them with set_face_user")
        new: list[FaceRecord] = []
        with self.database.write() as db:
            self._require_collection(db, collection_id)
            for f in faces:
                cur = db.execute(
                    f"INSERT INTO faces (collection_id, {_FACE_COLS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?) ON CONFLICT DO NOTHING",
                    (
                        collection_id,
                        f.face_id,
                        f.image_id,
                        f.external_image_id,
                        json.dumps(f.bounding_box),
                        f.confidence,
                        f.index_faces_model_version,
                        f.segment,
                        f.created,
                    ),
                )
                if cur.rowcount == 1:
                    new.append(f)
            if new:
                db.execute(
                    "UPDATE collections SET face_count = face_count + ? WHERE collection_id = ?",
                    (len(new), collection_id),
                )
        return new

    def get_faces(self, collection_id: str, face_ids: list[str]) -> dict[str, FaceRecord]:
        if not face_ids:
            return {}
        rows = (
            self.database.connection()
            .execute(
                f"SELECT {_FACE_COLS} FROM faces WHERE collection_id = ? "
                "AND face_id IN (SELECT value FROM json_each(?))",
                (collection_id, json.dumps(list(face_ids))),
            )
            .fetchall()
        )
        return {r[0]: _face(r) for r in rows}

    def list_faces(
        self,
        collection_id: str,
        max_results: int,
        next_token: str | None = None,
        user_id: str | None = None,
        face_ids: list[str] | None = None,
    ) -> tuple[list[FaceRecord], str | None]:
        check_max_results(max_results)
        after = decode_token(f"faces/{collection_id}", next_token) or ""
        sql = f"SELECT {_FACE_COLS} FROM faces WHERE collection_id = ? AND face_id > ?"
        args: list = [collection_id, after]
        if user_id is not None:
            sql += " AND user_id = ?"
            args.append(user_id)
        if face_ids is not None:
            sql += " AND face_id IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(list(face_ids)))
        sql += " ORDER BY face_id LIMIT ?"
        args.append(max_results + 1)
        with self.database.read() as db:
            self._require_collection(db, collection_id)
            rows = db.execute(sql, args).fetchall()
        return _page([_face(r) for r in rows], max_results, f"faces/{collection_id}", lambda f: f.face_id)

    def delete_faces(self, collection_id: str, face_ids: list[str]) -> list[str]:
        deleted: list[str] = []
        with self.database.write() as db:
            self._require_collection(db, collection_id)
            for fid in dict.fromkeys(face_ids):  # dedupe, keep order
                cur = db.execute(
                    "DELETE FROM faces WHERE collection_id = ? AND face_id = ? AND user_id IS NULL",
                    (collection_id, fid),
                )
                if cur.rowcount == 1:
                    deleted.append(fid)
            if deleted:
                db.execute(
                    "UPDATE collections SET face_count = face_count - ? WHERE collection_id = ?",
                    (len(deleted), collection_id),
                )
        return deleted

    # --- users

    def put_user(self, collection_id: str, rec: UserRecord) -> None:
        if rec.face_ids:
            raise ValueError("a new user has no faces; associate them with set_face_user")
        with self.database.write() as db:
            self._require_collection(db, collection_id)
            try:
                db.execute(
                    f"INSERT INTO users (collection_id, {_USER_COLS}) VALUES (?, ?, ?, ?, ?, 0, NULL)",
                    (collection_id, rec.user_id, rec.status, rec.client_request_token, rec.created),
                )
            except sqlite3.IntegrityError:
                raise UserExists(rec.user_id) from None
            db.execute(
                "UPDATE collections SET user_count = user_count + 1 WHERE collection_id = ?",
                (collection_id,),
            )

    @staticmethod
    def _user(db: sqlite3.Connection, collection_id: str, row: tuple) -> UserRecord:
        face_ids = [
            r[0]
            for r in db.execute(
                "SELECT face_id FROM faces WHERE collection_id = ? AND user_id = ? ORDER BY face_id",
                (collection_id, row[0]),
            )
        ]
        return UserRecord(
            user_id=row[0],
            status=row[1],
            face_ids=face_ids,
            client_request_token=row[2],
            created=row[3],
            version=row[4],
            vector_id=row[5],
        )

    def get_user(self, collection_id: str, user_id: str) -> UserRecord | None:
        with self.database.read() as db:
            row = db.execute(
                f"SELECT {_USER_COLS} FROM users WHERE collection_id = ? AND user_id = ?",
                (collection_id, user_id),
            ).fetchone()
            return self._user(db, collection_id, row) if row else None

    def get_users(self, collection_id: str, user_ids: list[str]) -> dict[str, UserRecord]:
        if not user_ids:
            return {}
        with self.database.read() as db:
            rows = db.execute(
                f"SELECT {_USER_COLS} FROM users WHERE collection_id = ? "
                "AND user_id IN (SELECT value FROM json_each(?))",
                (collection_id, json.dumps(list(user_ids))),
            ).fetchall()
            return {r[0]: self._user(db, collection_id, r) for r in rows}

    def delete_user(self, collection_id: str, user_id: str, client_request_token: str | None = None) -> bool:
        with self.database.write() as db:
            cur = db.execute(
                "DELETE FROM users WHERE collection_id = ? AND user_id = ?",
                (collection_id, user_id),
            )
            if cur.rowcount == 0:
                return False
            db.execute(
                "INSERT OR REPLACE INTO user_tombstones VALUES (?, ?, ?, ?)",
                (collection_id, user_id, client_request_token, time.time()),
            )
            db.execute(
                "UPDATE faces SET user_id = NULL WHERE collection_id = ? AND user_id = ?",
                (collection_id, user_id),
            )
            db.execute(
                "UPDATE collections SET user_count = user_count - 1 WHERE collection_id = ?",
                (collection_id,),
            )
            return True

    def deleted_user_token(self, collection_id: str, user_id: str) -> str | None:
        row = (
            self.database.connection()
            .execute(
                "SELECT client_request_token FROM user_tombstones WHERE collection_id = ? AND user_id = ?",
                (collection_id, user_id),
            )
            .fetchone()
        )
        return row[0] if row else None

    def list_users(
        self, collection_id: str, max_results: int, next_token: str | None = None
    ) -> tuple[list[UserRecord], str | None]:
        check_max_results(max_results)
        after = decode_token(f"users/{collection_id}", next_token) or ""
        with self.database.read() as db:
            self._require_collection(db, collection_id)
            rows = db.execute(
                f"SELECT {_USER_COLS} FROM users WHERE collection_id = ? AND user_id > ? ORDER BY user_id LIMIT ?",
                (collection_id, after, max_results + 1),
            ).fetchall()
            users = [self._user(db, collection_id, r) for r in rows[:max_results]]
        more = len(rows) > max_results
        return users, encode_token(f"users/{collection_id}", users[-1].user_id) if more else None

    def set_face_user(
        self,
        collection_id: str,
        face_id: str,
        user_id: str | None,
        expected_user_id: str | None,
        max_faces: int | None = None,
    ) -> None:
        with self.database.write() as db:
            row = db.execute(
                "SELECT user_id FROM faces WHERE collection_id = ? AND face_id = ?",
                (collection_id, face_id),
            ).fetchone()
            if row is None:
                raise FaceNotFound(face_id)
            if row[0] != expected_user_id:
                raise FaceUserConflict(face_id, row[0])
            if (
                user_id is not None
                and not db.execute(
                    "SELECT 1 FROM users WHERE collection_id = ? AND user_id = ?",
                    (collection_id, user_id),
                ).fetchone()
            ):
                raise UserNotFound(user_id)
            if user_id == expected_user_id:
                return  # nothing moves; the premise holds
            if user_id is not None and max_faces is not None:
                (have,) = db.execute(
                    "SELECT COUNT(*) FROM faces WHERE collection_id = ? AND user_id = ?",
                    (collection_id, user_id),
                ).fetchone()
                if have >= max_faces:
                    raise UserFaceLimit(user_id, max_faces)
            db.execute(
                "UPDATE faces SET user_id = ? WHERE collection_id = ? AND face_id = ?",
                (user_id, collection_id, face_id),
            )
            db.execute(
                "UPDATE users SET version = version + 1, status = 'UPDATING' "
                "WHERE collection_id = ? AND user_id IN (?, ?)",
                (collection_id, user_id, expected_user_id),
            )

    def set_user_vector(self, collection_id: str, user_id: str, vector_id: str | None, version: int) -> bool:
        with self.database.write() as db:
            row = db.execute(
                "SELECT version FROM users WHERE collection_id = ? AND user_id = ?",
                (collection_id, user_id),
            ).fetchone()
            if row is None:
                raise UserNotFound(user_id)
            if row[0] != version:
                return False
            has_faces = db.execute(
                "SELECT 1 FROM faces WHERE collection_id = ? AND user_id = ? LIMIT 1",
                (collection_id, user_id),
            ).fetchone()
            db.execute(
                "UPDATE users SET vector_id = ?, status = ? WHERE collection_id = ? AND user_id = ?",
                (vector_id, "ACTIVE" if has_faces else "CREATED", collection_id, user_id),
            )
            return True

    # --- shard maps

    def get_shard_map(self, collection_id: str, kind: str) -> tuple[str | None, int]:
        row = (
            self.database.connection()
            .execute("SELECT body, version FROM shard_maps WHERE collection_id = ? AND kind = ?", (collection_id, kind))
            .fetchone()
        )
        return (row[0], int(row[1])) if row else (None, 0)

    def put_shard_map(self, collection_id: str, kind: str, body: str, version: int) -> bool:
        with self.database.write() as db:
            row = db.execute(
                "SELECT version FROM shard_maps WHERE collection_id = ? AND kind = ?", (collection_id, kind)
            ).fetchone()
            if (int(row[0]) if row else 0) != version:
                return False
            db.execute(
                "INSERT OR REPLACE INTO shard_maps (collection_id, kind, version, body) VALUES (?, ?, ?, ?)",
                (collection_id, kind, version + 1, body),
            )
            return True


class SqliteRequestLedger:
    """The request ledger in the metadata store's database (table request_ledger), so that
    delete_collection drops a collection's entries in its own transaction."""

    _ENTRY = "SELECT digest, response FROM request_ledger WHERE collection_id = ? AND key = ?"

    def __init__(self, database: SqliteDatabase):
        self.database = database

    def claim(self, scope: str, key: str, digest: str, since: float) -> tuple[str, str | None]:
        with self.database.write() as db:
            db.execute("DELETE FROM request_ledger WHERE collection_id = ? AND created < ?", (scope, since))
            db.execute(
                "INSERT OR IGNORE INTO request_ledger VALUES (?, ?, ?, NULL, ?)",
                (scope, key, digest, time.time()),
            )
            row = db.execute(self._ENTRY, (scope, key)).fetchone()
        return row[0], row[1]

    def answer(self, scope: str, key: str, response: str) -> str:
        with self.database.write() as db:
            db.execute(
                "UPDATE request_ledger SET response = ? WHERE collection_id = ? AND key = ? AND response IS NULL",
                (response, scope, key),
            )
            row = db.execute(self._ENTRY, (scope, key)).fetchone()
        return row[1] if row and row[1] is not None else response

    def release(self, scope: str, key: str) -> None:
        with self.database.write() as db:
            db.execute(
                "DELETE FROM request_ledger WHERE collection_id = ? AND key = ? AND response IS NULL",
                (scope, key),
            )
