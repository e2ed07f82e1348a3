"""User vectors on both adapters: membership versions and status, the vector commit, the face cap,
deleted-user tombstones, the user-vector namespace of the vector store, and UserVectorIndex
(refresh, search liveness, compaction, concurrency)."""

from __future__ import annotations

import numpy as np
import pytest
from storage_helpers import (
    collection_record,
    faces,
    list_all,
    run_threads,
    unit_vectors,
)

from facebank.search import UserVectorIndex, VectorIndex
from facebank.search.users import mean_vector, row_id
from facebank.storage import CollectionNotFound, UserFaceLimit, UserNotFound, UserRecord


def user(stores, cid, user_id):
    return stores.meta.get_user(cid, user_id)


# --- metadata: versions, status, the vector commit


def test_membership_changes_bump_version_and_mark_updating(stores, cid):
    meta = stores.meta
    meta.put_faces(cid, faces("f", 3))
    meta.put_user(cid, UserRecord("u1", "CREATED"))
    meta.put_user(cid, UserRecord("u2", "CREATED"))
    fresh = user(stores, cid, "u1")
    assert (fresh.version, fresh.vector_id, fresh.status) == (0, None, "CREATED")

    meta.set_face_user(cid, "f-0000", "u1", None)
    assert (user(stores, cid, "u1").version, user(stores, cid, "u1").status) == (1, "UPDATING")
    meta.set_face_user(cid, "f-0000", "u1", "u1")  # nothing moves: no new version
    assert user(stores, cid, "u1").version == 1
    meta.set_face_user(cid, "f-0000", "u2", "u1")  # a move changes both users
    assert (user(stores, cid, "u1").version, user(stores, cid, "u2").version) == (2, 1)
    assert user(stores, cid, "u2").status == "UPDATING"
    meta.set_face_user(cid, "f-0000", None, "u2")
    assert user(stores, cid, "u2").version == 2 and user(stores, cid, "u2").face_ids == []


def test_set_user_vector_commits_only_for_the_membership_it_was_built_from(stores, cid):
    meta = stores.meta
    meta.put_faces(cid, faces("f", 2))
    meta.put_user(cid, UserRecord("u", "CREATED"))
    meta.set_face_user(cid, "f-0000", "u", None)  # version 1
    meta.set_face_user(cid, "f-0001", "u", None)  # version 2
    assert meta.set_user_vector(cid, "u", "stale", 1) is False
    assert user(stores, cid, "u").vector_id is None and user(stores, cid, "u").status == "UPDATING"
    assert meta.set_user_vector(cid, "u", "v2", 2) is True
    got = user(stores, cid, "u")
    assert (got.vector_id, got.status, got.version, got.face_ids) == ("v2", "ACTIVE", 2, ["f-0000", "f-0001"])
    meta.set_face_user(cid, "f-0000", None, "u")
    meta.set_face_user(cid, "f-0001", None, "u")
    assert meta.set_user_vector(cid, "u", None, 4) is True
    assert (user(stores, cid, "u").vector_id, user(stores, cid, "u").status) == (None, "CREATED")
    with pytest.raises(UserNotFound):
        meta.set_user_vector(cid, "ghost", "v", 0)


def test_get_users(stores, cid):
    for i in range(3):
        stores.meta.put_user(cid, UserRecord(f"u{i}", "CREATED", created=float(i)))
    got = stores.meta.get_users(cid, ["u0", "u2", "missing", "u2"])
    assert sorted(got) == ["u0", "u2"] and got["u2"] == UserRecord("u2", "CREATED", created=2.0)
    assert stores.meta.get_users(cid, []) == {}


def test_face_cap_per_user(stores, cid):
    meta = stores.meta
    meta.put_faces(cid, faces("f", 4))
    meta.put_user(cid, UserRecord("u", "CREATED"))
    meta.set_face_user(cid, "f-0000", "u", None, max_faces=2)
    meta.set_face_user(cid, "f-0001", "u", None, max_faces=2)
    with pytest.raises(UserFaceLimit):
        meta.set_face_user(cid, "f-0002", "u", None, max_faces=2)
    assert meta.get_faces(cid, ["f-0002"])["f-0002"].user_id is None
    assert user(stores, cid, "u").face_ids == ["f-0000", "f-0001"]
    with pytest.raises(UserNotFound):
        meta.set_face_user(cid, "f-0002", "ghost", None, max_faces=2)
    meta.set_face_user(cid, "f-0002", "u", None, max_faces=3)


def test_concurrent_claims_respect_the_cap(stores, cid):
    stores.meta.put_faces(cid, faces("f", 8))
    stores.meta.put_user(cid, UserRecord("u", "CREATED"))
    won = []

    def claim(i):
        try:
            stores.meta.set_face_user(cid, f"f-{i:04d}", "u", None, max_faces=3)
            won.append(i)
        except UserFaceLimit:
            pass

    run_threads(8, claim)
    assert len(won) == 3 and len(user(stores, cid, "u").face_ids) == 3
    owned = [f for f in stores.meta.get_faces(cid, [f"f-{i:04d}" for i in range(8)]).values() if f.user_id]
    assert sorted(f.face_id for f in owned) == sorted(f"f-{i:04d}" for i in won)


def test_deleted_users_leave_a_tombstone(stores, cid):
    meta = stores.meta
    for i in range(3):
        meta.put_user(cid, UserRecord(f"u{i}", "CREATED"))
    assert meta.deleted_user_token(cid, "u1") is None
    assert meta.delete_user(cid, "u1", "tok-1") is True
    assert meta.deleted_user_token(cid, "u1") == "tok-1"
    assert meta.delete_user(cid, "u1", "tok-2") is False  # nothing deleted: tombstone unchanged
    assert meta.deleted_user_token(cid, "u1") == "tok-1"
    # Tombstones are not users: not listed, not counted, not returned.
    assert [u.user_id for u in list_all(lambda t: meta.list_users(cid, 1, t))] == ["u0", "u2"]
    assert meta.get_collection(cid).user_count == 2
    assert meta.get_users(cid, ["u1"]) == {}
    # A user of the same id again: the tombstone stays until a later delete replaces it.
    meta.put_user(cid, UserRecord("u1", "CREATED"))
    assert meta.deleted_user_token(cid, "u1") == "tok-1"
    assert meta.delete_user(cid, "u1") is True
    assert meta.deleted_user_token(cid, "u1") is None
    # Deleting the collection removes them.
    meta.delete_user(cid, "u2", "tok-3")
    assert meta.delete_collection(cid) is True
    meta.create_collection(collection_record(cid))
    assert meta.deleted_user_token(cid, "u2") is None
    with pytest.raises(CollectionNotFound):
        meta.list_users("missing", 5)


# --- the vector store's user namespace


def test_user_vector_namespace(stores, cid):
    vecs = stores.vecs
    users = vecs.user_vectors()
    vecs.write_segment(cid, "faces-1", ["f"], unit_vectors(1, 1))
    users.write_segment(cid, "users-1", [row_id("u", "v")], unit_vectors(1, 2))
    assert vecs.list_segments(cid) == ["faces-1"]
    assert users.list_segments(cid) == ["users-1"]
    ids, got = users.read_segment(cid, "users-1")
    assert ids == ["u/v"] and np.allclose(got, unit_vectors(1, 2))
    users.delete_segment(cid, "users-1")
    assert users.list_segments(cid) == []
    users.write_segment(cid, "users-2", ["u/w"], unit_vectors(1, 3))
    vecs.delete_collection(cid)  # the collection's user vectors go with it
    assert vecs.list_segments(cid) == [] and users.list_segments(cid) == []


# --- UserVectorIndex


@pytest.fixture
def indexes(stores, cid):
    faces_index = VectorIndex(stores.vecs, stores.meta)
    return faces_index, UserVectorIndex(faces_index)


def _add_faces(faces_index, cid, prefix, n, seed):
    vectors = unit_vectors(n, seed)
    faces_index.add_faces(cid, faces(prefix, n), vectors)
    return [f"{prefix}-{i:04d}" for i in range(n)], vectors


def _associate(meta, cid, user_id, face_ids):
    for fid in face_ids:
        meta.set_face_user(cid, fid, user_id, None)


def test_refresh_builds_the_mean_and_search_finds_it(stores, cid, indexes):
    faces_index, users = indexes
    meta = stores.meta
    ids_a, vec_a = _add_faces(faces_index, cid, "a", 3, 1)
    ids_b, _ = _add_faces(faces_index, cid, "b", 2, 2)
    meta.put_user(cid, UserRecord("a", "CREATED"))
    meta.put_user(cid, UserRecord("b", "CREATED"))
    meta.put_user(cid, UserRecord("empty", "CREATED"))
    _associate(meta, cid, "a", ids_a)
    _associate(meta, cid, "b", ids_b)
    assert users.refresh(cid, "a").status == "ACTIVE"
    users.refresh(cid, "b")
    assert users.refresh(cid, "empty").status == "CREATED"
    assert users.refresh(cid, "empty").vector_id is None

    want_a = mean_vector(vec_a)
    [(top, cosine), *rest] = users.search(cid, want_a, 10)
    assert top.user_id == "a" and cosine == pytest.approx(1.0, abs=1e-6)
    assert [u.user_id for u, _ in rest] == ["b"]  # "empty" has no vector
    assert users.search(cid, want_a, 10, min_score=0.99) == [(top, pytest.approx(cosine))]
    assert [u.user_id for u, _ in users.search(cid, want_a, 10, exclude="a")] == ["b"]
    assert users.search(cid, want_a, 0) == []
    assert np.allclose(users.user_vector(cid, meta.get_user(cid, "a")), want_a, atol=1e-6)

    # A disassociation, then refresh: the old row no longer counts, the new one does.
    meta.set_face_user(cid, ids_a[0], None, "a")
    users.refresh(cid, "a")
    [(top, cosine)] = users.search(cid, mean_vector(vec_a[1:]), 1)
    assert top.user_id == "a" and cosine == pytest.approx(1.0, abs=1e-6)
    assert users.search(cid, want_a, 1)[0][1] < 0.999
    # Deleted users are gone from the very next search.
    meta.delete_user(cid, "a")
    assert [u.user_id for u, _ in users.search(cid, want_a, 10)] == ["b"]
    with pytest.raises(UserNotFound):
        users.refresh(cid, "a")


def test_orphan_and_stale_rows_never_come_back_and_compaction_drops_them(stores, cid, indexes):
    faces_index, users = indexes
    meta = stores.meta
    ids, vectors = _add_faces(faces_index, cid, "a", 4, 3)
    meta.put_user(cid, UserRecord("a", "CREATED"))
    for i in range(4):  # four versions: three stale rows and one live
        _associate(meta, cid, "a", ids[i : i + 1])
        users.refresh(cid, "a")
    # A row whose commit never happened (a crash after the segment write).
    users.vectors.write_segment(cid, "00000000000000000001-orphan", [row_id("a", "never")], vectors[:1])
    users.vectors.write_segment(cid, "00000000000000000002-ghost", [row_id("ghost", "x")], vectors[1:2])
    hits = users.search(cid, vectors[0], 10)
    assert [u.user_id for u, _ in hits] == ["a"]
    assert hits[0][1] == pytest.approx(float(mean_vector(vectors) @ vectors[0]), abs=1e-6)

    # Rows younger than min_age_s are left alone (their commit may be in flight); the two old
    # dead ones go, and nothing is written for them.
    old = users.compact(cid, min_age_s=3600)
    assert sorted(old.removed) == ["00000000000000000001-orphan", "00000000000000000002-ghost"]
    assert (old.written, old.kept, old.dropped) == (None, 0, 2)
    result = users.compact(cid, min_age_s=0)
    assert result.kept == 1 and result.dropped == 3
    [only] = users.vectors.list_segments(cid)
    rows, _ = users.vectors.read_segment(cid, only)
    assert rows == [row_id("a", meta.get_user(cid, "a").vector_id)]
    assert [u.user_id for u, _ in users.search(cid, vectors[0], 10)] == ["a"]
    assert users.compact(cid, min_age_s=0).removed == []  # nothing left to gain


def test_search_compacts_when_segments_pile_up(stores, cid, indexes):
    faces_index, _ = indexes
    users = UserVectorIndex(faces_index, auto_compact_segments=4, compact_min_age_s=0)
    ids, _ = _add_faces(faces_index, cid, "a", 6, 4)
    stores.meta.put_user(cid, UserRecord("a", "CREATED"))
    for fid in ids:
        _associate(stores.meta, cid, "a", [fid])
        users.refresh(cid, "a")
    assert len(users.vectors.list_segments(cid)) == 6
    want = users.user_vector(cid, stores.meta.get_user(cid, "a"))
    assert users.search(cid, want, 1)[0][0].user_id == "a"
    assert len(users.vectors.list_segments(cid)) == 1
    assert users.search(cid, want, 1)[0][1] == pytest.approx(1.0, abs=1e-6)


def test_concurrent_changes_leave_the_vector_of_the_final_membership(stores, cid, indexes):
    faces_index, users = indexes
    meta = stores.meta
    ids, vectors = _add_faces(faces_index, cid, "a", 12, 5)
    meta.put_user(cid, UserRecord("a", "CREATED"))
    _associate(meta, cid, "a", ids[8:])

    def change(i):  # threads 0-7 each add one face; 8-11 take one away; everyone refreshes
        if i < 8:
            meta.set_face_user(cid, ids[i], "a", None)
        else:
            meta.set_face_user(cid, ids[i], None, "a")
        users.refresh(cid, "a")

    run_threads(12, change)
    final = meta.get_user(cid, "a")
    assert final.face_ids == sorted(ids[:8]) and final.status == "ACTIVE"
    [(top, cosine)] = users.search(cid, mean_vector(vectors[:8]), 1)
    assert top.vector_id == final.vector_id and cosine == pytest.approx(1.0, abs=1e-5)


def test_search_survives_a_compaction_it_may_not_do(stores, cid, indexes):
    """Search functions that may not write (AWS) try auto-compaction once, then leave it."""
    faces_index, _ = indexes

    class ReadOnly:
        def __init__(self, inner):
            self.inner = inner

        def write_segment(self, *args):
            raise PermissionError("read-only")

        def __getattr__(self, name):
            return getattr(self.inner, name)

    writer = UserVectorIndex(faces_index)
    ids, _ = _add_faces(faces_index, cid, "a", 3, 6)
    stores.meta.put_user(cid, UserRecord("a", "CREATED"))
    for fid in ids:
        _associate(stores.meta, cid, "a", [fid])
        writer.refresh(cid, "a")
    reader = UserVectorIndex(faces_index, ReadOnly(writer.vectors), auto_compact_segments=2, compact_min_age_s=0)
    want = reader.user_vector(cid, stores.meta.get_user(cid, "a"))
    assert reader.search(cid, want, 1)[0][0].user_id == "a"
    assert reader.auto_compact_segments is None and len(writer.vectors.list_segments(cid)) == 3
