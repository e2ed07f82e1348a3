"""Sharded search on AWS: the shard-search function, and the fan-out the search functions call it with.

A search function (SearchFaces, SearchFacesByImage, SearchUsers, SearchUsersByImage) plans the
collection's shards (``SegmentIndex.shard_layout``: the stored shard map over the listed segments),
invokes a shard function once per shard in parallel (``LambdaShards``, in ``shard_client.py``,
at most ``concurrency`` at a time), merges the exact per-shard answers
(``facebank.search.shards.merge``) and only then reads metadata, for the merged candidates. The
stack deploys ``slots`` identical shard functions and
shard n of a collection always goes to the same one (``LambdaShards.function_for``): Lambda sends
an invocation to any environment of a function, so that is what keeps a shard's segments warm in
the environments that answer for it, each cache bounded by its function's memory (set by the
stack). No environment ever holds more than the shards it is sent.

The event is internal (never from API Gateway; only the search functions' roles may invoke it):
    {"collection_id", "kind": "faces" | "users", "shard": n, "segments": [names], "query": [floats],
     "want": int, "min_score": float}
and the answer {"rows": [ids], "scores": [floats], "complete": bool} (scores are float32 values,
exact in JSON), or {"error": "SegmentNotFound"} when compaction removed a segment meanwhile (the
caller plans again).

Failure is never a partial result: an invocation that is throttled, fails, times out or answers
garbage is retried; if it still does, the whole search fails (``ShardThrottled`` ->
ThrottlingException, ``ShardFailed`` -> InternalServerError).
"""

from __future__ import annotations

from typing import Any

from facebank.aws.observability import lambda_entry
from facebank.aws.runtime import shared_context
from facebank.aws.shard_client import ATTEMPTS, READ_TIMEOUT_S, RETRY_BUDGET_S, LambdaShards
from facebank.search.shards import KINDS, ShardFetch, ShardQuery
from facebank.storage.errors import SegmentNotFound

__all__ = ["ATTEMPTS", "READ_TIMEOUT_S", "RETRY_BUDGET_S", "LambdaShards", "handler"]


# --- the shard-search function


@lambda_entry()
def handler(event: dict, context: Any) -> dict:
    import numpy as np

    ctx = shared_context()
    kind = event["kind"]
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    index = ctx.index if kind == "faces" else ctx.user_index
    sq = ShardQuery(
        collection_id=event["collection_id"],
        kind=kind,
        shard=int(event.get("shard", 0)),
        segments=tuple(event["segments"]),
        query=np.asarray(event.get("query", []), dtype=np.float32),
        want=int(event.get("want", 0)),
        min_score=float(event.get("min_score", -1.0)),
    )
    try:
        if "fetch" in event:  # stored vectors of some rows, not a search
            sf = ShardFetch(sq.collection_id, kind, sq.shard, sq.segments, tuple(event["fetch"]))
            return {"vectors": {row: v.tolist() for row, v in index.fetch_shard(sf).items()}}
        answer = index.search_shard(sq)
    except SegmentNotFound:
        return {"error": "SegmentNotFound"}
    return {"rows": answer.rows, "scores": answer.scores, "complete": answer.complete}
