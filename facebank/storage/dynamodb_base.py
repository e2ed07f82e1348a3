"""The DynamoDB base of every AWS adapter (metadata, ledgers, jobs, celebrity gallery): strongly
consistent reads, conditional writes whose failure is returned rather than raised, transactions,
and the one retry loop with its retryable set. Every retry is bounded and ends in StorageBusy,
which callers report as throttling: the client retries later.
"""

from __future__ import annotations

import random
import time
from collections.abc import Hashable, Iterator, Mapping
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from facebank.storage.errors import StorageBusy

TX_MAX = 100  # TransactWriteItems limit
BATCH_GET_MAX = 100
BATCH_WRITE_MAX = 25
RETRYABLE = {"TransactionConflict", "ProvisionedThroughputExceeded", "ThrottlingError"}
CCF = "ConditionalCheckFailed"  # a transaction's cancellation reason
CCF_ERROR = "ConditionalCheckFailedException"  # the same, as a single-item write's error code
DEFAULT_MAX_ATTEMPTS = 10

Name = TypeVar("Name", bound=Hashable)  # what a transaction's items are known by


def client_of(dynamodb: Any) -> Any:
    """Accept a boto3 DynamoDB client or resource (TransactWriteItems needs the client)."""
    return dynamodb.meta.client if hasattr(dynamodb, "Table") else dynamodb


def create_table_specs(client: Any, specs: Mapping[str, list[tuple[str, str]]], wait: bool) -> None:
    for table, keys in specs.items():
        try:
            client.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": a, "KeyType": t} for a, t in keys],
                AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a, _ in keys],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as e:
            if e.response["Error"]["Code"] != "ResourceInUseException":
                raise
    if wait:
        for table in specs:
            client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 120})


def backoff(attempt: int) -> None:
    """Full-jitter exponential backoff, capped at 1 s."""
    time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))


def counter_take(table: str, key: dict[str, Any], attribute: str, limit: int) -> dict[str, Any]:
    """A TransactWriteItems Update adding one to a counter item's ``attribute`` unless it has
    reached ``limit``: with the write it counts, a limit that holds under concurrent writers."""
    return {
        "Update": {
            "TableName": table,
            "Key": key,
            "UpdateExpression": f"ADD {attribute} :one",
            "ConditionExpression": f"attribute_not_exists({attribute}) OR {attribute} < :max",
            "ExpressionAttributeValues": {":one": {"N": "1"}, ":max": {"N": str(limit)}},
        }
    }


def counter_free(table: str, key: dict[str, Any], attribute: str) -> dict[str, Any]:
    """The TransactWriteItems Update giving back what ``counter_take`` took."""
    return {
        "Update": {
            "TableName": table,
            "Key": key,
            "UpdateExpression": f"ADD {attribute} :minus",
            "ExpressionAttributeValues": {":minus": {"N": "-1"}},
        }
    }


class Dynamo:
    """The calls every adapter here makes, with this module's rules: strongly consistent reads,
    a failed write condition returned rather than raised, contention retried a bounded number of
    times (then StorageBusy)."""

    def __init__(self, dynamodb: Any, max_attempts: int):
        self.client = client_of(dynamodb)
        self.max_attempts = max_attempts

    def get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        return self.client.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")

    def write(self, method: str, **kw: Any) -> dict[str, Any] | None:
        """A single-item write (put_item, update_item, delete_item): its response, or None when
        its ConditionExpression failed. Retried while it collides with an in-flight transaction
        (TransactionConflictException, which botocore does not retry)."""
        for attempt in range(self.max_attempts):
            try:
                return getattr(self.client, method)(**kw)
            except ClientError as e:
                code = e.response["Error"]["Code"]
                if code == CCF_ERROR:
                    return None
                if code != "TransactionConflictException":
                    raise
            backoff(attempt)
        raise StorageBusy(f"{method} still conflicting after {self.max_attempts} attempts")

    def transact(self, items: Mapping[Name, dict[str, Any]]) -> set[Name]:
        """Run the named items as one transaction, retrying contention. Returns the names of the
        items whose condition failed and so cancelled it (the caller decides what that means);
        empty when it committed."""
        names = list(items)
        request = [items[name] for name in names]
        for attempt in range(self.max_attempts):
            try:
                self.client.transact_write_items(TransactItems=request)
                return set()
            except ClientError as e:
                if e.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                # One reason per item, in the order of the request (none for some other failures).
                codes = [r.get("Code", "None") for r in e.response.get("CancellationReasons", [])]
                reasons = dict(zip(names, codes, strict=False))
                failed = {name for name, code in reasons.items() if code == CCF}
                if failed:
                    return failed
                if reasons and not RETRYABLE.intersection(reasons.values()):
                    raise
            # Conflicts on the collection item (its counters) are expected when many writers
            # hit one collection.
            backoff(attempt)
        raise StorageBusy(f"transaction still conflicting after {self.max_attempts} attempts")

    def query(self, table: str, collection_id: str, sk: str, after: str | None, **kw: Any) -> Iterator[dict[str, Any]]:
        """Yield items of one collection in sort-key order, strictly after `after`."""
        cond = "collection_id = :c"
        values: dict[str, Any] = {":c": {"S": collection_id}}
        if after is not None:
            cond += f" AND {sk} > :a"
            values[":a"] = {"S": after}
        args = dict(
            TableName=table,
            KeyConditionExpression=cond,
            ExpressionAttributeValues=values,
            ConsistentRead=True,
            **kw,
        )
        while True:  # pages: ends with the collection's items
            resp = self.client.query(**args)
            yield from resp.get("Items", [])
            if "LastEvaluatedKey" not in resp:
                return
            args["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def batch_get(self, table: str, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(0, len(keys), BATCH_GET_MAX):
            request = {table: {"Keys": keys[i : i + BATCH_GET_MAX], "ConsistentRead": True}}
            for resp in self._until_processed("batch_get_item", "UnprocessedKeys", request, table):
                out.extend(resp.get("Responses", {}).get(table, []))
        return out

    def batch_delete(self, table: str, keys: list[dict[str, Any]]) -> None:
        for i in range(0, len(keys), BATCH_WRITE_MAX):
            request = {table: [{"DeleteRequest": {"Key": k}} for k in keys[i : i + BATCH_WRITE_MAX]]}
            for _ in self._until_processed("batch_write_item", "UnprocessedItems", request, table):
                pass

    def _until_processed(
        self, method: str, leftover: str, request: dict[str, Any], table: str
    ) -> Iterator[dict[str, Any]]:
        """Responses of a batch call, sent again with what it left unprocessed (the table is
        throttling us) after a backoff, until nothing is left; StorageBusy after max_attempts."""
        for attempt in range(self.max_attempts):
            resp = getattr(self.client, method)(RequestItems=request)
            yield resp
            request = resp.get(leftover) or {}
            if not request:
                return
            backoff(attempt)
        operation = "".join(word.title() for word in method.split("_"))  # batch_get_item -> BatchGetItem
        raise StorageBusy(f"{operation} on {table} still unprocessed after {self.max_attempts} attempts")
