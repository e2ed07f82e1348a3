"""Embedded-only properties: files, SQLite handles, several OS processes on one data_dir."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from storage_helpers import collection_record, list_all, unit_vectors

from facebank.search import VectorIndex
from facebank.storage import UnsupportedSchemaVersion, UserRecord, open_embedded, segments
from facebank.storage.files import FileVectorStore, collection_dir
from facebank.storage.sqlite import SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[2]


def test_half_written_file_is_invisible(tmp_path):
    store = FileVectorStore(tmp_path)
    store.write_segment("c1", "done", ["a"], unit_vectors(1, 1))
    # What a writer killed before its link leaves behind: a partial temp file.
    torn = segments.encode(["b"], unit_vectors(1, 2))[:30]
    directory = tmp_path / collection_dir("c1")
    (directory / ".torn.123.abc.tmp").write_bytes(torn)
    assert store.list_segments("c1") == ["done"]
    assert not [p for p in directory.iterdir() if p.name.startswith(".done")]


def test_interrupted_collection_delete_is_finished_on_open(tmp_path):
    (tmp_path / ".deleting-123" / "x").mkdir(parents=True)
    FileVectorStore(tmp_path)
    assert not (tmp_path / ".deleting-123").exists()


_WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from facebank.storage import open_embedded
    from facebank.search import VectorIndex
    from facebank.storage.ports import FaceRecord

    data_dir, worker = sys.argv[1], int(sys.argv[2])
    storage = open_embedded(data_dir)
    index = VectorIndex(storage.vectors, storage.metadata)
    rng = np.random.default_rng(worker)
    for batch in range(5):
        recs = [
            FaceRecord(f"w{worker}-{batch}-{i}", "img", None, {}, 99.0, "6", None, "", 0.0)
            for i in range(4)
        ]
        v = rng.standard_normal((4, 16)).astype(np.float32)
        assert len(index.add_faces("c1", recs, v)) == 4
    """
)


def test_concurrent_processes_embedded(tmp_path):
    """Several OS processes write one embedded data_dir: counts stay exact, nothing is lost."""
    storage = open_embedded(tmp_path)
    meta, vecs = storage.metadata, storage.vectors
    meta.create_collection(collection_record("c1"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), str(w)], env=env) for w in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 4
    assert meta.get_collection("c1").face_count == 4 * 5 * 4
    assert len(list_all(lambda t: meta.list_faces("c1", 50, t))) == 80
    assert len(vecs.list_segments("c1")) == 20
    index = VectorIndex(vecs, meta)
    assert len(index.search("c1", np.ones(16, np.float32), 100)) == 80


def test_sqlite_connections_of_finished_threads_are_closed(tmp_path):
    """Thread-per-request servers must not leak one database handle per request."""
    meta = open_embedded(tmp_path).metadata
    meta.create_collection(collection_record("c1"))

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def request():
        assert meta.get_collection("c1") is not None

    warm = threading.Thread(target=request)  # warm up anything lazily opened
    warm.start()
    warm.join()
    before = fds()
    for _ in range(20):
        t = threading.Thread(target=request)
        t.start()
        t.join()
    assert fds() <= before + 2
    meta.close()


@pytest.mark.parametrize("version", [1, 2, SCHEMA_VERSION + 1])
def test_a_database_at_another_schema_version_is_refused(tmp_path, version):
    """There are no migrations: a database at another version is refused, its tables and version kept."""
    db = sqlite3.connect(tmp_path / "metadata.sqlite3")
    db.execute("CREATE TABLE collections (collection_id TEXT PRIMARY KEY)")
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()
    with pytest.raises(UnsupportedSchemaVersion, match=f"schema version {version};"):
        open_embedded(tmp_path)
    db = sqlite3.connect(tmp_path / "metadata.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == version
    assert db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == [("collections",)]
    db.close()


def test_reopening_a_data_dir_keeps_everything(tmp_path):
    storage = open_embedded(tmp_path)
    storage.metadata.create_collection(collection_record("c1"))
    storage.metadata.put_user("c1", UserRecord("u", "CREATED", client_request_token="t"))
    assert storage.metadata.delete_user("c1", "u", "t")
    assert storage.ledger.claim("c1", "create_user:t", "d", 0) == ("d", None)
    storage.metadata.close()
    again = open_embedded(tmp_path)
    assert again.metadata.get_collection("c1") == collection_record("c1")
    assert again.metadata.deleted_user_token("c1", "u") == "t"
    assert again.ledger.claim("c1", "create_user:t", "other", 0) == ("d", None)
    again.metadata.close()
    db = sqlite3.connect(tmp_path / "metadata.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
