from __future__ import annotations

import dataclasses

import pytest
from storage_helpers import face_record, faces, list_all, run_threads

from facebank.storage import CollectionNotFound, UserRecord


def face_count(stores, cid):
    return stores.meta.get_collection(cid).face_count


def all_face_ids(stores, cid, **filters):
    listed = list_all(lambda t: stores.meta.list_faces(cid, 7, t, **filters))
    return [f.face_id for f in listed]


def test_put_get_roundtrip(stores, cid):
    batch = faces("f", 3)
    assert stores.meta.put_faces(cid, batch) == batch
    got = stores.meta.get_faces(cid, ["f-0000", "f-0002", "missing"])
    assert got == {"f-0000": batch[0], "f-0002": batch[2]}
    assert got["f-0000"].external_image_id is None
    assert stores.meta.get_faces(cid, []) == {}
    assert stores.meta.get_faces("no-such-collection", ["f-0000"]) == {}


def test_put_faces_is_idempotent(stores, cid):
    first = faces("f", 5)
    assert stores.meta.put_faces(cid, first) == first
    assert stores.meta.put_faces(cid, first) == []
    assert face_count(stores, cid) == 5
    # Overlap: only the new ones are stored and counted; stored ones are not overwritten.
    changed = [dataclasses.replace(f, image_id="other") for f in first[:3]]
    more = faces("g", 2)
    assert stores.meta.put_faces(cid, changed + more) == more
    assert face_count(stores, cid) == 7
    assert stores.meta.get_faces(cid, ["f-0000"])["f-0000"].image_id == first[0].image_id


def test_repeated_id_within_one_call_counts_once(stores, cid):
    f = face_record("dup")
    assert stores.meta.put_faces(cid, [f, dataclasses.replace(f, image_id="x")]) == [f]
    assert face_count(stores, cid) == 1


def test_put_faces_needs_collection_and_no_user(stores, cid):
    with pytest.raises(CollectionNotFound):
        stores.meta.put_faces("missing", faces("f", 2))
    with pytest.raises(CollectionNotFound):
        stores.meta.put_faces("missing", [])
    with pytest.raises(ValueError):
        stores.meta.put_faces(cid, [dataclasses.replace(face_record("f"), user_id="u")])
    assert stores.meta.put_faces(cid, []) == []


def test_more_faces_than_one_transaction(stores, cid):
    batch = faces("f", 101)  # DynamoDB transactions take at most 100 items
    assert len(stores.meta.put_faces(cid, batch)) == 101
    assert stores.meta.put_faces(cid, batch[95:] + faces("g", 1)) == faces("g", 1)
    assert face_count(stores, cid) == 102
    assert len(stores.meta.delete_faces(cid, [f.face_id for f in batch])) == 101
    assert face_count(stores, cid) == 1


def test_concurrent_puts_keep_exact_count(stores, cid):
    def put(i):
        for b in range(3):
            stored = stores.meta.put_faces(cid, faces(f"t{i}-b{b}", 4))
            assert len(stored) == 4

    run_threads(8, put)
    assert face_count(stores, cid) == 8 * 3 * 4
    assert len(set(all_face_ids(stores, cid))) == 96


def test_concurrent_puts_of_the_same_faces_store_each_once(stores, cid):
    batch = faces("same", 6)
    results: list[list] = [[] for _ in range(6)]

    def put(i):
        results[i] = stores.meta.put_faces(cid, batch[i:] + batch[:i])  # different orders

    run_threads(6, put)
    stored = [f.face_id for r in results for f in r]
    assert sorted(stored) == sorted(f.face_id for f in batch)  # each claimed by exactly one call
    assert face_count(stores, cid) == 6


def test_concurrent_delete_and_put_stay_consistent(stores, cid):
    existing = faces("old", 32)
    stores.meta.put_faces(cid, existing)
    deleted: list[list[str]] = [[] for _ in range(8)]

    def work(i):
        if i % 2 == 0:  # deleters: overlapping ranges, so some deletes race for the same face
            ids = [f.face_id for f in existing[i * 4 : i * 4 + 12]]
            for chunk in (ids[:6], ids[6:]):
                deleted[i] += stores.meta.delete_faces(cid, chunk)
        else:  # putters: new faces plus re-puts of faces that may be mid-delete
            stores.meta.put_faces(cid, faces(f"new{i}", 5))
            stores.meta.put_faces(cid, faces(f"new{i}", 5)[2:] + faces(f"new{i}", 8)[5:])

    run_threads(8, work)
    gone = [fid for d in deleted for fid in d]
    assert len(gone) == len(set(gone))  # no face deleted twice
    listed = all_face_ids(stores, cid)
    expected = {f.face_id for f in existing} - set(gone)
    expected |= {f.face_id for i in (1, 3, 5, 7) for f in faces(f"new{i}", 8)}
    assert set(listed) == expected
    assert face_count(stores, cid) == len(listed) == len(expected)


def test_list_faces_pages_in_face_id_order(stores, cid):
    batch = faces("f", 23)
    stores.meta.put_faces(cid, list(reversed(batch)))
    sizes, token, seen = [], None, []
    while True:
        page, token = stores.meta.list_faces(cid, 5, token)
        sizes.append(len(page))
        seen += [f.face_id for f in page]
        if token is None:
            break
    assert sizes == [5, 5, 5, 5, 3]
    assert seen == sorted(f.face_id for f in batch)
    with pytest.raises(CollectionNotFound):
        stores.meta.list_faces("missing", 5)


def test_list_faces_filters(stores, cid):
    stores.meta.put_faces(cid, faces("f", 20))
    stores.meta.put_user(cid, UserRecord("alice", "ACTIVE"))
    alice = [f"f-{i:04d}" for i in (1, 4, 9, 12, 15, 19)]
    for fid in alice:
        stores.meta.set_face_user(cid, fid, "alice", None)

    assert all_face_ids(stores, cid, user_id="alice") == alice
    assert all_face_ids(stores, cid, user_id="nobody") == []
    wanted = ["f-0019", "f-0002", "f-0004", "missing", "f-0009", "f-0011"]
    in_wanted = ["f-0002", "f-0004", "f-0009", "f-0011", "f-0019"]
    assert all_face_ids(stores, cid, face_ids=wanted) == in_wanted
    both = sorted(set(alice) & set(wanted))
    assert all_face_ids(stores, cid, user_id="alice", face_ids=wanted) == both
    page, token = stores.meta.list_faces(cid, 2, None, user_id="alice")
    assert [f.face_id for f in page] == alice[:2] and token is not None
    assert all(f.user_id == "alice" for f in page)


def test_delete_faces(stores, cid):
    stores.meta.put_faces(cid, faces("f", 5))
    assert stores.meta.delete_faces(cid, ["f-0001", "missing", "f-0003", "f-0001"]) == [
        "f-0001",
        "f-0003",
    ]
    assert face_count(stores, cid) == 3
    assert stores.meta.delete_faces(cid, ["f-0001"]) == []
    assert face_count(stores, cid) == 3
    assert all_face_ids(stores, cid) == ["f-0000", "f-0002", "f-0004"]
    with pytest.raises(CollectionNotFound):
        stores.meta.delete_faces("missing", ["f-0000"])


def test_faces_of_a_user_are_not_deleted(stores, cid):
    stores.meta.put_faces(cid, faces("f", 2))
    stores.meta.put_user(cid, UserRecord("u", "ACTIVE"))
    stores.meta.set_face_user(cid, "f-0000", "u", None)
    assert stores.meta.delete_faces(cid, ["f-0000", "f-0001"]) == ["f-0001"]
    assert face_count(stores, cid) == 1
    assert stores.meta.get_user(cid, "u").face_ids == ["f-0000"]
