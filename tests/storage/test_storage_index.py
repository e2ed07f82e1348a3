from __future__ import annotations

import collections

import numpy as np
import pytest
from storage_helpers import DIM, faces, unit_vectors

from facebank.search import VectorIndex
from facebank.storage import CollectionNotFound, FaceNotFound, UserRecord, new_segment_name


class CountingVectorStore:
    """Wraps a VectorStore, counting read_segment calls per segment name."""

    def __init__(self, inner):
        self.inner = inner
        self.reads: collections.Counter[str] = collections.Counter()

    def read_segment(self, collection_id, name):
        self.reads[name] += 1
        return self.inner.read_segment(collection_id, name)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


class CrashingMetadataStore:
    """Wraps a MetadataStore whose put_faces fails once armed: a crash after write_segment."""

    def __init__(self, inner):
        self.inner = inner
        self.armed = False

    def put_faces(self, collection_id, recs):
        if self.armed:
            raise RuntimeError("simulated crash before the metadata write")
        return self.inner.put_faces(collection_id, recs)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


def add(index, cid, prefix, n, seed):
    recs, vecs = faces(prefix, n), unit_vectors(n, seed)
    assert len(index.add_faces(cid, recs, vecs)) == n
    return [r.face_id for r in recs], vecs


def brute_force(ids, vecs, live, q, k, min_score=-1.0):
    scores = vecs @ (q / np.linalg.norm(q))
    pairs = [(i, float(s)) for i, s in zip(ids, scores, strict=True) if i in live and s >= min_score]
    return sorted(pairs, key=lambda p: (-p[1], p[0]))[:k]


def assert_same(got, expected):
    assert [f for f, _ in got] == [f for f, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-5)


@pytest.fixture
def index(stores):
    return VectorIndex(stores.vecs, stores.meta)


def test_search_matches_brute_force(stores, cid, index):
    ids, vecs = [], []
    for b in range(4):
        i, v = add(index, cid, f"b{b}", 15, seed=b)
        ids += i
        vecs.append(v)
    vecs = np.concatenate(vecs)
    for seed in range(3):
        q = unit_vectors(1, 100 + seed)[0]
        assert_same(index.search(cid, q, 10), brute_force(ids, vecs, set(ids), q, 10))
    # The nearest face to a stored vector is itself, at cosine 1.
    top = index.search(cid, vecs[37], 1)
    assert top[0][0] == ids[37] and top[0][1] == pytest.approx(1.0, abs=1e-5)
    # min_score, and k larger than the collection.
    q = unit_vectors(1, 7)[0]
    expected = brute_force(ids, vecs, set(ids), q, 10, min_score=0.2)
    assert 0 < len(expected) < 10  # the threshold really cuts
    assert_same(index.search(cid, q, 10, min_score=0.2), expected)
    assert len(index.search(cid, q, 1000)) == 60
    assert index.search(cid, q, 0) == []
    assert index.search("empty-collection", q, 5) == []
    with pytest.raises(ValueError):
        index.search(cid, np.ones(DIM + 1, np.float32), 5)


def test_read_after_write_and_delete(stores, cid, index):
    add(index, cid, "old", 10, seed=1)
    new_ids, new_vecs = add(index, cid, "new", 3, seed=2)
    assert index.search(cid, new_vecs[1], 1)[0][0] == new_ids[1]  # the very next search finds it
    assert stores.meta.delete_faces(cid, [new_ids[1]]) == [new_ids[1]]
    hits = index.search(cid, new_vecs[1], 13)
    assert new_ids[1] not in [f for f, _ in hits] and len(hits) == 12  # gone at once


def test_a_fresh_index_sees_other_writers(stores, cid, index):
    other = VectorIndex(stores.vecs, stores.meta)  # e.g. another process or Lambda instance
    assert index.search(cid, unit_vectors(1, 1)[0], 5) == []  # warms the cache with nothing
    ids, vecs = add(other, cid, "x", 4, seed=3)
    assert index.search(cid, vecs[2], 1)[0][0] == ids[2]


def test_deleted_faces_never_come_back_even_when_they_crowd_the_top(stores, cid, index):
    ids, vecs = add(index, cid, "f", 60, seed=4)
    q = vecs[0]
    ranked = [f for f, _ in brute_force(ids, vecs, set(ids), q, 60)]
    doomed = ranked[:40]  # far more than k * overfetch of the best matches
    assert sorted(stores.meta.delete_faces(cid, doomed)) == sorted(doomed)
    live = set(ids) - set(doomed)
    assert_same(index.search(cid, q, 5), brute_force(ids, vecs, live, q, 5))


def test_orphan_vectors_are_never_returned(stores, cid, index):
    ids, vecs = add(index, cid, "f", 5, seed=5)
    orphans = unit_vectors(3, 6)
    stores.vecs.write_segment(cid, new_segment_name(), ["o1", "o2", "o3"], orphans)
    hits = index.search(cid, orphans[0], 8)
    assert {f for f, _ in hits} == set(ids)


def test_crash_between_segment_and_metadata_write(stores, cid):
    crashing = CrashingMetadataStore(stores.meta)
    index = VectorIndex(stores.vecs, crashing)
    ids, vecs = add(index, cid, "kept", 6, seed=7)
    crashing.armed = True
    lost = unit_vectors(4, 8)
    with pytest.raises(RuntimeError):
        index.add_faces(cid, faces("lost", 4), lost)
    crashing.armed = False
    assert len(stores.vecs.list_segments(cid)) == 2  # the orphan segment is there ...
    for v in lost:  # ... but invisible
        assert {f for f, _ in index.search(cid, v, 10)} == set(ids)
    assert stores.meta.get_collection(cid).face_count == 6
    # Young segments are left alone (their metadata may still be on its way) ...
    assert index.compact(cid).written is None
    # ... old ones are merged and the orphans dropped; no stored face is lost.
    result = index.compact(cid, min_age_s=0)
    assert (result.kept, result.dropped) == (6, 4)
    assert stores.vecs.list_segments(cid) == [result.written]
    for i, v in enumerate(vecs):
        assert index.search(cid, v, 1)[0][0] == ids[i]
    # A retry of the crashed request then stores the faces normally.
    assert len(index.add_faces(cid, faces("lost", 4), lost)) == 4


def test_compaction_keeps_results_and_drops_deleted(stores, cid, index):
    ids, vecs = [], []
    for b in range(5):
        i, v = add(index, cid, f"b{b}", 8, seed=20 + b)
        ids += i
        vecs.append(v)
    vecs = np.concatenate(vecs)
    deleted = ids[3:40:4]
    stores.meta.delete_faces(cid, deleted)
    queries = unit_vectors(3, 99)
    before = [index.search(cid, q, 7) for q in queries]

    result = index.compact(cid, min_age_s=0)
    assert len(result.removed) == 5
    assert (result.kept, result.dropped) == (40 - len(deleted), len(deleted))
    assert stores.vecs.list_segments(cid) == [result.written]
    merged_ids, _ = stores.vecs.read_segment(cid, result.written)
    assert set(merged_ids) == set(ids) - set(deleted)

    fresh = VectorIndex(stores.vecs, stores.meta)  # cold cache: reads the merged segment only
    for q, expected in zip(queries, before, strict=True):
        assert_same(index.search(cid, q, 7), expected)
        assert_same(fresh.search(cid, q, 7), expected)
    # FaceRecord.segment still names a removed segment: lookups by face id fall back.
    assert stores.meta.get_faces(cid, [ids[0]])[ids[0]].segment in result.removed
    np.testing.assert_allclose(fresh.get_vector(cid, ids[0]), vecs[0], atol=1e-6)
    assert index.compact(cid, min_age_s=0).written is None  # nothing left to do


def test_segment_cache_reads_only_new_segments(stores, cid):
    counting = CountingVectorStore(stores.vecs)
    writer = VectorIndex(stores.vecs, stores.meta)  # writes through another instance
    for b in range(3):
        add(writer, cid, f"b{b}", 5, seed=b)
    index = VectorIndex(counting, stores.meta)
    q = unit_vectors(1, 42)[0]
    index.search(cid, q, 3)
    assert sum(counting.reads.values()) == 3
    index.search(cid, q, 3)
    assert sum(counting.reads.values()) == 3  # warm: nothing read again
    add(writer, cid, "b3", 5, seed=3)
    index.search(cid, q, 3)
    assert sum(counting.reads.values()) == 4 and max(counting.reads.values()) == 1


def test_cache_is_bounded_by_bytes(stores, cid):
    writer = VectorIndex(stores.vecs, stores.meta)
    for b in range(4):
        add(writer, cid, f"b{b}", 10, seed=b)
    seg_bytes = 10 * DIM * 4
    index = VectorIndex(stores.vecs, stores.meta, cache_bytes=int(2.5 * seg_bytes) + 1000)
    assert len(index.search(cid, unit_vectors(1, 5)[0], 40)) == 40  # correct even when evicting
    assert 0 < index.cache.nbytes <= index.cache.max_bytes


def test_search_by_face_id(stores, cid, index):
    ids, vecs = add(index, cid, "f", 10, seed=11)
    near = vecs[3] + 0.05 * unit_vectors(1, 12)[0]
    index.add_faces(cid, faces("twin", 1), near[None, :])
    hits = index.search_by_face_id(cid, ids[3], 3)
    assert hits[0][0] == "twin-0000"
    assert ids[3] not in [f for f, _ in hits]  # the query face itself is left out
    records = index.search_records_by_face_id(cid, ids[3], 3)
    assert [(r.face_id, s) for r, s in records] == hits
    assert records[0][0] == stores.meta.get_faces(cid, ["twin-0000"])["twin-0000"]
    rec, score = index.search_records(cid, vecs[5], 1)[0]
    assert rec.face_id == ids[5] and rec.segment and score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(FaceNotFound):
        index.search_by_face_id(cid, "missing", 3)


def test_add_faces_edge_cases(stores, cid, index):
    ids, vecs = add(index, cid, "f", 3, seed=13)
    # A retried request stores nothing new and leaves no redundant segment behind.
    assert index.add_faces(cid, faces("f", 3), vecs) == []
    assert len(stores.vecs.list_segments(cid)) == 1
    with pytest.raises(CollectionNotFound):
        index.add_faces("missing", faces("g", 1), unit_vectors(1, 1))
    assert stores.vecs.list_segments("missing") == []
    assert index.add_faces(cid, [], np.zeros((0, DIM), np.float32)) == []


def test_faces_of_users_remain_searchable(stores, cid, index):
    ids, vecs = add(index, cid, "f", 3, seed=14)
    stores.meta.put_user(cid, UserRecord("u", "ACTIVE"))
    stores.meta.set_face_user(cid, ids[0], "u", None)
    assert index.search(cid, vecs[0], 1)[0][0] == ids[0]


def test_crash_mid_compaction_leaves_duplicates_not_gaps(stores, cid, index):
    """compact() writes the merged segment before deleting the old ones; a crash in between
    leaves every vector twice. Search must still return each face once."""
    ids, vecs = add(index, cid, "f", 6, seed=15)
    (name,) = stores.vecs.list_segments(cid)
    stores.vecs.write_segment(cid, new_segment_name(), *stores.vecs.read_segment(cid, name))
    hits = index.search(cid, vecs[0], 10)
    assert sorted(f for f, _ in hits) == sorted(ids)
    assert index.compact(cid, min_age_s=0).kept == 6
