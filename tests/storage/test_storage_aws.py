"""AWS-only properties: half-finished collection deletes, contention retries."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from storage_helpers import collection_record, faces

from facebank.storage import (
    CollectionExists,
    CollectionNotFound,
    StorageBusy,
    UserRecord,
)
from facebank.storage.dynamodb import DynamoMetadataStore


def tombstone(meta: DynamoMetadataStore, collection_id: str) -> None:
    """What delete_collection leaves if it dies right after its first step."""
    meta._c.update_item(
        TableName=meta.tables.collections,
        Key={"collection_id": {"S": collection_id}},
        UpdateExpression="SET deleting = :t",
        ExpressionAttributeValues={":t": {"BOOL": True}},
    )


def test_half_deleted_collection_is_invisible_and_finished_later(aws_stores):
    meta = aws_stores.meta
    meta.create_collection(collection_record("c1"))
    meta.put_faces("c1", faces("f", 3))
    meta.put_user("c1", UserRecord("u", "ACTIVE"))
    tombstone(meta, "c1")

    assert meta.get_collection("c1") is None
    assert meta.list_collections(10) == ([], None)
    with pytest.raises(CollectionNotFound):
        meta.put_faces("c1", faces("g", 1))
    with pytest.raises(CollectionNotFound):
        meta.put_user("c1", UserRecord("v", "ACTIVE"))
    with pytest.raises(CollectionNotFound):
        meta.list_faces("c1", 10)

    # Re-creating finishes the purge first: the new collection inherits nothing.
    meta.create_collection(collection_record("c1"))
    assert meta.list_faces("c1", 10) == ([], None)
    assert meta.get_user("c1", "u") is None
    assert meta.get_collection("c1").face_count == 0
    with pytest.raises(CollectionExists):
        meta.create_collection(collection_record("c1"))


def test_delete_of_a_half_deleted_collection_finishes_it(aws_stores):
    meta = aws_stores.meta
    meta.create_collection(collection_record("c1"))
    meta.put_faces("c1", faces("f", 2))
    tombstone(meta, "c1")
    assert meta.delete_collection("c1") is False  # already invisible, but purged now
    assert meta.get_faces("c1", ["f-0000", "f-0001"]) == {}
    assert meta._get(meta.tables.collections, {"collection_id": {"S": "c1"}}) is None


class ConflictingClient:
    """A DynamoDB client whose first `failures` transactions are cancelled by a conflict."""

    def __init__(self, inner, failures: int):
        self.inner, self.failures = inner, failures

    def transact_write_items(self, **kw):
        if self.failures > 0:
            self.failures -= 1
            others = [{"Code": "None"}] * (len(kw["TransactItems"]) - 1)
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                    "CancellationReasons": [{"Code": "TransactionConflict"}, *others],
                },
                "TransactWriteItems",
            )
        return self.inner.transact_write_items(**kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_transaction_conflicts_are_retried(aws_stores):
    real = aws_stores.meta
    real.create_collection(collection_record("c1"))
    flaky = DynamoMetadataStore(ConflictingClient(real._c, failures=2), real.tables)
    assert len(flaky.put_faces("c1", faces("f", 4))) == 4
    assert real.get_collection("c1").face_count == 4

    hopeless = DynamoMetadataStore(ConflictingClient(real._c, 99), real.tables, max_attempts=3)
    with pytest.raises(StorageBusy):
        hopeless.put_faces("c1", faces("g", 1))
    assert real.get_collection("c1").face_count == 4
