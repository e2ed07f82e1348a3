from __future__ import annotations

import time

import pytest
from storage_helpers import collection_record, faces, list_all, run_threads

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


def test_request_ledger(stores, cid):
    meta, now = stores.meta, time.time()
    key = "associate_faces:t"
    assert meta.claim_request(cid, key, "d1", now - 60) == ("d1", None)
    # Another request with the token sees the claim, answered or not, and never takes it over.
    assert meta.claim_request(cid, key, "d2", now - 60) == ("d1", None)
    assert meta.answer_request(cid, key, '{"a": 1}') == '{"a": 1}'
    assert meta.answer_request(cid, key, '{"a": 2}') == '{"a": 1}'  # the first answer stands
    assert meta.claim_request(cid, key, "d1", now - 60) == ("d1", '{"a": 1}')
    # Entries made before `since` are expired: the token is free again.
    assert meta.claim_request(cid, key, "d3", time.time() + 1) == ("d3", None)
    # A failed request releases its claim; an answered one is never released.
    meta.release_request(cid, key)
    assert meta.claim_request(cid, key, "d4", now - 60) == ("d4", None)
    meta.answer_request(cid, key, "{}")
    meta.release_request(cid, key)
    assert meta.claim_request(cid, key, "d5", now - 60) == ("d4", "{}")
    # Not users, and gone with the collection.
    assert meta.list_users(cid, 10)[0] == []
    meta.delete_collection(cid)
    meta.create_collection(collection_record(cid))
    assert meta.claim_request(cid, key, "d6", 0) == ("d6", None)


def test_concurrent_claims_of_one_token_agree(stores, cid):
    claims = []
    run_threads(8, lambda i: claims.append(stores.meta.claim_request(cid, "create_user:x", f"d{i}", 0)))
    assert len(claims) == 8 and len({digest for digest, _ in claims}) == 1
