"""Exact cosine search over a collection's segments, filtered through the metadata store.

Truth lives in metadata: a vector counts only while a FaceRecord with its face_id exists. That is
what makes the write order (segment first, then put_faces) crash-safe and deletes immediate:
orphans and deleted faces may linger in segments but never come out of search, and compact()
eventually drops them. Segments are immutable, so loaded ones are cached by name and a warm
search only reads segments it has not seen yet.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from facebank.storage import segments
from facebank.storage.errors import CollectionNotFound, FaceNotFound, SegmentNotFound
from facebank.storage.ports import FaceRecord, MetadataStore, VectorStore

_GET_FACES_CHUNK = 1000


@dataclass(frozen=True)
class _Segment:
    face_ids: np.ndarray  # unicode array [n], vectorised lookups and cheap concatenation
    vectors: np.ndarray  # float32 [n, d], rows L2-normalised at load so dot == cosine

    @property
    def nbytes(self) -> int:
        return self.face_ids.nbytes + self.vectors.nbytes


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
        self.starts = np.cumsum([0] + [len(s.face_ids) for s in segs])

    def at(self, rows: np.ndarray) -> list[str]:
        which = np.searchsorted(self.starts, rows, side="right") - 1
        return [str(self.segs[w].face_ids[r - self.starts[w]]) for w, r in zip(which.tolist(), rows.tolist())]


def _normalise(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float32)
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    return m / np.where(norms == 0, 1, norms)


def _make_segment(face_ids: list[str], vectors: np.ndarray) -> _Segment:
    return _Segment(np.array(face_ids, dtype=str), _normalise(vectors))


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


class VectorIndex:
    def __init__(
        self,
        vector_store: VectorStore,
        metadata_store: MetadataStore,
        *,
        cache_bytes: int = int(os.environ.get("FACEBANK_SEGMENT_CACHE_MB", 4096)) << 20,
        overfetch: float = 1.5,
        clock: Callable[[], float] = time.time,
    ):
        self.vectors = vector_store
        self.metadata = metadata_store
        self.cache = _LruCache(cache_bytes)
        self.overfetch = max(1.0, overfetch)
        self._clock = clock

    # --- loading

    def _load(self, collection_id: str, name: str) -> _Segment:
        seg = self.cache.get((collection_id, name))
        if seg is None:
            seg = _make_segment(*self.vectors.read_segment(collection_id, name))
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

    # --- writes

    def add_faces(
        self, collection_id: str, faces: list[FaceRecord], vectors: np.ndarray
    ) -> list[FaceRecord]:
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

    def search(
        self, collection_id: str, query: np.ndarray, k: int, min_score: float = -1.0
    ) -> list[tuple[str, float]]:
        """Up to k (face_id, cosine) of live faces with cosine >= min_score, best first."""
        return [(r.face_id, s) for r, s in self.search_records(collection_id, query, k, min_score)]

    def search_records(
        self, collection_id: str, query: np.ndarray, k: int, min_score: float = -1.0
    ) -> list[tuple[FaceRecord, float]]:
        if k <= 0:
            return []
        q = _normalise(np.asarray(query, dtype=np.float32).reshape(-1))
        return self._top_live(collection_id, *self._score(collection_id, q), k, min_score, None)

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
        if k <= 0:
            return []
        return self._top_live(collection_id, *self._score(collection_id, q), k, min_score, face_id)

    def get_vector(self, collection_id: str, face_id: str) -> np.ndarray:
        """The stored (normalised) vector of a live face. Raises FaceNotFound."""
        rec = self.metadata.get_faces(collection_id, [face_id]).get(face_id)
        if rec is None:
            raise FaceNotFound(face_id)
        try:
            row = self._find(self._load(collection_id, rec.segment), face_id)
        except SegmentNotFound:  # compacted away: the vector now lives in a newer segment
            row = None
        if row is None:
            for _, seg in self._segments(collection_id):
                if (row := self._find(seg, face_id)) is not None:
                    break
        if row is None:
            raise FaceNotFound(face_id)  # metadata without a vector: not searchable
        return row

    @staticmethod
    def _find(seg: _Segment, face_id: str) -> np.ndarray | None:
        rows = np.flatnonzero(seg.face_ids == face_id)
        return seg.vectors[rows[0]].copy() if len(rows) else None

    def _score(self, collection_id: str, q: np.ndarray) -> tuple[_Scored, np.ndarray]:
        """(ids by row, cosines) over every segment: one matmul per cached segment. Ids are only
        gathered for the rows that make the top k: concatenating a million ids per query would
        cost more than the matmul."""
        segs = [s for _, s in self._segments(collection_id)]
        if not segs:
            return _Scored([]), np.array([], dtype=np.float32)
        dims = {s.vectors.shape[1] for s in segs}
        if dims != {q.shape[0]}:
            raise ValueError(f"query has {q.shape[0]} dimensions, segments have {sorted(dims)}")
        return _Scored(segs), np.concatenate([s.vectors @ q for s in segs])

    def _top_live(
        self,
        collection_id: str,
        ids: _Scored,
        scores: np.ndarray,
        k: int,
        min_score: float,
        exclude: str | None,
    ) -> list[tuple[FaceRecord, float]]:
        eligible = np.flatnonzero(scores >= min_score)
        # Over-fetch a little (deleted faces are usually few), keep only faces metadata still
        # knows, and widen while dead ones crowd out the top k and candidates are left.
        want = max(k + 8, int(k * self.overfetch))
        known: dict[str, FaceRecord | None] = {}
        while True:
            if len(eligible) > want:
                top = eligible[np.argpartition(-scores[eligible], want - 1)[:want]]
            else:
                top = eligible
            pairs = zip(ids.at(top), scores[top].tolist())
            ranked = sorted(pairs, key=lambda p: (-p[1], p[0]))  # ties: by id, deterministic
            unknown = list({fid for fid, _ in ranked if fid not in known and fid != exclude})
            for i in range(0, len(unknown), _GET_FACES_CHUNK):
                chunk = unknown[i : i + _GET_FACES_CHUNK]
                found = self.metadata.get_faces(collection_id, chunk)
                known.update((fid, found.get(fid)) for fid in chunk)
            out: list[tuple[FaceRecord, float]] = []
            seen: set[str] = set()
            for fid, score in ranked:  # a face may sit in two segments mid-compaction
                rec = known.get(fid)
                if rec is not None and fid != exclude and fid not in seen:
                    seen.add(fid)
                    out.append((rec, score))
            if len(out) >= k or len(top) == len(eligible):
                return out[:k]
            want *= 4

    # --- maintenance

    def compact(
        self,
        collection_id: str,
        *,
        small_segment_faces: int = 20_000,
        min_age_s: float = 300.0,
        full: bool = False,
    ) -> CompactionResult:
        """Merge small segments (all of them with full=True) into one, dropping vectors whose
        face is gone from metadata. Segments younger than min_age_s are left alone: their
        faces' metadata may still be on its way, and they must not be mistaken for orphans."""
        now = self._clock()
        chosen: list[tuple[str, _Segment]] = []
        for name, seg in self._segments(collection_id):
            born = segments.segment_time(name)
            if born is not None and now - born < min_age_s:
                continue
            if full or len(seg.face_ids) < small_segment_faces:
                chosen.append((name, seg))
        if not chosen:
            return CompactionResult(None, [], 0, 0)
        ids = np.concatenate([s.face_ids for _, s in chosen])
        vecs = np.concatenate([s.vectors for _, s in chosen])
        unique_ids, first_rows = np.unique(ids, return_index=True)
        live: set[str] = set()
        for i in range(0, len(unique_ids), _GET_FACES_CHUNK):
            chunk = unique_ids[i : i + _GET_FACES_CHUNK].tolist()
            live.update(self.metadata.get_faces(collection_id, chunk))
        keep = np.sort([r for fid, r in zip(unique_ids.tolist(), first_rows) if fid in live])
        keep = keep.astype(np.intp)
        dropped = len(ids) - len(keep)
        if len(chosen) < 2 and dropped == 0:
            return CompactionResult(None, [], 0, 0)  # nothing to gain
        written = None
        if len(keep):
            # New segment first, then delete the old ones: a crash in between leaves duplicates,
            # which search de-duplicates, never a gap.
            written = segments.new_segment_name()
            kept_ids = ids[keep].tolist()
            self.vectors.write_segment(collection_id, written, kept_ids, vecs[keep])
            self.cache.put((collection_id, written), _Segment(ids[keep], vecs[keep]))
        for name, _ in chosen:
            self.vectors.delete_segment(collection_id, name)
        self.cache.retain(collection_id, set(self.vectors.list_segments(collection_id)))
        return CompactionResult(written, [n for n, _ in chosen], len(keep), dropped)
