"""AWS-only properties: half-finished collection deletes, contention retries (bounded), the
ingest ledger."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from storage_helpers import collection_record, faces

from facebank.storage import (
    CollectionExists,
    CollectionNotFound,
    FaceUserConflict,
    StorageBusy,
    UserRecord,
)
from facebank.storage.dynamodb import DynamoMetadataStore
from facebank.storage.dynamodb_ledgers import DynamoRequestLedger


def tombstone(meta: DynamoMetadataStore, collection_id: str) -> None:
    """What delete_collection leaves if it dies right after its first step."""
    meta._db.client.update_item(
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
    assert meta._db.get(meta.tables.collections, {"collection_id": {"S": "c1"}}) is None


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
    flaky = DynamoMetadataStore(ConflictingClient(real._db.client, failures=2), real.tables)
    assert len(flaky.put_faces("c1", faces("f", 4))) == 4
    assert real.get_collection("c1").face_count == 4

    hopeless = DynamoMetadataStore(ConflictingClient(real._db.client, 99), real.tables, max_attempts=3)
    with pytest.raises(StorageBusy):
        hopeless.put_faces("c1", faces("g", 1))
    assert real.get_collection("c1").face_count == 4


def _error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


class Wrapped:
    """A DynamoDB client passing every call through but the ones a test overrides."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _ledger(real: DynamoMetadataStore, client, max_attempts: int = 3) -> DynamoRequestLedger:
    return DynamoRequestLedger(client, real.tables, max_attempts=max_attempts)


def test_a_claim_released_before_it_is_read_claims_again(aws_stores):
    real = aws_stores.meta
    real.create_collection(collection_record("c1"))

    class ReleasedOnce(Wrapped):
        """The first claim finds the key taken; by the time it looks, the holder released it."""

        taken = True

        def put_item(self, **kw):
            if self.taken:
                self.taken = False
                raise _error("ConditionalCheckFailedException", "PutItem")
            return self.inner.put_item(**kw)

    assert _ledger(real, ReleasedOnce(real._db.client)).claim("c1", "k", "d", 0) == ("d", None)
    assert aws_stores.ledger.claim("c1", "k", "other", 0) == ("d", None)  # really claimed


def test_claims_that_keep_being_released_give_up_busy(aws_stores):
    real = aws_stores.meta
    real.create_collection(collection_record("c1"))

    class AlwaysReleased(Wrapped):
        puts = 0

        def put_item(self, **kw):
            self.puts += 1
            raise _error("ConditionalCheckFailedException", "PutItem")

        def get_item(self, **kw):
            return {}

    client = AlwaysReleased(real._db.client)
    with pytest.raises(StorageBusy):
        _ledger(real, client, max_attempts=4).claim("c1", "k", "d", 0)
    assert client.puts == 4


def test_a_user_that_keeps_changing_while_deleted_gives_up_busy(aws_stores):
    real = aws_stores.meta
    real.create_collection(collection_record("c1"))
    real.put_user("c1", UserRecord("u", "CREATED"))

    class UserAlwaysChanged(Wrapped):
        """Every delete transaction finds the user's version moved on (its condition fails)."""

        attempts = 0

        def transact_write_items(self, **kw):
            self.attempts += 1
            reasons = [{"Code": "ConditionalCheckFailed"}] + [{"Code": "None"}] * (len(kw["TransactItems"]) - 1)
            raise ClientError(
                {"Error": {"Code": "TransactionCanceledException", "Message": "x"}, "CancellationReasons": reasons},
                "TransactWriteItems",
            )

    client = UserAlwaysChanged(real._db.client)
    with pytest.raises(StorageBusy):
        DynamoMetadataStore(client, real.tables, max_attempts=3).delete_user("c1", "u")
    assert client.attempts == 3
    assert real.get_user("c1", "u") is not None and real.get_collection("c1").user_count == 1


def test_a_face_of_a_vanished_user_still_moves(aws_stores):
    """The previous user's item is missing (a stray the invariants rule out): the move is
    told apart from a conflict by that item's cancellation reason, and done without it."""
    meta = aws_stores.meta
    meta.create_collection(collection_record("c1"))
    meta.put_faces("c1", faces("f", 1))
    meta.put_user("c1", UserRecord("gone", "CREATED"))
    meta.put_user("c1", UserRecord("u2", "CREATED"))
    meta.set_face_user("c1", "f-0000", "gone", None)
    meta._db.client.delete_item(
        TableName=meta.tables.users, Key={"collection_id": {"S": "c1"}, "user_id": {"S": "gone"}}
    )
    meta.set_face_user("c1", "f-0000", "u2", "gone")
    assert meta.get_faces("c1", ["f-0000"])["f-0000"].user_id == "u2"
    assert meta.get_user("c1", "u2").face_ids == ["f-0000"]
    with pytest.raises(FaceUserConflict):  # the face's own condition still decides
        meta.set_face_user("c1", "f-0000", None, "gone")


def test_unprocessed_batch_keys_are_retried_then_busy(aws_stores):
    real = aws_stores.meta
    real.create_collection(collection_record("c1"))
    real.put_faces("c1", faces("f", 3))

    class Unprocessed(Wrapped):
        """Batch reads leave every key unprocessed `times` times (a throttled table)."""

        def __init__(self, inner, times):
            super().__init__(inner)
            self.times = times

        def batch_get_item(self, RequestItems):  # noqa: N803 (boto3's name)
            if self.times > 0:
                self.times -= 1
                return {"Responses": {}, "UnprocessedKeys": RequestItems}
            return self.inner.batch_get_item(RequestItems=RequestItems)

    ids = ["f-0000", "f-0001", "f-0002"]
    throttled_twice = DynamoMetadataStore(Unprocessed(real._db.client, 2), real.tables, max_attempts=3)
    assert sorted(throttled_twice.get_faces("c1", ids)) == ids
    hopeless = DynamoMetadataStore(Unprocessed(real._db.client, 99), real.tables, max_attempts=3)
    with pytest.raises(StorageBusy):
        hopeless.get_faces("c1", ids)


def test_unprocessed_batch_deletes_are_retried_then_busy(aws_stores):
    real = aws_stores.meta
    real.create_collection(collection_record("c1"))
    real.put_faces("c1", faces("f", 3))

    class Unprocessed(Wrapped):
        def batch_write_item(self, RequestItems):  # noqa: N803 (boto3's name)
            return {"UnprocessedItems": RequestItems}

    with pytest.raises(StorageBusy):
        DynamoMetadataStore(Unprocessed(real._db.client), real.tables, max_attempts=2).delete_collection("c1")
    assert real.get_collection("c1") is None  # deleting: invisible, and finished by the next delete
    assert real.delete_collection("c1") is False
    assert real.get_faces("c1", ["f-0000"]) == {}


# --- video jobs (facebank/storage/dynamodb_jobs.py)


def _job(job_id: str):
    from facebank.storage import JobRecord

    return JobRecord(job_id, "StartFaceDetection", "IN_PROGRESS", {"S3Object": {"Bucket": "b", "Name": "v"}}, {}, 1.0)


def _active(jobs) -> int:
    from facebank.storage.dynamodb_jobs import COUNTER_ID

    item = jobs._db.get(jobs.table, {"job_id": {"S": COUNTER_ID}})
    return int(item["active"]["N"]) if item else 0


def test_job_transactions_retry_conflicts_then_give_up_busy_leaving_the_counter_exact(aws_stores):
    from facebank.storage.dynamodb_jobs import DynamoJobStore

    real = aws_stores.jobs
    flaky = DynamoJobStore(ConflictingClient(real._db.client, failures=2), real.table)
    flaky.create_job(_job("a" * 32), max_active=5)
    assert _active(real) == 1 and real.get_job("a" * 32).status == "IN_PROGRESS"

    hopeless = DynamoJobStore(ConflictingClient(real._db.client, 99), real.table, max_attempts=3)
    with pytest.raises(StorageBusy):
        hopeless.create_job(_job("b" * 32), max_active=5)
    with pytest.raises(StorageBusy):
        hopeless.finish_job("a" * 32, "SUCCEEDED", None, 0)
    assert real.get_job("b" * 32) is None and _active(real) == 1  # nothing half-written
    assert real.get_job("a" * 32).status == "IN_PROGRESS"

    assert flaky.finish_job("a" * 32, "FAILED", "x", 0) is True
    assert _active(real) == 0 and real.finish_job("a" * 32, "SUCCEEDED", None, 0) is False
    assert _active(real) == 0  # a second finish frees nothing


def test_the_counter_item_is_not_a_job(aws_stores):
    from facebank.storage.dynamodb_jobs import COUNTER_ID

    jobs = aws_stores.jobs
    jobs.create_job(_job("c" * 32), max_active=5)
    assert jobs.get_job(COUNTER_ID) is None
    assert [j.job_id for j in jobs.active_jobs()] == ["c" * 32]
    with pytest.raises(ValueError):
        jobs.create_job(_job(COUNTER_ID), max_active=5)
