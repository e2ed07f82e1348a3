"""Shards (facebank/search/shards.py) on both adapters: the stored map, its assignment by
compaction, and searches over several shards equal to one exact search over all vectors."""

from __future__ import annotations

import numpy as np
import pytest
from storage_helpers import collection_record, faces, unit_vectors

from facebank.search import VectorIndex
from facebank.search.shards import ShardAnswer, ShardMap, layout, merge, plan_shards, top_rows


def brute_force(ids: list[str], vectors: np.ndarray, query: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The unsharded exact answer: every live vector scored, best k by (score desc, id asc)."""
    q = query / np.linalg.norm(query)
    scores = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ q
    return sorted(zip(ids, scores.tolist(), strict=True), key=lambda p: (-p[1], p[0]))[:k]


def test_shard_map_is_versioned_and_conditional(stores, cid):
    assert stores.meta.get_shard_map(cid, "faces") == (None, 0)
    assert stores.meta.put_shard_map(cid, "faces", '{"shards":[["a"]]}', 0)
    assert not stores.meta.put_shard_map(cid, "faces", '{"shards":[]}', 0)  # someone wrote version 1
    assert stores.meta.get_shard_map(cid, "faces") == ('{"shards":[["a"]]}', 1)
    assert stores.meta.put_shard_map(cid, "faces", '{"shards":[["b"]]}', 1)
    assert stores.meta.get_shard_map(cid, "faces") == ('{"shards":[["b"]]}', 2)
    assert stores.meta.get_shard_map(cid, "users") == (None, 0)  # per kind
    users, _ = stores.meta.list_users(cid, 100)
    assert users == []  # the map is not a user
    assert stores.meta.delete_collection(cid)
    stores.meta.create_collection(collection_record(cid))
    assert stores.meta.get_shard_map(cid, "faces") == (None, 0)  # removed with the collection


def _index(stores, shard_rows: int) -> VectorIndex:
    return VectorIndex(stores.vecs, stores.meta, shard_rows=shard_rows, clock=lambda: 4e9)


def test_compaction_assigns_shards_and_search_over_them_is_exact(stores, cid):
    index = _index(stores, shard_rows=120)
    all_ids, all_vecs = [], []
    for b in range(12):  # 12 segments of 30 faces
        recs = faces(f"b{b:02d}", 30)
        vecs = unit_vectors(30, seed=b)
        index.add_faces(cid, recs, vecs)
        all_ids += [r.face_id for r in recs]
        all_vecs.append(vecs)
    vectors = np.concatenate(all_vecs)
    result = index.compact(cid, min_age_s=0)
    assert result.removed and result.dropped == 0
    stored = ShardMap.decode(*stores.meta.get_shard_map(cid, "faces"))
    assert len(stored.shards) == 3 and all(r <= 120 for r in stored.rows) and sum(stored.rows) == 360
    # Faces indexed after the compaction are in no shard: a tail shard covers them.
    late = faces("late", 7)
    late_vecs = unit_vectors(7, seed=99)
    index.add_faces(cid, late, late_vecs)
    all_ids += [r.face_id for r in late]
    vectors = np.concatenate([vectors, late_vecs])
    plan = index.shard_layout(cid)
    assert [n for n, _ in plan] == [0, 1, 2, 3]
    assert sorted(name for _, s in plan for name in s) == sorted(stores.vecs.list_segments(cid))
    # Deleted faces never come back, whichever shard holds them.
    gone = set(all_ids[::7])
    stores.meta.delete_faces(cid, sorted(gone))
    live = [i for i, f in enumerate(all_ids) if f not in gone]
    for seed in range(20):
        q = unit_vectors(1, seed=1000 + seed)[0]
        want = brute_force([all_ids[i] for i in live], vectors[live], q, 15)
        got = index.search(cid, q, 15)
        assert [f for f, _ in got] == [f for f, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)
    # And the same as one shard of everything (the unsharded index: no map stored).
    unsharded = _index(stores, shard_rows=10**9)
    unsharded.shard_layout = lambda c: [(0, stores.vecs.list_segments(c))]  # type: ignore[method-assign]
    q = unit_vectors(1, seed=7)[0]
    assert unsharded.search(cid, q, 40) == index.search(cid, q, 40)


def test_rebalance_keeps_shards_and_fills_first_fit():
    stored = ShardMap((("a", "b"), ("c",)), (100, 50), version=3)
    planned = plan_shards(stored, {"a": 60, "c": 50, "d": 40, "e": 200, "f": 10}, max_rows=100)
    # "b" vanished (compacted away); "d" fits beside "a"; "e" is larger than a shard: its own.
    assert planned.shards == (("a", "d"), ("c", "f"), ("e",))
    assert planned.rows == (100, 60, 200)
    listed = ["a", "c", "d", "e", "f", "g", "h"]
    expected = [(0, ["a", "d"]), (1, ["c", "f"]), (2, ["e"]), (3, ["g"]), (4, ["h"])]
    assert layout(planned, listed, tail_segments=1) == expected
    # Lowering max_rows dissolves the shards now too large; a single large segment stays whole.
    smaller = plan_shards(planned, {"a": 60, "c": 50, "d": 40, "e": 200, "f": 10}, max_rows=50)
    assert smaller.shards == (("e",), ("a",), ("c",), ("d", "f"))
    # A shard whose segments are all gone keeps the others' numbers (and so their functions).
    assert layout(planned, ["c", "e"]) == [(1, ["c"]), (2, ["e"])]


def test_top_rows_and_merge_are_exact_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.uniform(-1, 1, 3000), 2).astype(np.float32)  # many ties
    ids = [f"id{i:05d}" for i in range(3000)]

    def at(rows: np.ndarray) -> list[str]:
        return [ids[r] for r in rows.tolist()]

    whole = top_rows(at, scores, 50, 0.1)
    parts = []
    for lo in range(0, 3000, 700):
        part = scores[lo : lo + 700]
        parts.append(top_rows(lambda r, lo=lo: [ids[lo + i] for i in r.tolist()], part, 50, 0.1))
    merged = merge(parts, 50)
    assert (merged.rows, merged.scores, merged.complete) == (whole.rows, whole.scores, whole.complete)
    assert not whole.complete and len(whole.rows) == 50
    assert merge([ShardAnswer(["a"], [0.5]), ShardAnswer(["b"], [0.5], complete=False)], 5).complete is False


def test_compaction_never_merges_past_a_shard(stores, cid):
    index = _index(stores, shard_rows=50)
    for b in range(6):
        index.add_faces(cid, faces(f"s{b}", 20), unit_vectors(20, seed=b))
    index.compact(cid, min_age_s=0)
    sizes = sorted(len(stores.vecs.read_segment(cid, n)[0]) for n in stores.vecs.list_segments(cid))
    assert sizes == [40, 40, 40]
