"""Exact cosine search over a collection's segments, filtered through the metadata store.

``SegmentIndex`` is the shared mechanism (segment cache, scoring, top-k with a liveness check,
compaction); ``VectorIndex`` serves faces and ``users.UserVectorIndex`` users' vectors, each
saying only which segment rows are live.

Truth lives in metadata: a vector counts only while a FaceRecord with its face_id exists. That is
what makes the write order (segment first, then put_faces) crash-safe and deletes immediate:
orphans and deleted faces may linger in segments but never come out of search, and compact()
eventually drops them. Segments are immutable, so loaded ones are cached by name and a warm
search only reads segments it has not seen yet.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import numpy as np

from facebank.search import shards
from facebank.search.shards import (
    DEFAULT_SHARD_ROWS,
    ShardAnswer,
    ShardFetch,
    ShardMap,
    ShardQuery,
    ShardSearcher,
)
from facebank.storage import segments
from facebank.storage.errors import CollectionNotFound, FaceNotFound, SegmentNotFound, StorageBusy
from facebank.storage.ports import FaceRecord, MetadataStore, VectorStore

DEFAULT_CACHE_MB = 4096  # the face index's segment cache (facebank.settings: segment_cache_mb)

R = TypeVar("R")  # the metadata record a live row stands for

_GET_CHUNK = 1000  # ids per metadata batch read


@dataclass(frozen=True)
class _Segment:
    ids: np.ndarray  # row ids, unicode [n]: vectorised lookups and cheap concatenation
    vectors: np.ndarray  # float32 [n, d], rows L2-normalised at load so dot == cosine

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.vectors.nbytes


@dataclass(frozen=True)
class CompactionResult:
    written: str | None  # the merged segment, if any vectors survived
    removed: list[str]  # segments merged away
    kept: int  # vectors in the merged segment
    dropped: int  # vectors dropped (deleted faces, orphans, duplicates)


class _Scored:
    """Maps rows of the concatenated score vector back to face ids, segment by segment."""

    def __init__(self, segs: list[_Segment]):
        self.segs = segs
        self.starts = np.cumsum([0] + [len(s.ids) for s in segs])

    def at(self, rows: np.ndarray) -> list[str]:
        which = np.searchsorted(self.starts, rows, side="right") - 1
        return [str(self.segs[w].ids[r - self.starts[w]]) for w, r in zip(which.tolist(), rows.tolist(), strict=True)]


def _norms(m: np.ndarray) -> np.ndarray:
    """Row norms (keepdims), 0 replaced by 1, computed one way everywhere: a segment normalised
    where it was written and where it was loaded must hold the same floats, bit for bit."""
    norms = np.sqrt(np.einsum("...i,...i->...", m, m))[..., None]  # no temporary of the matrix's size
    norms[norms == 0] = 1
    return norms


def _normalise(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float32)
    return m / _norms(m)


def _make_segment(ids: list[str], vectors: np.ndarray, *, owned: bool = False) -> _Segment:
    """owned: vectors is a fresh float32 array nobody else holds (a decoded segment), normalised
    in place: loading a shard-sized segment then holds one copy of it, not two, and skips a pass."""
    if not (owned and vectors.dtype == np.float32 and vectors.flags.writeable and vectors.ndim == 2):
        return _Segment(np.array(ids, dtype=str), _normalise(vectors))
    vectors /= _norms(vectors)
    return _Segment(np.array(ids, dtype=str), vectors)


class _LruCache:
    """Segments by (collection_id, name), evicting least recently used beyond max_bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], _Segment] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> _Segment | None:
        with self._lock:
            seg = self._entries.get(key)
            if seg is not None:
                self._entries.move_to_end(key)
            return seg

    def put(self, key: tuple[str, str], seg: _Segment) -> None:
        if seg.nbytes > self.max_bytes:
            return  # would evict everything else and still not fit
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes += seg.nbytes - (old.nbytes if old else 0)
            self._entries[key] = seg
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes

    def retain(self, collection_id: str, names: set[str] | None) -> None:
        """Drop the collection's entries not in names (all of them for None)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == collection_id]:
                if names is None or key[1] not in names:
                    self._bytes -= self._entries.pop(key).nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes

    def count(self, collection_id: str) -> int:
        with self._lock:
            return sum(1 for k in self._entries if k[0] == collection_id)


class SegmentIndex(Generic[R]):
    """Immutable segments of (row id, unit vector), searched exactly and filtered by liveness.

    Subclasses define ``_live`` (which rows still count, and the record each stands for) and may
    define ``_key`` (rows with one key are one result: a face sitting in two segments
    mid-compaction; a user's rows). Everything else is shared.
    """

    def __init__(
        self,
        vector_store: VectorStore,
        metadata_store: MetadataStore,
        *,
        cache_bytes: int,
        overfetch: float = 1.5,
        clock: Callable[[], float] = time.time,
        shard_rows: int = DEFAULT_SHARD_ROWS,
        searcher: ShardSearcher | None = None,
    ):
        self.vectors = vector_store
        self.metadata = metadata_store
        self.cache = _LruCache(cache_bytes)
        self.overfetch = max(1.0, overfetch)
        self._clock = clock
        self.shard_rows = shard_rows
        # Who searches the shards: None is this process, one shard after the other (embedded,
        # and the shard-search function itself); on AWS, one shard function invocation each.
        self.searcher = searcher

    kind = "faces"  # which segments: the shard map's and the shard function's name for them

    # --- what subclasses say

    def _live(self, collection_id: str, rows: list[str]) -> dict[str, R]:
        """The live rows among rows (at most _GET_CHUNK), each with its record."""
        raise NotImplementedError

    @staticmethod
    def _key(row: str) -> str:
        return row

    def _live_all(self, collection_id: str, rows: list[str]) -> dict[str, R]:
        live: dict[str, R] = {}
        for i in range(0, len(rows), _GET_CHUNK):
            live.update(self._live(collection_id, rows[i : i + _GET_CHUNK]))
        return live

    # --- loading

    def _load(self, collection_id: str, name: str) -> _Segment:
        seg = self.cache.get((collection_id, name))
        if seg is None:
            seg = _make_segment(*self.vectors.read_segment(collection_id, name), owned=True)
            self.cache.put((collection_id, name), seg)
        return seg

    def _segments(self, collection_id: str) -> list[tuple[str, _Segment]]:
        # A segment can vanish between list and read when compaction replaces it; its vectors
        # are then in a newer segment that a fresh listing shows, so list again.
        for _ in range(5):
            names = self.vectors.list_segments(collection_id)
            self.cache.retain(collection_id, set(names))
            try:
                return [(n, self._load(collection_id, n)) for n in names]
            except SegmentNotFound:
                continue
        raise SegmentNotFound(f"segments of {collection_id!r} keep disappearing")

    def forget(self, collection_id: str) -> None:
        """Drop cached segments of a collection (e.g. after deleting it)."""
        self.cache.retain(collection_id, None)

    def _write(self, collection_id: str, ids: list[str], vectors: np.ndarray) -> str:
        """Write a new segment and cache it; returns its name."""
        name = segments.new_segment_name()
        self.vectors.write_segment(collection_id, name, ids, vectors)
        self.cache.put((collection_id, name), _make_segment(ids, vectors))
        return name

    # --- search

    def _search(
        self, collection_id: str, query: np.ndarray, k: int, min_score: float, exclude: str | None
    ) -> list[tuple[R, float]]:
        """Up to k (record, cosine) of live rows with cosine >= min_score, best first, one per
        key; the key ``exclude`` is left out."""
        if k <= 0:
            return []
        q = _normalise(np.asarray(query, dtype=np.float32).reshape(-1))
        # Over-fetch a little (dead rows are usually few), keep only rows metadata still calls
        # live, and widen while dead ones crowd out the top k and candidates are left.
        want = max(k + 8, int(k * self.overfetch))
        known: dict[str, R | None] = {}
        while True:  # ends: want grows 4x a round until the top is all eligible rows
            top = self._top(collection_id, q, want, min_score)
            ranked = list(zip(top.rows, top.scores, strict=True))  # score desc, ties by id: deterministic
            unknown = list({r for r, _ in ranked if r not in known and self._key(r) != exclude})
            live = self._live_all(collection_id, unknown)
            known.update((r, live.get(r)) for r in unknown)
            out: list[tuple[R, float]] = []
            seen: set[str] = set()
            for row, score in ranked:
                rec, key = known.get(row), self._key(row)
                if rec is not None and key != exclude and key not in seen:
                    seen.add(key)
                    out.append((rec, score))
            if len(out) >= k or top.complete:
                return out[:k]
            want *= 4

    # --- shards (facebank/search/shards.py)

    def shard_layout(self, collection_id: str) -> list[tuple[int, list[str]]]:
        """The shards a search of the collection covers now: the stored map over the listed segments."""
        listed = self.vectors.list_segments(collection_id)
        self.cache.retain(collection_id, set(listed))
        body, version = self.metadata.get_shard_map(collection_id, self.kind)
        return shards.layout(ShardMap.decode(body, version), listed)

    def _top(self, collection_id: str, q: np.ndarray, want: int, min_score: float) -> ShardAnswer:
        """The exact top `want` rows over every shard: each shard searched exactly, answers merged."""
        # A segment can vanish between list and read when compaction replaces it; its vectors
        # are then in a newer segment that a fresh listing shows, so plan again.
        for _ in range(5):
            queries = [
                ShardQuery(collection_id, self.kind, shard, tuple(segs), q, want, min_score)
                for shard, segs in self.shard_layout(collection_id)
            ]
            try:
                if self.searcher is None:
                    answers = [self.search_shard(sq) for sq in queries]
                else:
                    answers = self.searcher.search(queries)
            except SegmentNotFound:
                continue
            return shards.merge(answers, want)
        raise SegmentNotFound(f"segments of {collection_id!r} keep disappearing")

    def search_shard(self, sq: ShardQuery) -> ShardAnswer:
        """One shard searched exactly in this process: one matmul per (cached) segment. Raises
        SegmentNotFound when one of its segments is gone."""
        segs = [self._load(sq.collection_id, name) for name in sq.segments]
        if not segs:
            return ShardAnswer()
        dims = {s.vectors.shape[1] for s in segs}
        if dims != {sq.query.shape[0]}:
            raise ValueError(f"query has {sq.query.shape[0]} dimensions, segments have {sorted(dims)}")
        scored = _Scored(segs)
        scores = np.concatenate([s.vectors @ sq.query for s in segs])
        # Ids are only gathered for the rows that make the top: concatenating a million ids per
        # query would cost more than the matmul.
        return shards.top_rows(scored.at, scores, sq.want, sq.min_score)

    def fetch_shard(self, sf: ShardFetch) -> dict[str, np.ndarray]:
        """Stored (normalised) vectors of sf.rows found in sf.segments, loaded in this process.
        Raises SegmentNotFound when one of the segments is gone."""
        wanted = np.array(sf.rows, dtype=str)
        out: dict[str, np.ndarray] = {}
        for name in sf.segments:
            seg = self._load(sf.collection_id, name)
            for r in np.flatnonzero(np.isin(seg.ids, wanted)).tolist():
                out.setdefault(str(seg.ids[r]), seg.vectors[r].copy())
        return out

    def rebalance(self, collection_id: str, *, attempts: int = 5) -> ShardMap:
        """Assign the collection's segments to shards (shards.plan_shards) and store the map; the
        only writer of shard maps besides the first compaction. Returns the map stored."""
        for _ in range(attempts):
            body, version = self.metadata.get_shard_map(collection_id, self.kind)
            stored = ShardMap.decode(body, version)
            rows = {name: len(seg.ids) for name, seg in self._segments(collection_id)}
            planned = shards.plan_shards(stored, rows, self.shard_rows)
            if planned.shards == stored.shards:
                return stored
            if self.metadata.put_shard_map(collection_id, self.kind, planned.encode(), version):
                return ShardMap(planned.shards, planned.rows, version + 1)
        raise StorageBusy(f"the shard map of {collection_id!r} kept changing")

    # --- maintenance

    def compact(
        self,
        collection_id: str,
        *,
        small_segment_rows: int = 20_000,
        min_age_s: float = 300.0,
        full: bool = False,
    ) -> CompactionResult:
        """Merge small segments (all of them with full=True) into one, dropping rows that are no
        longer live. Segments younger than min_age_s are left alone: their metadata may still be
        on its way, and they must not be mistaken for orphans."""
        now = self._clock()
        chosen: list[tuple[str, _Segment]] = []
        for name, seg in self._segments(collection_id):
            born = segments.segment_time(name)
            if born is not None and now - born < min_age_s:
                continue
            if full or len(seg.ids) < small_segment_rows:
                chosen.append((name, seg))
        # Merged segments stay within one shard's rows, so a shard never has to be split.
        by_name = dict(chosen)
        groups = shards.group_for_compaction(((n, len(s.ids)) for n, s in chosen), self.shard_rows)
        written, removed, kept, dropped = None, [], 0, 0
        for group in groups:
            result = self._merge(collection_id, [(n, by_name[n]) for n in group])
            written = result.written or written
            removed += result.removed
            kept += result.kept
            dropped += result.dropped
        if removed:
            self.cache.retain(collection_id, set(self.vectors.list_segments(collection_id)))
        # Compaction is what changes the set of segments for good: assign them to shards now.
        self.rebalance(collection_id)
        return CompactionResult(written, removed, kept, dropped)

    def _merge(self, collection_id: str, chosen: list[tuple[str, _Segment]]) -> CompactionResult:
        ids = np.concatenate([s.ids for _, s in chosen])
        vecs = np.concatenate([s.vectors for _, s in chosen])
        unique_ids, first_rows = np.unique(ids, return_index=True)
        live = self._live_all(collection_id, unique_ids.tolist())
        firsts = zip(unique_ids.tolist(), first_rows, strict=True)
        keep = np.sort([r for row, r in firsts if row in live]).astype(np.intp)
        dropped = len(ids) - len(keep)
        if len(chosen) < 2 and dropped == 0:
            return CompactionResult(None, [], 0, 0)  # nothing to gain
        # New segment first, then delete the old ones: a crash in between leaves duplicates,
        # which search de-duplicates, never a gap.
        written = self._write(collection_id, ids[keep].tolist(), vecs[keep]) if len(keep) else None
        for name, _ in chosen:
            self.vectors.delete_segment(collection_id, name)
        return CompactionResult(written, [n for n, _ in chosen], len(keep), dropped)


class VectorIndex(SegmentIndex[FaceRecord]):
    """Faces: a row is a face id, live while metadata has the face."""

    def __init__(
        self,
        vector_store: VectorStore,
        metadata_store: MetadataStore,
        *,
        cache_bytes: int = DEFAULT_CACHE_MB << 20,
        overfetch: float = 1.5,
        clock: Callable[[], float] = time.time,
        shard_rows: int = DEFAULT_SHARD_ROWS,
        searcher: ShardSearcher | None = None,
    ):
        super().__init__(
            vector_store,
            metadata_store,
            cache_bytes=cache_bytes,
            overfetch=overfetch,
            clock=clock,
            shard_rows=shard_rows,
            searcher=searcher,
        )

    def _live(self, collection_id: str, rows: list[str]) -> dict[str, FaceRecord]:
        return self.metadata.get_faces(collection_id, rows)

    # --- writes

    def add_faces(self, collection_id: str, faces: list[FaceRecord], vectors: np.ndarray) -> list[FaceRecord]:
        """Store faces with their vectors, in the crash-safe order; returns the newly stored faces
        (FaceRecord.segment set to the new segment)."""
        if not faces:
            return []
        name = segments.new_segment_name()
        faces = [replace(f, segment=name) for f in faces]
        face_ids = [f.face_id for f in faces]
        self.vectors.write_segment(collection_id, name, face_ids, vectors)
        try:
            new = self.metadata.put_faces(collection_id, faces)
        except CollectionNotFound:
            self.vectors.delete_segment(collection_id, name)
            raise
        if new:
            self.cache.put((collection_id, name), _make_segment(face_ids, vectors))
        else:  # every face already existed (a retried request): the segment is redundant
            self.vectors.delete_segment(collection_id, name)
        return new

    # --- search
    # search*/search_by_face_id* differ only in what they return: ids, or the FaceRecords that
    # the liveness check fetched anyway (saves the caller a second metadata read).

    def search(self, collection_id: str, query: np.ndarray, k: int, min_score: float = -1.0) -> list[tuple[str, float]]:
        """Up to k (face_id, cosine) of live faces with cosine >= min_score, best first."""
        return [(r.face_id, s) for r, s in self.search_records(collection_id, query, k, min_score)]

    def search_records(
        self, collection_id: str, query: np.ndarray, k: int, min_score: float = -1.0
    ) -> list[tuple[FaceRecord, float]]:
        return self._search(collection_id, query, k, min_score, None)

    def search_by_face_id(
        self, collection_id: str, face_id: str, k: int, min_score: float = -1.0
    ) -> list[tuple[str, float]]:
        """Like search, with a stored face as the query; the face itself is left out.
        Raises FaceNotFound."""
        hits = self.search_records_by_face_id(collection_id, face_id, k, min_score)
        return [(r.face_id, s) for r, s in hits]

    def search_records_by_face_id(
        self, collection_id: str, face_id: str, k: int, min_score: float = -1.0
    ) -> list[tuple[FaceRecord, float]]:
        q = self.get_vector(collection_id, face_id)
        return self._search(collection_id, q, k, min_score, face_id)

    def get_vector(self, collection_id: str, face_id: str) -> np.ndarray:
        """The stored (normalised) vector of a live face. Raises FaceNotFound."""
        rec = self.metadata.get_faces(collection_id, [face_id]).get(face_id)
        if rec is None:
            raise FaceNotFound(face_id)
        found = self.vectors_of(collection_id, [rec])
        if face_id not in found:
            raise FaceNotFound(face_id)  # metadata without a vector: not searchable
        return found[face_id]

    def vectors_of(self, collection_id: str, faces: list[FaceRecord]) -> dict[str, np.ndarray]:
        """Stored (normalised) vectors of the given faces by face id; faces without one are left
        out. Looks in each face's own segment first, then (compacted away) in all of them."""
        if self.searcher is not None:
            return self._vectors_from_shards(collection_id, faces)
        out: dict[str, np.ndarray] = {}
        missing = []
        for rec in faces:
            try:
                row = self._find(self._load(collection_id, rec.segment), rec.face_id)
            except (SegmentNotFound, ValueError):  # compacted away, or no valid segment name
                row = None
            if row is None:
                missing.append(rec.face_id)
            else:
                out[rec.face_id] = row
        if missing:
            for _, seg in self._segments(collection_id):
                for face_id in missing:
                    if face_id not in out and (row := self._find(seg, face_id)) is not None:
                        out[face_id] = row
        return out

    def _vectors_from_shards(self, collection_id: str, faces: list[FaceRecord]) -> dict[str, np.ndarray]:
        """vectors_of through the shard searcher: each face's own segment from the shard holding
        it, then the faces not found there (segment compacted away) from every shard."""
        for _ in range(5):
            plan = self.shard_layout(collection_id)
            where = {name: shard for shard, segs in plan for name in segs}
            asks: dict[tuple[int, str], list[str]] = {}
            for rec in faces:
                if rec.segment in where:
                    asks.setdefault((where[rec.segment], rec.segment), []).append(rec.face_id)
            try:
                out = self.searcher.fetch(  # type: ignore[union-attr] # set: checked by the caller
                    [ShardFetch(collection_id, self.kind, n, (seg,), tuple(ids)) for (n, seg), ids in asks.items()]
                )
                missing = tuple(rec.face_id for rec in faces if rec.face_id not in out)
                if missing:
                    out |= self.searcher.fetch(  # type: ignore[union-attr]
                        [ShardFetch(collection_id, self.kind, n, tuple(segs), missing) for n, segs in plan]
                    )
            except SegmentNotFound:
                continue  # compaction replaced a segment meanwhile: plan again
            return out
        raise SegmentNotFound(f"segments of {collection_id!r} keep disappearing")

    @staticmethod
    def _find(seg: _Segment, face_id: str) -> np.ndarray | None:
        rows = np.flatnonzero(seg.ids == face_id)
        return seg.vectors[rows[0]].copy() if len(rows) else None
