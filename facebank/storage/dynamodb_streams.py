"""AWS store of stream processors (``StreamProcessorStore``, see ports.py) on one DynamoDB table.

Key schema (create_streams_table() builds it for tests; the CDK stack, infra/stack.py, declares
the same), on-demand, no secondary index:

  <prefix>streams   HASH name (S)
      status (S); session, ver (N); body (S: JSON of the rest of the record,
      facebank.storage.streams); checkpoint (S: JSON, absent until the current session puts one).
      One more item, name "#count", holds the number of processors (processors, N). "#" is not a
      character of a stream processor name ([a-zA-Z0-9_.-]+), so it never collides.

Create is one TransactWriteItems: the processor's put (``attribute_not_exists(name)``) with the
counter's conditional ADD (``processors < max``), so the limit holds under concurrent creates;
delete is the conditional delete (status in ``expect``) with the counter's ADD -1. A transition
reads the item, checks ``expect``/``session`` and writes the next record conditioned on the version
it read (``ver``), re-reading on a lost race: of two racing transitions from one status one writes,
the other re-reads, finds the new status and writes nothing. ``put_checkpoint`` is one update
conditioned on the session: a runtime whose session was replaced (a new Start) can no longer write.

Listing scans the table (ConsistentRead) and pages by name: a deployment holds at most
``max_stream_processors`` items, a scan page or a few.
"""

from __future__ import annotations

import json
from typing import Any

from facebank.storage import streams
from facebank.storage.dynamodb_base import (
    DEFAULT_MAX_ATTEMPTS,
    Dynamo,
    client_of,
    counter_free,
    counter_take,
    create_table_specs,
)
from facebank.storage.errors import StorageBusy, StreamProcessorExists, StreamProcessorLimit
from facebank.storage.pagination import check_max_results, decode_token, encode_token
from facebank.storage.ports import StreamProcessorRecord

COUNTER = "#count"
_PUT, _COUNT, _DELETE = "processor", "counter", "delete"  # transaction item names (Dynamo.transact)


def create_streams_table(dynamodb: Any, name: str, *, wait: bool = True) -> None:
    """Create the stream processors table (see the module docstring) unless it exists."""
    create_table_specs(client_of(dynamodb), {name: [("name", "HASH")]}, wait)


def _key(name: str) -> dict[str, Any]:
    return {"name": {"S": name}}


def _n(value: int) -> dict[str, str]:
    return {"N": str(int(value))}


def _record(item: dict[str, Any]) -> StreamProcessorRecord:
    return streams.record(item["name"]["S"], item["status"]["S"], int(item["session"]["N"]), item["body"]["S"])


class DynamoStreamProcessorStore:
    def __init__(self, dynamodb: Any, table: str, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        self._db = Dynamo(dynamodb, max_attempts)
        self.table = table

    def create(self, rec: StreamProcessorRecord, max_processors: int) -> None:
        streams.check_status(rec.status)
        if rec.name == COUNTER:
            raise ValueError(f"{COUNTER!r} is the counter's key, not a stream processor name")
        item = {
            "name": {"S": rec.name},
            "status": {"S": rec.status},
            "session": _n(rec.session),
            "ver": _n(0),
            "body": {"S": streams.body(rec)},
        }
        put = {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(#n)"}}
        put["Put"]["ExpressionAttributeNames"] = {"#n": "name"}
        count = counter_take(self.table, _key(COUNTER), "processors", max_processors)
        failed = self._db.transact({_PUT: put, _COUNT: count})
        if _PUT in failed:  # first: a taken name is the answer even when the limit is reached too
            raise StreamProcessorExists(f"stream processor {rec.name!r} already exists")
        if _COUNT in failed:
            raise StreamProcessorLimit(f"{max_processors} stream processors exist already")

    def _item(self, name: str) -> dict[str, Any] | None:
        if name == COUNTER:
            return None
        return self._db.get(self.table, _key(name))

    def get(self, name: str) -> StreamProcessorRecord | None:
        item = self._item(name)
        return _record(item) if item else None

    def list(self, limit: int, token: str | None = None) -> tuple[list[StreamProcessorRecord], str | None]:
        check_max_results(limit)
        after = decode_token(streams.LISTING, token) or ""
        args: dict[str, Any] = {
            "TableName": self.table,
            "ConsistentRead": True,
            "ProjectionExpression": "#n, #s, #session, body",
            "ExpressionAttributeNames": {"#n": "name", "#s": "status", "#session": "session"},
        }
        items: list[dict[str, Any]] = []
        while True:
            response = self._db.client.scan(**args)
            items += [i for i in response.get("Items", []) if i["name"]["S"] != COUNTER and i["name"]["S"] > after]
            if "LastEvaluatedKey" not in response:
                break
            args["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        items.sort(key=lambda i: i["name"]["S"])
        records = [_record(i) for i in items[:limit]]
        more = len(items) > limit
        return records, encode_token(streams.LISTING, records[-1].name) if more else None

    def transition(
        self,
        name: str,
        expect: tuple[str, ...],
        status: str,
        message: str | None = None,
        *,
        session: int | None = None,
        new_session: bool = False,
        changes: dict | None = None,
    ) -> StreamProcessorRecord | None:
        for _ in range(self._db.max_attempts):
            item = self._item(name)
            if item is None:
                return None
            rec = _record(item)
            if not streams.allowed(rec, expect, session):
                return None
            new = streams.next_record(rec, status, message, new_session, changes)
            expression = "SET #s = :s, #session = :session, body = :body, ver = :next"
            if new_session:
                expression += " REMOVE checkpoint"
            written = self._db.write(
                "update_item",
                TableName=self.table,
                Key=_key(name),
                UpdateExpression=expression,
                ConditionExpression="ver = :ver",
                ExpressionAttributeNames={"#s": "status", "#session": "session"},
                ExpressionAttributeValues={
                    ":s": {"S": new.status},
                    ":session": _n(new.session),
                    ":body": {"S": streams.body(new)},
                    ":ver": item["ver"],
                    ":next": _n(int(item["ver"]["N"]) + 1),
                },
            )
            if written is not None:
                return new
            # Another writer moved the record since it was read: decide again on what it wrote.
        raise StorageBusy(f"stream processor {name} still changing after {self._db.max_attempts} attempts")

    def delete(self, name: str, expect: tuple[str, ...]) -> bool:
        if name == COUNTER or not expect:
            return False
        values = {f":e{i}": {"S": s} for i, s in enumerate(expect)}
        delete = {
            "Delete": {
                "TableName": self.table,
                "Key": _key(name),
                "ConditionExpression": f"#s IN ({', '.join(values)})",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": values,
            }
        }
        free = counter_free(self.table, _key(COUNTER), "processors")
        return not self._db.transact({_DELETE: delete, _COUNT: free})

    def put_checkpoint(self, name: str, session: int, data: dict) -> bool:
        if name == COUNTER:
            return False
        written = self._db.write(
            "update_item",
            TableName=self.table,
            Key=_key(name),
            UpdateExpression="SET checkpoint = :c",
            ConditionExpression="#session = :session",
            ExpressionAttributeNames={"#session": "session"},
            ExpressionAttributeValues={
                ":c": {"S": json.dumps(data, separators=(",", ":"))},
                ":session": _n(session),
            },
        )
        return written is not None

    def get_checkpoint(self, name: str) -> dict | None:
        item = self._item(name)
        return json.loads(item["checkpoint"]["S"]) if item and "checkpoint" in item else None
