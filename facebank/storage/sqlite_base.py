"""The SQLite base of every embedded adapter: connections (WAL, busy timeout) and the write
transaction, once.

Concurrency: WAL lets readers run beside one writer; every write is a BEGIN IMMEDIATE transaction
(takes the write lock up front, so two writers never deadlock upgrading read locks) and
busy_timeout makes the losers wait rather than fail. ``SqliteFile`` keeps one connection per thread
(sqlite3 connections must not be shared while in use) and per process (never reuse one across
fork); ``connect`` opens a connection for one call (the celebrity gallery's way).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path

DEFAULT_BUSY_TIMEOUT_MS = 60_000


def configure(db: sqlite3.Connection, busy_timeout_ms: int) -> sqlite3.Connection:
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL+NORMAL: durable against process crashes
    return db


@contextmanager
def connect(path: Path, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Iterator[sqlite3.Connection]:
    """A connection for one call, closed after it."""
    with closing(sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)) as db:
        yield configure(db, busy_timeout_ms)


@contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class ThreadConnection:
    """One thread's connection, closed when the thread's locals are released at thread exit,
    so thread-per-request servers do not leak a database handle per request."""

    __slots__ = ("__weakref__", "db", "pid")

    def __init__(self, db: sqlite3.Connection):
        self.db, self.pid = db, os.getpid()

    def close(self) -> None:
        if self.pid == os.getpid():
            self.db.close()

    def __del__(self) -> None:
        with suppress(Exception):  # interpreter shutdown, or already closed
            self.close()


class SqliteFile:
    """A SQLite file with a connection per thread and process; ``migrate`` (run in the first write
    transaction) is where a subclass creates or checks its schema."""

    def __init__(self, path: str | os.PathLike, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._open: weakref.WeakSet[ThreadConnection] = weakref.WeakSet()  # for close()
        with self.write() as db:
            self.migrate(db)

    def migrate(self, db: sqlite3.Connection) -> None:
        """Create or check the schema (inside a write transaction)."""

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, for single statements (each is its own transaction)."""
        held: ThreadConnection | None = getattr(self._local, "held", None)
        if held is None or held.pid != os.getpid():
            # A connection inherited through fork is abandoned, not used or closed: closing it
            # could release locks or checkpoint on behalf of the parent.
            db = sqlite3.connect(
                self.path,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # only so close()/finalizers may close it elsewhere
                timeout=self._busy_timeout_ms / 1000,
            )
            configure(db, self._busy_timeout_ms)
            held = self._local.held = ThreadConnection(db)
            self._open.add(held)
        return held.db

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        with write_transaction(self.connection()) as db:
            yield db

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A snapshot for reads spanning several statements."""
        db = self.connection()
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def close(self) -> None:
        """Close this process's connections; threads that go on reopen lazily."""
        for held in list(self._open):
            held.close()
        self._local = threading.local()
