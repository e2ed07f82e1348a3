from __future__ import annotations

import pytest
from storage_helpers import faces, list_all, run_threads

from facebank.storage import (
    CollectionNotFound,
    FaceNotFound,
    FaceUserConflict,
    UserExists,
    UserNotFound,
    UserRecord,
)


def user_count(stores, cid):
    return stores.meta.get_collection(cid).user_count


def test_user_crud(stores, cid):
    meta = stores.meta
    meta.put_user(cid, UserRecord("u1", "ACTIVE", client_request_token="tok", created=12.5))
    assert meta.get_user(cid, "u1") == UserRecord("u1", "ACTIVE", [], "tok", 12.5)
    with pytest.raises(UserExists):
        meta.put_user(cid, UserRecord("u1", "ACTIVE"))
    with pytest.raises(CollectionNotFound):
        meta.put_user("missing", UserRecord("u1", "ACTIVE"))
    with pytest.raises(ValueError):
        meta.put_user(cid, UserRecord("u2", "ACTIVE", face_ids=["f"]))
    assert user_count(stores, cid) == 1
    assert meta.delete_user(cid, "u1") is True
    assert meta.delete_user(cid, "u1") is False
    assert meta.get_user(cid, "u1") is None
    assert user_count(stores, cid) == 0


def test_list_users_pages(stores, cid):
    for i in range(5):
        stores.meta.put_user(cid, UserRecord(f"u{i}", "ACTIVE"))
    users = list_all(lambda t: stores.meta.list_users(cid, 2, t))
    assert [u.user_id for u in users] == [f"u{i}" for i in range(5)]
    with pytest.raises(CollectionNotFound):
        stores.meta.list_users("missing", 2)


def test_associate_and_disassociate(stores, cid):
    meta = stores.meta
    meta.put_faces(cid, faces("f", 3))
    meta.put_user(cid, UserRecord("u1", "ACTIVE"))
    meta.put_user(cid, UserRecord("u2", "ACTIVE"))
    meta.set_face_user(cid, "f-0000", "u1", None)
    meta.set_face_user(cid, "f-0001", "u1", None)
    assert meta.get_user(cid, "u1").face_ids == ["f-0000", "f-0001"]
    assert meta.get_faces(cid, ["f-0000"])["f-0000"].user_id == "u1"

    with pytest.raises(FaceUserConflict) as e:
        meta.set_face_user(cid, "f-0000", "u2", None)
    assert e.value.current_user_id == "u1"
    with pytest.raises(FaceNotFound):
        meta.set_face_user(cid, "nope", "u1", None)
    with pytest.raises(UserNotFound):
        meta.set_face_user(cid, "f-0002", "ghost", None)
    meta.set_face_user(cid, "f-0000", "u1", "u1")  # no change, premise holds

    meta.set_face_user(cid, "f-0000", "u2", "u1")  # move
    meta.set_face_user(cid, "f-0001", None, "u1")  # disassociate
    assert meta.get_user(cid, "u1").face_ids == []
    assert meta.get_user(cid, "u2").face_ids == ["f-0000"]
    assert meta.get_faces(cid, ["f-0001"])["f-0001"].user_id is None


def test_concurrent_associations_claim_a_face_once(stores, cid):
    stores.meta.put_faces(cid, faces("f", 1))
    for i in range(4):
        stores.meta.put_user(cid, UserRecord(f"u{i}", "ACTIVE"))
    won = []

    def claim(i):
        try:
            stores.meta.set_face_user(cid, "f-0000", f"u{i}", None)
            won.append(i)
        except FaceUserConflict:
            pass

    run_threads(4, claim)
    assert len(won) == 1
    owners = [i for i in range(4) if stores.meta.get_user(cid, f"u{i}").face_ids]
    assert owners == won


def test_delete_user_disassociates_its_faces(stores, cid):
    meta = stores.meta
    meta.put_faces(cid, faces("f", 2))
    meta.put_user(cid, UserRecord("u1", "ACTIVE"))
    meta.set_face_user(cid, "f-0000", "u1", None)
    assert meta.delete_user(cid, "u1") is True
    assert meta.get_faces(cid, ["f-0000"])["f-0000"].user_id is None
    assert meta.delete_faces(cid, ["f-0000"]) == ["f-0000"]
