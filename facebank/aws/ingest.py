"""S3-event indexing: objects ``<prefix><CollectionId>/<ExternalImageId>.<jpg|jpeg|png>`` in the
ingest bucket are indexed into that collection; removing the object removes its faces.

S3 -> SQS (dead-letter queue after repeated failures) -> this handler, with Powertools batch
processing: each SQS message that fails is reported alone (``batchItemFailures``) and retried; the
rest of the batch is done. Indexing goes through the registry's IndexFaces and DeleteFaces exactly
as an API call would (``runtime.call``), with the image passed as an S3Object.

Why retries and reordering are safe:

* IndexFaces' FaceIds are deterministic (UUIDv5 of collection, image sha256, ExternalImageId and
  face rank), so indexing the same image again stores nothing new;
* a small ledger table (``FACEBANK_INGEST_TABLE``, one item per object key) remembers the face ids
  an object produced and the S3 ``sequencer`` of the last event applied. Events older than that
  are skipped (S3 does not deliver in order); an overwrite deletes the faces of the previous image;
  a removal deletes the object's faces by id, cheaply, without scanning the collection. The ledger
  is written with a compare-and-set on the sequencer read, so two concurrent events for one key
  converge on the newest. Removal tombstones expire after ``TOMBSTONE_DAYS`` (DynamoDB TTL).
* IndexFaces reads the object's *current* content, so whichever event runs last indexes what is
  in the bucket now; an object already gone again is skipped (its removal event follows).

Faces associated with a user are not deleted (Rekognition's DeleteFaces refuses them); they are
logged, counted (``IngestFacesKeptForUser``) and stay in the ledger.

Keys that do not follow the pattern, and S3's test event, are skipped with a warning.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any
from urllib.parse import unquote_plus

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.config import Config
from botocore.exceptions import ClientError

from facebank.aws.runtime import (
    OperationError,
    call,
    lambda_entry,
    logger,
    metrics,
    tracer,
)

DELETE_FACES_MAX = 4096  # DeleteFaces' FaceIds limit
LIST_FACES_MAX = 4096
TOMBSTONE_DAYS = 30  # longer than SQS can hold a message (14 days) plus a DLQ redrive window
_SEQ_WIDTH = 64

KEY = re.compile(r"(?P<collection>[a-zA-Z0-9_.\-]{1,255})/(?P<external>[a-zA-Z0-9_.\-:]{1,255})\.(?:jpe?g|png)", re.IGNORECASE)

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
_ddb = None


def _dynamodb():
    global _ddb
    if _ddb is None:
        _ddb = boto3.client("dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 8}))
    return _ddb


def reset_clients() -> None:
    """Forget the DynamoDB client (tests switch moto mocks between cases)."""
    global _ddb
    _ddb = None


def parse_key(key: str, prefix: str = "") -> tuple[str, str] | None:
    """(CollectionId, ExternalImageId) of an ingest object key, or None when it is not one."""
    if not key.startswith(prefix):
        return None
    m = KEY.fullmatch(key[len(prefix) :])
    return (m["collection"], m["external"]) if m else None


def sequence(sequencer: str) -> str:
    """S3 sequencers of one key compare as hex strings once padded to the same length."""
    return sequencer.upper().rjust(_SEQ_WIDTH, "0")


# --- the ledger


class Ledger:
    """One item per object: ``object_key`` (bucket/key), ``sequencer``, ``face_ids`` (SS, absent when
    empty), ``collection_id``, ``external_image_id``, ``updated``, ``expires`` (TTL, tombstones only)."""

    def __init__(self, table: str):
        self.table = table

    def get(self, object_key: str) -> dict | None:
        item = _dynamodb().get_item(
            TableName=self.table, Key={"object_key": {"S": object_key}}, ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        return {"sequencer": item["sequencer"]["S"], "face_ids": set(item.get("face_ids", {}).get("SS", []))}

    def put_if(self, object_key: str, expected: str | None, item: dict[str, Any]) -> bool:
        """Write the item if the stored sequencer is still `expected` (None: no item yet)."""
        if expected is None:
            cond, values = "attribute_not_exists(object_key)", {}
        else:
            cond, values = "sequencer = :expected", {":expected": {"S": expected}}
        try:
            _dynamodb().put_item(
                TableName=self.table,
                Item={"object_key": {"S": object_key}, **item},
                ConditionExpression=cond,
                **({"ExpressionAttributeValues": values} if values else {}),
            )
            return True
        except ClientError as e:
            if e.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise


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


def _faces_of_external_id(collection_id: str, external_id: str) -> set[str]:
    """Fallback for objects without a ledger item (indexed before it existed): ListFaces, filtered."""
    found: set[str] = set()
    token = None
    while True:
        request = {"CollectionId": collection_id, "MaxResults": LIST_FACES_MAX}
        if token:
            request["NextToken"] = token
        try:
            page = call("ListFaces", request)
        except OperationError as e:
            if e.code == "ResourceNotFoundException":
                return set()
            raise
        found.update(f["FaceId"] for f in page["Faces"] if f.get("ExternalImageId") == external_id)
        token = page.get("NextToken")
        if not token:
            return found


# --- one S3 event


@tracer.capture_method(capture_response=False)
def apply(s3_record: dict, *, bucket_name: str, prefix: str, ledger: Ledger) -> str:
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

    item = ledger.get(object_key)
    if item is not None and item["sequencer"] >= seq:
        metrics.add_metric(name="IngestStaleEvents", unit=MetricUnit.Count, value=1)
        return "stale"
    if created:
        new_ids = _index(bucket, key, collection_id, external_id)
        if new_ids is None:
            return _skip("object is gone again; its removal event follows", key=key)
    else:
        new_ids = set()
    kept: set[str] = set()
    while True:
        if item is not None:
            old_ids = item["face_ids"]
        elif created:
            old_ids = set()
        else:
            old_ids = _faces_of_external_id(collection_id, external_id)
        kept |= _delete(collection_id, old_ids - new_ids - kept)
        face_ids = new_ids | kept
        record: dict[str, Any] = {
            "sequencer": {"S": seq},
            "collection_id": {"S": collection_id},
            "external_image_id": {"S": external_id},
            "updated": {"N": str(int(time.time()))},
        }
        if face_ids:
            record["face_ids"] = {"SS": sorted(face_ids)}
        if not created:
            record["expires"] = {"N": str(int(time.time()) + TOMBSTONE_DAYS * 86400)}
        if ledger.put_if(object_key, item["sequencer"] if item else None, record):
            logger.info(
                "ingested" if created else "removed",
                extra={"key": key, "collection_id": collection_id, "faces": len(face_ids)},
            )
            return "indexed" if created else "removed"
        item = ledger.get(object_key)
        if item is not None and item["sequencer"] >= seq:
            # A newer event won while we worked: drop what only we added.
            _delete(collection_id, new_ids - item["face_ids"])
            metrics.add_metric(name="IngestStaleEvents", unit=MetricUnit.Count, value=1)
            return "superseded"
        # An older event wrote in between: its faces are now the old ones; go again.


def _skip(reason: str, **fields: Any) -> str:
    metrics.add_metric(name="IngestSkipped", unit=MetricUnit.Count, value=1)
    logger.warning(f"skipped: {reason}", extra=fields)
    return "skipped"


def record_handler(record: SQSRecord) -> list[str]:
    """One SQS message: an S3 event notification (usually one record) or S3's test event."""
    body = json.loads(record.body)
    if body.get("Event") == "s3:TestEvent":
        return ["test-event"]
    ledger = Ledger(os.environ["FACEBANK_INGEST_TABLE"])
    bucket_name = os.environ.get("FACEBANK_INGEST_BUCKET", "")
    prefix = os.environ.get("FACEBANK_INGEST_PREFIX", "")
    return [apply(r, bucket_name=bucket_name, prefix=prefix, ledger=ledger) for r in body.get("Records", [])]


@lambda_entry()
def handler(event: dict, context: Any) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
