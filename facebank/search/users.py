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
from collections.abc import Callable

import numpy as np

from facebank.search.index import SegmentIndex, VectorIndex
from facebank.search.shards import ShardSearcher
from facebank.storage.errors import (
    StorageBusy,
    UserNotFound,
)
from facebank.storage.ports import UserRecord, VectorStore

log = logging.getLogger("facebank.search.users")


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


class UserVectorIndex(SegmentIndex[UserRecord]):
    """Users: a row is ``<user_id>/<vector_id>``, live while it is its user's current vector."""

    kind = "users"

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
        searcher: ShardSearcher | None = None,
    ):
        super().__init__(
            store if store is not None else faces.vectors.user_vectors(),
            faces.metadata,
            cache_bytes=cache_bytes,
            overfetch=overfetch,
            clock=clock,
            shard_rows=faces.shard_rows,
            searcher=searcher,
        )
        self.faces = faces
        self.auto_compact_segments = auto_compact_segments
        self.compact_min_age_s = compact_min_age_s
        self._lock = threading.Lock()
        self._compacting: set[str] = set()

    def _live(self, collection_id: str, rows: list[str]) -> dict[str, UserRecord]:
        users = self.metadata.get_users(collection_id, sorted({split_row(r)[0] for r in rows}))
        live = {}
        for row in rows:
            user_id, vector_id = split_row(row)
            user = users.get(user_id)
            if user is not None and user.vector_id == vector_id:
                live[row] = user
        return live

    @staticmethod
    def _key(row: str) -> str:
        return split_row(row)[0]

    # --- face vectors

    def user_vector(self, collection_id: str, user: UserRecord) -> np.ndarray | None:
        """The vector of the user's current faces (None without faces), built from the faces'
        vectors rather than read back, so it always matches the membership in `user`."""
        if not user.face_ids:
            return None
        found = self.metadata.get_faces(collection_id, user.face_ids)
        vectors = self.faces.vectors_of(collection_id, list(found.values()))
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
                name = self._write(collection_id, [row_id(user_id, vector_id)], vector[None, :])
            committed: bool | None  # None: the user is gone
            try:
                committed = self.metadata.set_user_vector(collection_id, user_id, vector_id, user.version)
            except UserNotFound:
                committed = None
            if committed:
                user.vector_id = vector_id
                user.status = "ACTIVE" if user.face_ids else "CREATED"
                return user
            if name is not None:  # never referenced: remove it now rather than at compaction
                self.vectors.delete_segment(collection_id, name)
            if committed is None:
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
        hits = self._search(collection_id, query, k, min_score, exclude)
        # The search just listed and cached every segment: the cache's count needs no more I/O.
        self._maybe_compact(collection_id, self.cache.count(collection_id))
        return hits

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
            log.warning(
                "user-vector compaction of %s failed; leaving it to scheduled compaction", collection_id, exc_info=True
            )
            self.auto_compact_segments = None
        finally:
            with self._lock:
                self._compacting.discard(collection_id)
