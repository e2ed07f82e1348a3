"""Segment compaction, run on a schedule (EventBridge rule -> this function).

Every IndexFaces call writes one small immutable segment; searches read every segment of a
collection, so many small segments cost S3 GETs and cold-start time. ``VectorIndex.compact``
merges the small segments older than ``FACEBANK_COMPACT_MIN_AGE_S`` (default 300 s: their faces'
metadata may still be on its way) into one and drops vectors of deleted faces; the user-vector
index (``Context.user_index``) does the same for users' segments, dropping vectors that are
no longer a user's current one. Search functions are read-only, so this is where that work happens.

Scheduled rather than event-driven: an S3 event per new segment would start a compaction per
IndexFaces call, each finding nothing old enough to merge; a schedule batches the work, bounds its
cost (one invocation per period plus the merging itself) and never overlaps with itself (the
timeout is shorter than the period, and failed runs are not retried: the next run catches up).
Collections are visited in random order so a large one cannot starve the rest, and the run stops
before the function's timeout.
"""

from __future__ import annotations

import random
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from facebank.aws.runtime import call, lambda_entry, logger, metrics, shared_context
from facebank.search.index import SegmentIndex

SAFETY_MS = 90_000  # stop starting new collections when less than this is left


def collection_ids() -> list[str]:
    ids: list[str] = []
    token = None
    while True:
        page = call("ListCollections", {"MaxResults": 1000, **({"NextToken": token} if token else {})})
        ids += page["CollectionIds"]
        token = page.get("NextToken")
        if not token:
            return ids


@lambda_entry()
def handler(event: dict, context: Any) -> dict:
    ctx = shared_context()
    min_age = ctx.settings.compact_min_age_s
    indexes: list[SegmentIndex[Any]] = [ctx.index, ctx.user_index]  # faces' segments, then users' vectors
    ids = collection_ids()
    random.shuffle(ids)
    done, merged, dropped, failed = 0, 0, 0, 0
    for collection_id in ids:
        if context.get_remaining_time_in_millis() < SAFETY_MS:
            logger.info("stopping before the timeout; the next run continues", extra={"left": len(ids) - done})
            break
        try:
            results = [index.compact(collection_id, min_age_s=min_age) for index in indexes]
        except Exception:  # noqa: BLE001 - one bad collection must not stop the others; the log has the trace
            logger.exception("compaction failed", extra={"collection_id": collection_id})
            failed += 1
            continue
        done += 1
        for kind, result in zip(("faces", "users"), results, strict=True):
            merged += len(result.removed)
            dropped += result.dropped
            if result.removed:
                logger.info(
                    "compacted",
                    extra={
                        "collection_id": collection_id,
                        "segments": kind,
                        "merged": len(result.removed),
                        "kept": result.kept,
                        "dropped": result.dropped,
                    },
                )
    metrics.add_metric(name="CompactedCollections", unit=MetricUnit.Count, value=done)
    metrics.add_metric(name="SegmentsMerged", unit=MetricUnit.Count, value=merged)
    metrics.add_metric(name="VectorsDropped", unit=MetricUnit.Count, value=dropped)
    if failed:
        metrics.add_metric(name="CompactionFailures", unit=MetricUnit.Count, value=failed)
    return {
        "collections": len(ids),
        "compacted": done,
        "segmentsMerged": merged,
        "vectorsDropped": dropped,
        "failed": failed,
    }
