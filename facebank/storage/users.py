"""User vectors: one vector per user, the re-normalised mean of its faces' vectors, searched like
faces.

Layout. User vectors are rows of immutable segments in the vector store's user namespace
(``VectorStore.user_vectors()``: ``<data_dir>/vectors/<collection>/users/*.seg`` embedded,
``s3://bucket/<prefix><collection>/users/*.seg`` on AWS), one row per built vector, with the row
id ``<user_id>/<vector_id>`` (a UserId cannot contain "/"). The user's metadata record names its
current vector (``UserRecord.vector_id``) and carries a membership version that every
association change bumps.

Why segments rather than a vector attribute on the user record:
- SearchUsers stays fast at large user counts: a search is one matmul over cached immutable
  segments plus one metadata read of the top candidates, exactly like face search. A vector on
  each user record would make every search read every user item of the collection (a DynamoDB
  Query of the whole partition, O(users) I/O per query) with nothing safely cacheable.
- It is consistent under concurrent AssociateFaces: a vector is a pure function of the
  membership. ``refresh`` reads the membership with its version, writes a new row, and commits it
  with ``set_user_vector(..., version)``, which succeeds only if the membership did not change
  since the read (else it rebuilds). Each membership change is followed by a refresh from the
  request that made it, so the last commit is always built from the final membership: no
  interleaving can leave a vector that misses a face. A crash between a membership change and
  its commit leaves the user UPDATING on its previous vector; the next Associate/DisassociateFaces
  for the user (a client retry) rebuilds it.
- The write order is the faces' one: row first, metadata second; a crash in between orphans a
  row that search ignores and compaction drops.

Liveness: a row counts iff its user exists and ``user.vector_id`` is the row's vector id, so
vectors of older memberships, of deleted users and orphans never come out of a search.
Compaction merges small segments older than ``min_age_s`` (a row whose commit is in flight is
young, so it is never taken for an orphan) and drops dead rows. The AWS deployment runs
``compact`` on a schedule (facebank/aws/compaction.py); elsewhere (``facebank serve``) a search
runs it when a collection has more than ``auto_compact_segments`` segments, and a search that
cannot write (read-only functions) stops trying after the first failure.

Why the mean (bench/users.py on faces/dev; README "Users"): at an equal false-match rate the
re-normalised mean of a user's faces finds more probes than matching its best single face (and
than a single photo), for every model pack.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from facebank.storage import segments
from facebank.storage.errors import (
    FaceNotFound,
    SegmentNotFound,
    StorageBusy,
    UserNotFound,
)
from facebank.storage.index import CompactionResult, VectorIndex
from facebank.storage.ports import FaceRecord, UserRecord, VectorStore

log = logging.getLogger("facebank.storage.users")

_GET_CHUNK = 1000


def row_id(user_id: str, vector_id: str) -> str:
    return f"{user_id}/{vector_id}"


def split_row(row: str) -> tuple[str, str]:
    user_id, _, vector_id = row.rpartition("/")
    return user_id, vector_id


def mean_vector(vectors: np.ndarray) -> np.ndarray:
    """The re-normalised mean of unit vectors (rows)."""
    m = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(m))
    return m / norm if norm > 0 else m


@dataclass(frozen=True)
class _Segment:
    rows: np.ndarray  # row ids, unicode [n]
    vectors: np.ndarray  # float32 [n, d], L2-normalised

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.vectors.nbytes


def _segment(rows: list[str], vectors: np.ndarray) -> _Segment:
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return _Segment(np.array(rows, dtype=str), v / np.where(norms == 0, 1, norms))


class UserVectorIndex:
    def __init__(
        self,
        faces: VectorIndex,
        store: VectorStore | None = None,
        *,
        cache_bytes: int = 256 << 20,
        overfetch: float = 1.5,
        auto_compact_segments: int | None = 256,  # None: only compact() when called
        compact_min_age_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ):
        self.faces = faces
        self.metadata = faces.metadata
        self.vectors = store if store is not None else faces.vectors.user_vectors()
        self.overfetch = max(1.0, overfetch)
        self.auto_compact_segments = auto_compact_segments
        self.compact_min_age_s = compact_min_age_s
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], _Segment] = OrderedDict()
        self._cache_bytes = 0
        self._cache_max = cache_bytes
        self._lock = threading.Lock()
        self._compacting: set[str] = set()

    # --- cache of immutable segments

    def _cached(self, key: tuple[str, str]) -> _Segment | None:
        with self._lock:
            seg = self._cache.get(key)
            if seg is not None:
                self._cache.move_to_end(key)
            return seg

    def _remember(self, key: tuple[str, str], seg: _Segment) -> None:
        if seg.nbytes > self._cache_max:
            return
        with self._lock:
            old = self._cache.pop(key, None)
            self._cache_bytes += seg.nbytes - (old.nbytes if old else 0)
            self._cache[key] = seg
            while self._cache_bytes > self._cache_max:
                _, evicted = self._cache.popitem(last=False)
                self._cache_bytes -= evicted.nbytes

    def _retain(self, collection_id: str, names: set[str]) -> None:
        with self._lock:
            for key in [k for k in self._cache if k[0] == collection_id and k[1] not in names]:
                self._cache_bytes -= self._cache.pop(key).nbytes

    def _segments(self, collection_id: str) -> list[tuple[str, _Segment]]:
        # A segment may vanish between list and read when compaction replaces it: list again.
        for _ in range(5):
            names = self.vectors.list_segments(collection_id)
            self._retain(collection_id, set(names))
            try:
                out = []
                for name in names:
                    seg = self._cached((collection_id, name))
                    if seg is None:
                        seg = _segment(*self.vectors.read_segment(collection_id, name))
                        self._remember((collection_id, name), seg)
                    out.append((name, seg))
                return out
            except SegmentNotFound:
                continue
        raise SegmentNotFound(f"user segments of {collection_id!r} keep disappearing")

    # --- face vectors

    def face_vectors(self, collection_id: str, faces: Iterable[FaceRecord]) -> dict[str, np.ndarray]:
        """Stored (normalised) vectors of the given faces; faces without one are left out."""
        out: dict[str, np.ndarray] = {}
        for rec in faces:
            row = None
            try:  # the face's own segment, through the face index's cache
                row = self.faces._find(self.faces._load(collection_id, rec.segment), rec.face_id)
            except (SegmentNotFound, ValueError):
                row = None
            if row is None:  # compacted into a newer segment: let the index find it
                try:
                    row = self.faces.get_vector(collection_id, rec.face_id)
                except FaceNotFound:
                    continue
            out[rec.face_id] = row
        return out

    def user_vector(self, collection_id: str, user: UserRecord) -> np.ndarray | None:
        """The vector of the user's current faces (None without faces), built from the faces'
        vectors rather than read back, so it always matches the membership in `user`."""
        if not user.face_ids:
            return None
        found = self.metadata.get_faces(collection_id, user.face_ids)
        vectors = self.face_vectors(collection_id, found.values())
        return mean_vector(np.stack(list(vectors.values()))) if vectors else None

    # --- writes

    def refresh(self, collection_id: str, user_id: str, *, max_attempts: int = 50) -> UserRecord:
        """Build the user's vector from its current faces and commit it (see the module
        docstring); returns the user as committed. Raises UserNotFound."""
        for attempt in range(max_attempts):
            user = self.metadata.get_user(collection_id, user_id)
            if user is None:
                raise UserNotFound(user_id)
            vector = self.user_vector(collection_id, user)
            vector_id = name = None
            if vector is not None:
                vector_id = uuid.uuid4().hex
                name = segments.new_segment_name()
                rows = [row_id(user_id, vector_id)]
                self.vectors.write_segment(collection_id, name, rows, vector[None, :])
            try:
                committed = self.metadata.set_user_vector(collection_id, user_id, vector_id, user.version)
            except UserNotFound:
                committed = False
                user = None
            if committed:
                if name is not None:
                    self._remember((collection_id, name), _segment(rows, vector[None, :]))
                user.vector_id = vector_id
                user.status = "ACTIVE" if user.face_ids else "CREATED"
                return user
            if name is not None:  # never referenced: remove it now rather than at compaction
                self.vectors.delete_segment(collection_id, name)
            if user is None:
                raise UserNotFound(user_id)
            # The membership moved on while we built: someone else's change; build again.
            time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))
        raise StorageBusy(f"user {user_id!r} kept changing while its vector was rebuilt")

    # --- search

    def search(
        self,
        collection_id: str,
        query: np.ndarray,
        k: int,
        min_score: float = -1.0,
        exclude: str | None = None,
    ) -> list[tuple[UserRecord, float]]:
        """Up to k (user, cosine) of live user vectors with cosine >= min_score, best first;
        ties by user id. `exclude` leaves one user out (SearchUsers by UserId)."""
        if k <= 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        q = q / (np.linalg.norm(q) or 1.0)
        segs = [s for _, s in self._segments(collection_id)]
        self._maybe_compact(collection_id, len(segs))
        if not segs:
            return []
        dims = {s.vectors.shape[1] for s in segs}
        if dims != {q.shape[0]}:
            raise ValueError(f"query has {q.shape[0]} dimensions, user segments have {sorted(dims)}")
        scores = np.concatenate([s.vectors @ q for s in segs])
        starts = np.cumsum([0] + [len(s.rows) for s in segs])

        def rows_at(idx: np.ndarray) -> list[str]:
            which = np.searchsorted(starts, idx, side="right") - 1
            return [str(segs[w].rows[i - starts[w]]) for w, i in zip(which.tolist(), idx.tolist())]

        eligible = np.flatnonzero(scores >= min_score)
        want = max(k + 8, int(k * self.overfetch))
        known: dict[str, UserRecord | None] = {}
        while True:
            if len(eligible) > want:
                top = eligible[np.argpartition(-scores[eligible], want - 1)[:want]]
            else:
                top = eligible
            ranked = sorted(zip(rows_at(top), scores[top].tolist()), key=lambda p: (-p[1], p[0]))
            unknown = list({split_row(r)[0] for r, _ in ranked} - known.keys() - {exclude})
            for i in range(0, len(unknown), _GET_CHUNK):
                chunk = unknown[i : i + _GET_CHUNK]
                found = self.metadata.get_users(collection_id, chunk)
                known.update((uid, found.get(uid)) for uid in chunk)
            out: list[tuple[UserRecord, float]] = []
            seen: set[str] = set()
            for row, score in ranked:
                user_id, vector_id = split_row(row)
                user = known.get(user_id)
                if user is None or user_id == exclude or user_id in seen or user.vector_id != vector_id:
                    continue
                seen.add(user_id)
                out.append((user, score))
            if len(out) >= k or len(top) == len(eligible):
                return out[:k]
            want *= 4

    # --- maintenance

    def _maybe_compact(self, collection_id: str, n_segments: int) -> None:
        if self.auto_compact_segments is None or n_segments <= self.auto_compact_segments:
            return
        with self._lock:
            if collection_id in self._compacting:
                return
            self._compacting.add(collection_id)
        try:
            self.compact(collection_id, min_age_s=self.compact_min_age_s)
        except Exception:
            # Most likely a deployment whose search functions may not write (AWS: the scheduled
            # compaction function does this work there), so stop trying in this process.
            log.warning("user-vector compaction of %s failed; leaving it to scheduled compaction",
                        collection_id, exc_info=True)  # fmt: skip
            self.auto_compact_segments = None
        finally:
            with self._lock:
                self._compacting.discard(collection_id)

    def compact(
        self,
        collection_id: str,
        *,
        small_segment_rows: int = 20_000,
        min_age_s: float = 300.0,
        full: bool = False,
    ) -> CompactionResult:
        """Merge small user segments (all with full=True) older than min_age_s into one,
        dropping rows that are not their user's current vector."""
        now = self._clock()
        chosen: list[tuple[str, _Segment]] = []
        for name, seg in self._segments(collection_id):
            born = segments.segment_time(name)
            if born is not None and now - born < min_age_s:
                continue
            if full or len(seg.rows) < small_segment_rows:
                chosen.append((name, seg))
        if not chosen:
            return CompactionResult(None, [], 0, 0)
        rows = np.concatenate([s.rows for _, s in chosen])
        vecs = np.concatenate([s.vectors for _, s in chosen])
        unique_rows, first = np.unique(rows, return_index=True)
        user_ids = sorted({split_row(r)[0] for r in unique_rows.tolist()})
        current: dict[str, str | None] = {}
        for i in range(0, len(user_ids), _GET_CHUNK):
            found = self.metadata.get_users(collection_id, user_ids[i : i + _GET_CHUNK])
            current.update((uid, u.vector_id) for uid, u in found.items())
        keep = np.sort(
            np.array(
                [r for row, r in zip(unique_rows.tolist(), first) if current.get(split_row(row)[0]) == split_row(row)[1]],
                dtype=np.intp,
            )
        )
        dropped = len(rows) - len(keep)
        if len(chosen) < 2 and dropped == 0:
            return CompactionResult(None, [], 0, 0)
        written = None
        if len(keep):
            written = segments.new_segment_name()
            self.vectors.write_segment(collection_id, written, rows[keep].tolist(), vecs[keep])
            self._remember((collection_id, written), _Segment(rows[keep], vecs[keep]))
        for name, _ in chosen:
            self.vectors.delete_segment(collection_id, name)
        self._retain(collection_id, set(self.vectors.list_segments(collection_id)))
        return CompactionResult(written, [n for n, _ in chosen], len(keep), dropped)
