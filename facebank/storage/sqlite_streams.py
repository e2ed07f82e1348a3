"""Embedded stream processors (``StreamProcessorStore``, see ports.py): the ``stream_processors``
table in the metadata database (sqlite.SqliteDatabase).

Like the jobs table, it is created if missing when the store opens (``CREATE TABLE IF NOT
EXISTS``), so a data directory written before stream processors existed gains it without a schema
version change. Every write is one BEGIN IMMEDIATE transaction: the count against the limit and the
insert of a new processor, and the read-check-write of a transition, cannot interleave with another
writer (two racing transitions: the second sees the first's status and writes nothing).

A row: name, status, session (what conditions read), body (JSON of the rest of the record:
facebank.storage.streams) and checkpoint (JSON, NULL until the current session puts one; a new
session clears it).
"""

from __future__ import annotations

import json

from facebank.storage import streams
from facebank.storage.errors import StreamProcessorExists, StreamProcessorLimit
from facebank.storage.pagination import check_max_results, decode_token, encode_token
from facebank.storage.ports import StreamProcessorRecord
from facebank.storage.sqlite import SqliteDatabase

_SCHEMA = """CREATE TABLE IF NOT EXISTS stream_processors (
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    session INTEGER NOT NULL,
    body TEXT NOT NULL,
    checkpoint TEXT
) WITHOUT ROWID"""


class SqliteStreamProcessorStore:
    def __init__(self, database: SqliteDatabase):
        self.database = database
        with database.write() as db:
            db.execute(_SCHEMA)

    def create(self, rec: StreamProcessorRecord, max_processors: int) -> None:
        streams.check_status(rec.status)
        with self.database.write() as db:
            if db.execute("SELECT 1 FROM stream_processors WHERE name = ?", (rec.name,)).fetchone():
                raise StreamProcessorExists(f"stream processor {rec.name!r} already exists")
            (count,) = db.execute("SELECT COUNT(*) FROM stream_processors").fetchone()
            if count >= max_processors:
                raise StreamProcessorLimit(f"{max_processors} stream processors exist already")
            db.execute(
                "INSERT INTO stream_processors (name, status, session, body) VALUES (?, ?, ?, ?)",
                (rec.name, rec.status, rec.session, streams.body(rec)),
            )

    def get(self, name: str) -> StreamProcessorRecord | None:
        row = (
            self.database.connection()
            .execute("SELECT name, status, session, body FROM stream_processors WHERE name = ?", (name,))
            .fetchone()
        )
        return streams.record(*row) if row else None

    def list(self, limit: int, token: str | None = None) -> tuple[list[StreamProcessorRecord], str | None]:
        check_max_results(limit)
        after = decode_token(streams.LISTING, token) or ""
        rows = (
            self.database.connection()
            .execute(
                "SELECT name, status, session, body FROM stream_processors WHERE name > ? ORDER BY name LIMIT ?",
                (after, limit + 1),
            )
            .fetchall()
        )
        records = [streams.record(*row) for row in rows[:limit]]
        more = len(rows) > limit
        return records, encode_token(streams.LISTING, records[-1].name) if more else None

    def transition(
        self,
        name: str,
        expect: tuple[str, ...],
        status: str,
        message: str | None = None,
        *,
        session: int | None = None,
        new_session: bool = False,
        changes: dict | None = None,
    ) -> StreamProcessorRecord | None:
        with self.database.write() as db:
            row = db.execute(
                "SELECT name, status, session, body FROM stream_processors WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                return None
            rec = streams.record(*row)
            if not streams.allowed(rec, expect, session):
                return None
            new = streams.next_record(rec, status, message, new_session, changes)
            checkpoint = "NULL" if new_session else "checkpoint"
            db.execute(
                f"UPDATE stream_processors SET status = ?, session = ?, body = ?, checkpoint = {checkpoint} "
                "WHERE name = ?",
                (new.status, new.session, streams.body(new), name),
            )
            return new

    def delete(self, name: str, expect: tuple[str, ...]) -> bool:
        marks = ", ".join("?" * len(expect))
        with self.database.write() as db:
            cur = db.execute(f"DELETE FROM stream_processors WHERE name = ? AND status IN ({marks})", (name, *expect))
            return cur.rowcount == 1

    def put_checkpoint(self, name: str, session: int, data: dict) -> bool:
        text = json.dumps(data, separators=(",", ":"))
        with self.database.write() as db:
            cur = db.execute(
                "UPDATE stream_processors SET checkpoint = ? WHERE name = ? AND session = ?", (text, name, session)
            )
            return cur.rowcount == 1

    def get_checkpoint(self, name: str) -> dict | None:
        row = (
            self.database.connection()
            .execute("SELECT checkpoint FROM stream_processors WHERE name = ?", (name,))
            .fetchone()
        )
        return json.loads(row[0]) if row and row[0] is not None else None
