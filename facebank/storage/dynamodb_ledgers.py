"""The request ledger (ClientRequestToken claims, items of the users table) and the ingest ledger
(its own table) on DynamoDB; the key schema is in ``dynamodb.py``'s docstring."""

from __future__ import annotations

import time
from typing import Any

from facebank.storage.dynamodb_base import DEFAULT_MAX_ATTEMPTS, Dynamo, backoff
from facebank.storage.dynamodb_items import LEDGER_PREFIX, LEDGER_TTL_SECONDS, ddb_item, ddb_s, key_of_user
from facebank.storage.dynamodb_tables import TableNames
from facebank.storage.errors import StorageBusy
from facebank.storage.ports import IngestRecord


class DynamoRequestLedger:
    """The request ledger as items of the users table (see the module docstring): the scope is
    the item's collection_id, so a collection's purge removes its entries with its users."""

    def __init__(self, dynamodb: Any, tables: TableNames, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        self._db = Dynamo(dynamodb, max_attempts)
        self.table = tables.users

    def _entry(self, scope: str, key: str) -> dict[str, Any] | None:
        return self._db.get(self.table, key_of_user(scope, LEDGER_PREFIX + key))

    def claim(self, scope: str, key: str, digest: str, since: float) -> tuple[str, str | None]:
        now = time.time()
        item = ddb_item(
            collection_id=scope,
            user_id=LEDGER_PREFIX + key,
            digest=digest,
            created=now,
            expires=int(now + LEDGER_TTL_SECONDS),
        )
        for attempt in range(self._db.max_attempts):
            if (
                self._db.write(
                    "put_item",
                    TableName=self.table,
                    Item=item,
                    # An expired entry TTL has not removed yet counts as absent.
                    ConditionExpression="attribute_not_exists(user_id) OR created < :since",
                    ExpressionAttributeValues={":since": {"N": repr(since)}},
                )
                is not None
            ):
                return digest, None
            standing = self._entry(scope, key)
            if standing is not None:
                return standing["digest"]["S"], standing.get("response", {}).get("S")
            backoff(attempt)  # released between our write and our read: claim again
        raise StorageBusy(f"request {key!r} claimed and released again {self._db.max_attempts} times")

    def answer(self, scope: str, key: str, response: str) -> str:
        if (
            self._db.write(
                "update_item",
                TableName=self.table,
                Key=key_of_user(scope, LEDGER_PREFIX + key),
                UpdateExpression="SET #r = :r",
                ConditionExpression="attribute_exists(user_id) AND attribute_not_exists(#r)",
                ExpressionAttributeNames={"#r": "response"},
                ExpressionAttributeValues={":r": ddb_s(response)},
            )
            is None
        ):
            standing = self._entry(scope, key)
            if standing is not None and "response" in standing:
                return standing["response"]["S"]
        return response

    def release(self, scope: str, key: str) -> None:
        # Its condition fails for an answered entry, which stays.
        self._db.write(
            "delete_item",
            TableName=self.table,
            Key=key_of_user(scope, LEDGER_PREFIX + key),
            ConditionExpression="attribute_not_exists(#r)",
            ExpressionAttributeNames={"#r": "response"},
        )


class DynamoIngestLedger:
    """The ingest ledger: one item per S3 object in its own table (see the module docstring)."""

    def __init__(self, dynamodb: Any, table: str, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        self._db = Dynamo(dynamodb, max_attempts)
        self.table = table

    def get(self, object_key: str) -> IngestRecord | None:
        item = self._db.get(self.table, {"object_key": ddb_s(object_key)})
        if item is None:
            return None
        return IngestRecord(
            sequencer=item["sequencer"]["S"],
            face_ids=frozenset(item.get("face_ids", {}).get("SS", [])),
            collection_id=item.get("collection_id", {}).get("S", ""),
            external_image_id=item.get("external_image_id", {}).get("S", ""),
            updated=int(item.get("updated", {}).get("N", "0")),
            expires=int(item["expires"]["N"]) if "expires" in item else None,
        )

    def put_if(self, object_key: str, expected: str | None, record: IngestRecord) -> bool:
        item: dict[str, Any] = {
            "object_key": ddb_s(object_key),
            "sequencer": ddb_s(record.sequencer),
            "collection_id": ddb_s(record.collection_id),
            "external_image_id": ddb_s(record.external_image_id),
            "updated": {"N": str(record.updated)},
        }
        if record.face_ids:  # DynamoDB has no empty sets
            item["face_ids"] = {"SS": sorted(record.face_ids)}
        if record.expires is not None:
            item["expires"] = {"N": str(record.expires)}
        if expected is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(object_key)"}
        else:
            condition = {
                "ConditionExpression": "sequencer = :expected",
                "ExpressionAttributeValues": {":expected": ddb_s(expected)},
            }
        return self._db.write("put_item", TableName=self.table, Item=item, **condition) is not None
