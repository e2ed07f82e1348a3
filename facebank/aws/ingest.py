"""S3-event indexing: objects ``<prefix><CollectionId>/<ExternalImageId>.<jpg|jpeg|png>`` in the
ingest bucket are indexed into that collection; removing the object removes its faces.

S3 -> SQS (dead-letter queue after repeated failures) -> this handler, with Powertools batch
processing: each SQS message that fails is reported alone (``batchItemFailures``) and retried; the
rest of the batch is done. Indexing goes through the registry's IndexFaces and DeleteFaces exactly
as an API call would (``runtime.call``), with the image passed as an S3Object.

Why retries and reordering are safe:

* IndexFaces' FaceIds are deterministic (UUIDv5 of collection, image sha256, ExternalImageId and
  face rank), so indexing the same image again stores nothing new;
* the ingest ledger (``facebank.storage.IngestLedger``: a small table, ``FACEBANK_INGEST_TABLE``,
  one item per object key) remembers the face ids an object produced and the S3 ``sequencer`` of
  the last event applied. Events older than that are skipped (S3 does not deliver in order); an
  overwrite deletes the faces of the previous image; a removal deletes the object's faces by id,
  cheaply, without scanning the collection (an object the ledger never saw has none to delete).
  The ledger is written with a compare-and-set on the sequencer read, so two concurrent events for
  one key converge on the newest. Removal tombstones expire after ``TOMBSTONE_DAYS`` (DynamoDB TTL).
* IndexFaces reads the object's *current* content, so whichever event runs last indexes what is
  in the bucket now; an object already gone again is skipped (its removal event follows).

Faces associated with a user are not deleted (Rekognition's DeleteFaces refuses them); they are
logged, counted (``IngestFacesKeptForUser``) and stay in the ledger.

Keys that do not follow the pattern, and S3's test event, are skipped with a warning.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from facebank.aws.runtime import (
    OperationError,
    call,
    lambda_entry,
    logger,
    metrics,
    shared_context,
    tracer,
)
from facebank.storage import IngestLedger, IngestRecord

DELETE_FACES_MAX = 4096  # DeleteFaces' FaceIds limit
TOMBSTONE_DAYS = 30  # longer than SQS can hold a message (14 days) plus a DLQ redrive window
# Rounds of apply's compare-and-set lost to older events for the same key; past it the message
# fails and SQS delivers it again later.
MAX_LEDGER_ROUNDS = 10
_SEQ_WIDTH = 64

KEY = re.compile(
    r"(?P<collection>[a-zA-Z0-9_.\-]{1,255})/(?P<external>[a-zA-Z0-9_.\-:]{1,255})\.(?:jpe?g|png)", re.IGNORECASE
)

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def parse_key(key: str, prefix: str = "") -> tuple[str, str] | None:
    """(CollectionId, ExternalImageId) of an ingest object key, or None when it is not one."""
    if not key.startswith(prefix):
        return None
    m = KEY.fullmatch(key[len(prefix) :])
    return (m["collection"], m["external"]) if m else None


def sequence(sequencer: str) -> str:
    """S3 sequencers of one key compare as hex strings once padded to the same length."""
    return sequencer.upper().rjust(_SEQ_WIDTH, "0")


# --- faces, through the registry


# The object's content can never be indexed (not a JPEG/PNG, too large): retrying cannot help, so
# the object counts as holding no faces (an overwrite still removes the faces of its old content).
# Transient S3 failures are ThrottlingException and fail the message, which SQS delivers again.
UNINDEXABLE = {"InvalidImageFormatException", "ImageTooLargeException"}


def _index(bucket: str, key: str, collection_id: str, external_id: str) -> set[str] | None:
    """Face ids IndexFaces stores for the object's current content; None if the object is gone."""
    try:
        result = call(
            "IndexFaces",
            {
                "CollectionId": collection_id,
                "ExternalImageId": external_id,
                "Image": {"S3Object": {"Bucket": bucket, "Name": key}},
            },
        )
    except OperationError as e:
        if e.code == "InvalidS3ObjectException":
            return None
        if e.code in UNINDEXABLE:
            metrics.add_metric(name="IngestUnindexableObjects", unit=MetricUnit.Count, value=1)
            logger.warning("object cannot be indexed", extra={"key": key, "error": e.code})
            return set()
        raise
    faces = {r["Face"]["FaceId"] for r in result["FaceRecords"]}
    metrics.add_metric(name="IngestIndexedFaces", unit=MetricUnit.Count, value=len(faces))
    if result.get("UnindexedFaces"):
        logger.info("faces not indexed", extra={"key": key, "unindexed": len(result["UnindexedFaces"])})
    return faces


def _delete(collection_id: str, face_ids: set[str]) -> set[str]:
    """Delete faces; returns those that must stay (associated with a user). A collection that no
    longer exists has no faces left to delete."""
    kept: set[str] = set()
    ids = sorted(face_ids)
    for i in range(0, len(ids), DELETE_FACES_MAX):
        try:
            result = call("DeleteFaces", {"CollectionId": collection_id, "FaceIds": ids[i : i + DELETE_FACES_MAX]})
        except OperationError as e:
            if e.code == "ResourceNotFoundException":
                return set()
            raise
        metrics.add_metric(name="IngestDeletedFaces", unit=MetricUnit.Count, value=len(result["DeletedFaces"]))
        for failure in result.get("UnsuccessfulFaceDeletions", []):
            if "ASSOCIATED_TO_AN_EXISTING_USER" in failure.get("Reasons", []):
                kept.add(failure["FaceId"])
    if kept:
        metrics.add_metric(name="IngestFacesKeptForUser", unit=MetricUnit.Count, value=len(kept))
        logger.warning("faces associated with a user were not deleted", extra={"face_ids": sorted(kept)})
    return kept


# --- one S3 event


class LedgerContention(Exception):
    """apply lost its compare-and-set MAX_LEDGER_ROUNDS times: the message is retried later."""


@tracer.capture_method(capture_response=False)
def apply(s3_record: dict, *, bucket_name: str, prefix: str, ledger: IngestLedger) -> str:
    """Bring the collection in line with one S3 event; returns what was done (for logs and tests)."""
    event_name = s3_record.get("eventName", "")
    bucket = s3_record["s3"]["bucket"]["name"]
    key = unquote_plus(s3_record["s3"]["object"]["key"])
    created = event_name.startswith("ObjectCreated:")
    if not created and not event_name.startswith("ObjectRemoved:"):
        return _skip("not an object created/removed event", event_name=event_name, key=key)
    if bucket_name and bucket != bucket_name:
        return _skip("event from another bucket", bucket=bucket, key=key)
    parsed = parse_key(key, prefix)
    if parsed is None:
        return _skip(f"key is not {prefix}<CollectionId>/<ExternalImageId>.<jpg|jpeg|png>", key=key)
    collection_id, external_id = parsed
    seq = sequence(s3_record["s3"]["object"].get("sequencer", "0"))
    object_key = f"{bucket}/{key}"

    stored = ledger.get(object_key)
    if stored is not None and stored.sequencer >= seq:
        metrics.add_metric(name="IngestStaleEvents", unit=MetricUnit.Count, value=1)
        return "stale"
    if created:
        new_ids = _index(bucket, key, collection_id, external_id)
        if new_ids is None:
            return _skip("object is gone again; its removal event follows", key=key)
    else:
        new_ids = set()
    kept: set[str] = set()
    for _ in range(MAX_LEDGER_ROUNDS):
        old_ids = set(stored.face_ids) if stored is not None else set()
        kept |= _delete(collection_id, old_ids - new_ids - kept)
        face_ids = new_ids | kept
        now = int(time.time())
        record = IngestRecord(
            sequencer=seq,
            face_ids=frozenset(face_ids),
            collection_id=collection_id,
            external_image_id=external_id,
            updated=now,
            expires=None if created else now + TOMBSTONE_DAYS * 86400,
        )
        if ledger.put_if(object_key, stored.sequencer if stored else None, record):
            logger.info(
                "ingested" if created else "removed",
                extra={"key": key, "collection_id": collection_id, "faces": len(face_ids)},
            )
            return "indexed" if created else "removed"
        stored = ledger.get(object_key)
        if stored is not None and stored.sequencer >= seq:
            # A newer event won while we worked: drop what only we added.
            _delete(collection_id, new_ids - stored.face_ids)
            metrics.add_metric(name="IngestStaleEvents", unit=MetricUnit.Count, value=1)
            return "superseded"
        # An older event wrote in between: its faces are now the old ones; go again.
    raise LedgerContention(f"{object_key}: the ledger kept changing under older events")


def _skip(reason: str, **fields: Any) -> str:
    metrics.add_metric(name="IngestSkipped", unit=MetricUnit.Count, value=1)
    logger.warning(f"skipped: {reason}", extra=fields)
    return "skipped"


def record_handler(record: SQSRecord) -> list[str]:
    """One SQS message: an S3 event notification (usually one record) or S3's test event."""
    body = json.loads(record.body)
    if body.get("Event") == "s3:TestEvent":
        return ["test-event"]
    ctx = shared_context()
    ledger = ctx.storage.ingest
    if ledger is None:
        raise RuntimeError("the ingest function has no ingest ledger: FACEBANK_INGEST_TABLE is not set")
    bucket_name, prefix = ctx.settings.ingest_bucket, ctx.settings.ingest_prefix
    return [apply(r, bucket_name=bucket_name, prefix=prefix, ledger=ledger) for r in body.get("Records", [])]


@lambda_entry()
def handler(event: dict, context: Any) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
