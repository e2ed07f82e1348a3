"""Shards: which segments of a collection are searched together, and the exact merge of their answers.

A collection's segments (faces', and users' vectors separately) are grouped into shards of at most
``max_rows`` rows. The grouping is data: a ``ShardMap`` stored in the metadata store
(``MetadataStore.get_shard_map`` / ``put_shard_map``, a versioned JSON document per collection and
kind), changed only by ``plan_shards`` when compaction has run (``SegmentIndex.rebalance``), never
by a search. Segments written since (IndexFaces) are in no shard yet: a search puts them in tail
shards of at most ``TAIL_SEGMENTS`` segments each, so every listed segment is searched exactly once.

Exactness. Every shard is searched exhaustively (one matmul over its segments) and answers its own
top ``want`` rows by (score desc, row id asc), ties at the cut included (``top_rows``). The global
top ``want`` is a subset of the union of the shards' top ``want``, so ``merge`` of the answers is
exactly the top ``want`` of one unsharded search over all segments, in the same order.

Both runtimes use this module: ``facebank serve`` searches the shards one after the other in its
own process (a ``SegmentIndex`` without a searcher); on AWS one shard-search function invocation per shard answers in
parallel (``facebank/aws/shard_search.py``) and the search function merges.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # numpy loads with the vectors, not for the shard map itself
    import numpy as np

DEFAULT_SHARD_ROWS = 500_000  # ~330 MB in memory at 128-d float32 (+ ids): ~1 s to load at 300 MB/s
TAIL_SEGMENTS = 256  # unassigned segments (each <= 100 rows from IndexFaces) per tail shard
KINDS = ("faces", "users")


@dataclass(frozen=True)
class ShardMap:
    """The stored assignment: shards[i] is the list of segment names of shard i."""

    shards: tuple[tuple[str, ...], ...] = ()
    rows: tuple[int, ...] = ()  # rows per shard when planned (for rebalancing and reports)
    version: int = 0  # of the stored document; 0: nothing stored yet

    def encode(self) -> str:
        return json.dumps({"shards": [list(s) for s in self.shards], "rows": list(self.rows)}, separators=(",", ":"))

    @classmethod
    def decode(cls, body: str | None, version: int) -> ShardMap:
        if not body:
            return cls(version=version)
        doc = json.loads(body)
        shards = tuple(tuple(s) for s in doc["shards"])
        rows = tuple(int(r) for r in doc.get("rows", [0] * len(shards)))
        return cls(shards, rows, version)

    def assigned(self) -> set[str]:
        return {name for shard in self.shards for name in shard}


def layout(stored: ShardMap, listed: Sequence[str], tail_segments: int = TAIL_SEGMENTS) -> list[tuple[int, list[str]]]:
    """The shards a search covers, as (shard number, segments): each stored shard restricted to
    the segments that exist now (compaction may have removed some), then the listed segments no
    shard holds, in tail shards of at most tail_segments, numbered after the stored ones. Every
    listed segment is in exactly one of them. The numbers are stable while the map is: the AWS
    fan-out sends shard n to the same function every time, whose environments keep it warm."""
    present = set(listed)
    out = [(i, [n for n in shard if n in present]) for i, shard in enumerate(stored.shards)]
    out = [(i, s) for i, s in out if s]
    assigned = stored.assigned()
    tail = [n for n in listed if n not in assigned]
    first = len(stored.shards)
    out += [(first + j, tail[i : i + tail_segments]) for j, i in enumerate(range(0, len(tail), tail_segments))]
    return out


def plan_shards(stored: ShardMap, row_counts: dict[str, int], max_rows: int) -> ShardMap:
    """A new assignment for the segments in row_counts (name -> rows; all that exist): shards keep
    the segments they had (so warm shard functions keep their caches), vanished ones are dropped,
    and unassigned ones go first-fit into the shard with room, else into a new shard. A segment of
    more than max_rows rows (an older, larger compaction) is a shard of its own; a shard of several
    segments over max_rows (max_rows was lowered) is dissolved and its segments assigned again."""
    shards: list[list[str]] = []
    rows: list[int] = []
    for shard in stored.shards:
        kept = [n for n in shard if n in row_counts]
        total = sum(row_counts[n] for n in kept)
        if len(kept) > 1 and total > max_rows:
            continue  # over a lowered max_rows: its segments are assigned again below
        if kept:
            shards.append(kept)
            rows.append(total)
    assigned = {n for s in shards for n in s}
    for name in sorted(n for n in row_counts if n not in assigned):  # names sort in creation order
        n_rows = row_counts[name]
        fit = next((i for i, r in enumerate(rows) if r + n_rows <= max_rows), None)
        if fit is None:
            shards.append([name])
            rows.append(n_rows)
        else:
            shards[fit].append(name)
            rows[fit] += n_rows
    return ShardMap(tuple(tuple(s) for s in shards), tuple(rows), stored.version)


def group_for_compaction(row_counts: Iterable[tuple[str, int]], max_rows: int) -> list[list[str]]:
    """Consecutive segments grouped so that no merged segment exceeds max_rows."""
    groups: list[list[str]] = [[]]
    total = 0
    for name, n in row_counts:
        if groups[-1] and total + n > max_rows:
            groups.append([])
            total = 0
        groups[-1].append(name)
        total += n
    return [g for g in groups if g]


# --- exact per-shard top rows and their merge


@dataclass
class ShardAnswer:
    """One shard's best rows (score desc, id asc) and whether they are all its eligible rows."""

    rows: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    complete: bool = True  # False: the shard has more eligible rows than it answered


def top_rows(ids_at: Callable[[np.ndarray], list[str]], scores: np.ndarray, want: int, min_score: float) -> ShardAnswer:
    """The want best rows with score >= min_score, ordered by (score desc, id asc), exactly: every
    row tied with the last one kept is considered before the cut, so the answer does not depend on
    how rows are split between segments or shards. ids_at maps row positions to row ids (only the
    candidates' ids are ever gathered)."""
    import numpy as np

    eligible = np.flatnonzero(scores >= min_score)
    if len(eligible) > want:
        part = eligible[np.argpartition(-scores[eligible], want - 1)[:want]]
        candidates = eligible[scores[eligible] >= scores[part].min()]  # ties at the cut come along
    else:
        candidates = eligible
    pairs = zip(ids_at(candidates), scores[candidates].tolist(), strict=True)
    ranked = sorted(pairs, key=lambda p: (-p[1], p[0]))[:want]
    return ShardAnswer([r for r, _ in ranked], [s for _, s in ranked], len(eligible) <= want)


def merge(answers: Iterable[ShardAnswer], want: int) -> ShardAnswer:
    """The exact top want of the union of the shards' rows: equal to one search over all of them."""
    answers = list(answers)
    pairs = [p for a in answers for p in zip(a.rows, a.scores, strict=True)]
    ranked = sorted(pairs, key=lambda p: (-p[1], p[0]))
    complete = all(a.complete for a in answers) and len(ranked) <= want
    ranked = ranked[:want]
    return ShardAnswer([r for r, _ in ranked], [s for _, s in ranked], complete)


@dataclass(frozen=True)
class ShardQuery:
    """What one shard search needs: which segments, the (unit) query, how many rows."""

    collection_id: str
    kind: str  # "faces" or "users"
    shard: int  # its number in the collection's layout (see layout)
    segments: tuple[str, ...]
    query: np.ndarray  # float32 [d], L2-normalised
    want: int
    min_score: float


@dataclass(frozen=True)
class ShardFetch:
    """Stored vectors of some rows, from the shard that holds their segments (a search by FaceId
    needs the face's vector: the shard has it warm, the search function would read a whole segment)."""

    collection_id: str
    kind: str
    shard: int
    segments: tuple[str, ...]
    rows: tuple[str, ...]


class ShardSearcher(Protocol):
    """Answers many shard queries (one per shard of a search), exactly; raises SegmentNotFound when
    a segment of a shard is gone (the caller plans again), ShardThrottled / ShardFailed when a
    shard's answer could not be had after retries."""

    def search(self, queries: list[ShardQuery]) -> list[ShardAnswer]: ...

    def fetch(self, requests: list[ShardFetch]) -> dict[str, np.ndarray]:
        """The stored vectors of the requested rows found in their segments (others left out)."""
        ...
