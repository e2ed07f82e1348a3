"""Embedded video jobs: the ``jobs`` table in the metadata database (sqlite.SqliteDatabase).

The table is created if missing when the store opens (``CREATE TABLE IF NOT EXISTS``), so a data
directory written before video jobs existed gains it without a schema version change: nothing else
in the file changes. Every write is one BEGIN IMMEDIATE transaction, so counting the jobs in
progress and inserting a new one cannot interleave with another create (the limit holds under
concurrent Start* calls), and a finished job frees its slot in the write that finishes it.
"""

from __future__ import annotations

import json
import sqlite3
import time

from facebank.storage.errors import JobExists, JobLimit
from facebank.storage.ports import JobRecord
from facebank.storage.sqlite import SqliteDatabase

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    api TEXT NOT NULL,
    status TEXT NOT NULL,
    video TEXT NOT NULL,
    params TEXT NOT NULL,
    created REAL NOT NULL,
    job_tag TEXT,
    notification_channel TEXT,
    status_message TEXT,
    video_metadata TEXT,
    segments_total INTEGER NOT NULL DEFAULT 0,
    segments_done TEXT NOT NULL DEFAULT '[]',
    result_count INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created)",
)

_COLS = (
    "job_id, api, status, video, params, created, job_tag, notification_channel, status_message, "
    "video_metadata, segments_total, segments_done, result_count, updated"
)


def _loads(text: str | None) -> dict | None:
    return None if text is None else json.loads(text)


def _job(row: tuple) -> JobRecord:
    return JobRecord(
        job_id=row[0],
        api=row[1],
        status=row[2],
        video=json.loads(row[3]),
        params=json.loads(row[4]),
        created=row[5],
        job_tag=row[6],
        notification_channel=_loads(row[7]),
        status_message=row[8],
        video_metadata=_loads(row[9]),
        segments_total=row[10],
        segments_done=frozenset(json.loads(row[11])),
        result_count=row[12],
        updated=row[13],
    )


class SqliteJobStore:
    def __init__(self, database: SqliteDatabase):
        self.database = database
        with database.write() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    def create_job(self, rec: JobRecord, max_active: int) -> None:
        with self.database.write() as db:
            if db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (rec.job_id,)).fetchone():
                raise JobExists(rec.job_id)  # first: a taken id is the answer even when the limit is reached too
            (active,) = db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'IN_PROGRESS'").fetchone()
            if active >= max_active:
                raise JobLimit(max_active)
            try:
                db.execute(
                    f"INSERT INTO jobs ({_COLS}) "
                    "VALUES (?, ?, 'IN_PROGRESS', ?, ?, ?, ?, ?, NULL, NULL, 0, '[]', 0, ?)",
                    (
                        rec.job_id,
                        rec.api,
                        json.dumps(rec.video),
                        json.dumps(rec.params),
                        rec.created,
                        rec.job_tag,
                        None if rec.notification_channel is None else json.dumps(rec.notification_channel),
                        time.time(),
                    ),
                )
            except sqlite3.IntegrityError:
                raise JobExists(rec.job_id) from None

    def get_job(self, job_id: str) -> JobRecord | None:
        row = self.database.connection().execute(f"SELECT {_COLS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def plan_job(self, job_id: str, video_metadata: dict, segments_total: int) -> None:
        with self.database.write() as db:
            db.execute(
                "UPDATE jobs SET video_metadata = ?, segments_total = ?, updated = ? "
                "WHERE job_id = ? AND status = 'IN_PROGRESS'",
                (json.dumps(video_metadata), segments_total, time.time(), job_id),
            )

    def segment_done(self, job_id: str, segment: int) -> tuple[int, int]:
        with self.database.write() as db:
            row = db.execute("SELECT segments_done, segments_total FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return 0, 0
            done = set(json.loads(row[0])) | {int(segment)}
            db.execute(
                "UPDATE jobs SET segments_done = ?, updated = ? WHERE job_id = ?",
                (json.dumps(sorted(done)), time.time(), job_id),
            )
            return len(done), row[1]

    def finish_job(self, job_id: str, status: str, status_message: str | None, result_count: int) -> bool:
        if status not in ("SUCCEEDED", "FAILED"):
            raise ValueError(f"a job finishes SUCCEEDED or FAILED, not {status!r}")
        with self.database.write() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, status_message = ?, result_count = ?, updated = ? "
                "WHERE job_id = ? AND status = 'IN_PROGRESS'",
                (status, status_message, result_count, time.time(), job_id),
            )
            return cur.rowcount == 1

    def active_jobs(self) -> list[JobRecord]:
        rows = (
            self.database.connection()
            .execute(f"SELECT {_COLS} FROM jobs WHERE status = 'IN_PROGRESS' ORDER BY created, job_id")
            .fetchall()
        )
        return [_job(r) for r in rows]
