from __future__ import annotations

import pytest
from storage_helpers import collection_record, faces, list_all, unit_vectors

from facebank.storage import (
    CollectionExists,
    CollectionNotFound,
    InvalidPaginationToken,
    MetadataStore,
    UserRecord,
    VectorStore,
)


def test_adapters_implement_the_ports(stores):
    assert isinstance(stores.meta, MetadataStore)
    assert isinstance(stores.vecs, VectorStore)


def test_create_get_delete(stores):
    meta = stores.meta
    assert meta.get_collection("c1") is None
    meta.create_collection(collection_record("c1", tags={"a": "1", "b": "2"}))
    got = meta.get_collection("c1")
    assert got == collection_record("c1", tags={"a": "1", "b": "2"})
    assert (got.face_count, got.user_count) == (0, 0)
    with pytest.raises(CollectionExists):
        meta.create_collection(collection_record("c1"))
    assert meta.delete_collection("c1") is True
    assert meta.get_collection("c1") is None
    assert meta.delete_collection("c1") is False


def test_update_tags(stores):
    meta = stores.meta
    meta.create_collection(collection_record("c1", tags={"a": "1", "b": "2"}))
    assert meta.update_tags("c1", {"b": "3", "c.d/e": "4"}, []) == {"a": "1", "b": "3", "c.d/e": "4"}
    assert meta.update_tags("c1", {}, ["a", "missing"]) == {"b": "3", "c.d/e": "4"}
    assert meta.update_tags("c1", {}, []) == {"b": "3", "c.d/e": "4"}
    assert meta.get_collection("c1").tags == {"b": "3", "c.d/e": "4"}
    meta.create_collection(collection_record("empty", tags={}))
    assert meta.update_tags("empty", {"x": ""}, []) == {"x": ""}
    with pytest.raises(CollectionNotFound):
        meta.update_tags("nope", {"a": "1"}, [])


def test_counts_start_at_zero_whatever_the_record_says(stores):
    stores.meta.create_collection(collection_record("c1", face_count=5, user_count=2))
    got = stores.meta.get_collection("c1")
    assert (got.face_count, got.user_count) == (0, 0)


def test_list_collections_pages(stores):
    ids = [f"col-{i:02d}" for i in range(7)]
    for cid in ids:
        stores.meta.create_collection(collection_record(cid))
    pages = []

    def page(token):
        items, nxt = stores.meta.list_collections(3, token)
        pages.append(len(items))
        return items, nxt

    listed = list_all(page)
    assert sorted(c.collection_id for c in listed) == ids
    assert len({c.collection_id for c in listed}) == 7
    assert pages == [3, 3, 1]
    assert all(c.arn.endswith(c.collection_id) for c in listed)


def test_list_collections_exact_page_has_no_token(stores):
    for cid in ("a", "b"):
        stores.meta.create_collection(collection_record(cid))
    items, token = stores.meta.list_collections(2)
    assert len(items) == 2 and token is None
    assert len(stores.meta.list_collections(10)[0]) == 2


def test_list_collections_survives_deleting_the_last_returned(stores):
    ids = [f"col-{i:02d}" for i in range(6)]
    for cid in ids:
        stores.meta.create_collection(collection_record(cid))
    first, token = stores.meta.list_collections(3)
    stores.meta.delete_collection(first[-1].collection_id)
    rest = list_all(lambda t: stores.meta.list_collections(3, t or token))
    seen = [c.collection_id for c in first + rest]
    assert sorted(seen) == ids and len(set(seen)) == 6


def test_bad_pagination_input(stores):
    stores.meta.create_collection(collection_record("c1"))
    for bad in ("garbage", "e30", ""):
        with pytest.raises(InvalidPaginationToken):
            stores.meta.list_collections(3, bad)
    with pytest.raises(ValueError):
        stores.meta.list_collections(0)


def test_tokens_are_not_interchangeable(stores, cid):
    stores.meta.put_faces(cid, faces("f", 3))
    _, face_token = stores.meta.list_faces(cid, 1)
    with pytest.raises(InvalidPaginationToken):
        stores.meta.list_collections(1, face_token)
    # Nor between collections: another collection's face ids would start the listing anywhere.
    stores.meta.create_collection(collection_record("other"))
    stores.meta.put_faces("other", faces("f", 3))
    with pytest.raises(InvalidPaginationToken):
        stores.meta.list_faces("other", 1, face_token)


def test_tokens_of_the_longest_ids_fit_the_model(stores):
    """botocore's PaginationToken is at most 255 characters, and so is a collection id."""
    ids = ["-" + "z" * 254, "z" * 255]  # the ends of the id alphabet
    for collection_id in ids:
        stores.meta.create_collection(collection_record(collection_id))
    first, token = stores.meta.list_collections(1)
    assert token is not None and len(token) <= 255
    second, last = stores.meta.list_collections(1, token)
    assert [c.collection_id for c in first + second] == ids and last is None


def test_delete_collection_removes_faces_users_and_segments(stores, cid):
    meta, vecs = stores.meta, stores.vecs
    vecs.write_segment(cid, "s1", ["f-0000", "f-0001"], unit_vectors(2, 1))
    meta.put_faces(cid, faces("f", 2, "s1"))
    meta.put_user(cid, UserRecord("u1", "ACTIVE"))
    meta.set_face_user(cid, "f-0001", "u1", None)
    stores.meta.create_collection(collection_record("other"))
    meta.put_faces("other", faces("f", 1))

    assert meta.delete_collection(cid) is True
    vecs.delete_collection(cid)
    assert vecs.list_segments(cid) == []
    assert meta.get_faces(cid, ["f-0000", "f-0001"]) == {}
    assert meta.get_user(cid, "u1") is None
    with pytest.raises(CollectionNotFound):
        meta.list_faces(cid, 10)

    # A re-created collection of the same id starts empty; other collections are untouched.
    meta.create_collection(collection_record(cid))
    got = meta.get_collection(cid)
    assert (got.face_count, got.user_count) == (0, 0)
    assert meta.list_faces(cid, 10) == ([], None)
    assert meta.list_users(cid, 10) == ([], None)
    assert meta.get_collection("other").face_count == 1
    assert list(meta.get_faces("other", ["f-0000"])) == ["f-0000"]
