"""AWS metadata store, request ledger and ingest ledger on DynamoDB.

Key schema (create_tables() and create_ingest_table() build it for tests and local tooling; the
CDK stack declares the same). All tables on-demand (PAY_PER_REQUEST), no secondary indexes:

  <prefix>collections   HASH collection_id (S)
      arn, face_model_version, pack (S); created (N); tags (M); face_count, user_count (N);
      deleting (BOOL) present only while delete_collection purges the children.
  <prefix>faces         HASH collection_id (S), RANGE face_id (S)
      image_id, index_faces_model_version, segment (S); external_image_id (S, optional);
      bounding_box (M of N); confidence, created (N); user_id (S, absent when unassociated).
  <prefix>users         HASH collection_id (S), RANGE user_id (S)
      status (S); client_request_token (S, optional); created (N);
      face_ids (SS, absent when empty); ver (N, bumped on every membership change);
      vector_id (S, absent when the user has no vector).
      Tombstones of deleted users share the table under user_id "~deleted~<user_id>" with
      client_request_token and deleted (N); the request ledger (DynamoRequestLedger, scope =
      collection_id) under user_id "~request~<key>" with digest, response (S), created and
      expires (N, the table's TTL attribute). "~" sorts after every character a UserId may
      contain, so these sit after all users of the collection and list_users stops before them;
      the collection's purge removes them with its users.
      Shard maps (facebank/storage/shards.py) too: user_id "~shards~faces" / "~shards~users"
      with body (S, the JSON document) and ver (N).
  <ingest table>        HASH object_key (S)   (DynamoIngestLedger)
      sequencer, collection_id, external_image_id (S); face_ids (SS, absent when empty);
      updated (N); expires (N, the table's TTL attribute, removal tombstones only).

Counts stay exact under concurrency because every write that changes one is a TransactWriteItems
that also carries the count update, with conditions making each face/user insert or delete happen
at most once. Reads are strongly consistent. Collections are listed by Scan (the table is small),
a user's faces come from its face_ids set (at most 100 per user in Rekognition).

Every retry here (contention, unprocessed batch items, a claim released under our feet) is bounded
and ends in StorageBusy, which callers report as throttling: the client retries later.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from facebank.storage.errors import (
    CollectionExists,
    CollectionNotFound,
    FaceNotFound,
    FaceUserConflict,
    StorageBusy,
    UserExists,
    UserFaceLimit,
    UserNotFound,
)
from facebank.storage.pagination import check_max_results, decode_token, encode_token
from facebank.storage.ports import CollectionRecord, FaceRecord, IngestRecord, UserRecord

_TX_MAX = 100  # TransactWriteItems limit
_BATCH_GET_MAX = 100
_BATCH_WRITE_MAX = 25
_RETRYABLE = {"TransactionConflict", "ProvisionedThroughputExceeded", "ThrottlingError"}
_CCF = "ConditionalCheckFailed"  # a transaction's cancellation reason
_CCF_ERROR = "ConditionalCheckFailedException"  # the same, as a single-item write's error code
_NOT_A_USER = "~"  # prefix of the users table's other items, sorting after every UserId
_TOMBSTONE = "~deleted~"  # user_id prefix of deleted-user tombstones
_LEDGER = "~request~"  # user_id prefix of request-ledger entries
_SHARDS = "~shards~"  # user_id prefix of shard maps (facebank/storage/shards.py)
LEDGER_TTL_SECONDS = 24 * 3600
DEFAULT_MAX_ATTEMPTS = 10

_ser = TypeSerializer()
_de = TypeDeserializer()

Name = TypeVar("Name", bound=Hashable)  # what a transaction's items are known by


@dataclass(frozen=True)
class TableNames:
    collections: str
    faces: str
    users: str

    @classmethod
    def with_prefix(cls, prefix: str = "facebank-") -> TableNames:
        return cls(f"{prefix}collections", f"{prefix}faces", f"{prefix}users")


def _client(dynamodb: Any) -> Any:
    """Accept a boto3 DynamoDB client or resource (TransactWriteItems needs the client)."""
    return dynamodb.meta.client if hasattr(dynamodb, "Table") else dynamodb


def _create(client: Any, specs: Mapping[str, list[tuple[str, str]]], wait: bool) -> None:
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


def create_tables(dynamodb: Any, names: TableNames, *, wait: bool = True) -> None:
    """Create the three metadata tables (see the module docstring); existing ones are left alone."""
    _create(
        _client(dynamodb),
        {
            names.collections: [("collection_id", "HASH")],
            names.faces: [("collection_id", "HASH"), ("face_id", "RANGE")],
            names.users: [("collection_id", "HASH"), ("user_id", "RANGE")],
        },
        wait,
    )


def create_ingest_table(dynamodb: Any, name: str, *, wait: bool = True) -> None:
    """Create the ingest ledger's table (see the module docstring) unless it exists."""
    _create(_client(dynamodb), {name: [("object_key", "HASH")]}, wait)


# --- (de)serialisation: DynamoDB numbers are Decimals and None means "attribute absent"


def _to_ddb(v: Any) -> Any:
    if isinstance(v, float):
        return Decimal(repr(v))
    if isinstance(v, dict):
        return {k: _to_ddb(x) for k, x in v.items()}
    return v


def _item(**attrs: Any) -> dict[str, Any]:
    return {k: _ser.serialize(_to_ddb(v)) for k, v in attrs.items() if v is not None}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in item.items()}


def _s(v: str) -> dict[str, str]:
    return {"S": v}


def _collection_key(collection_id: str) -> dict[str, Any]:
    return {"collection_id": _s(collection_id)}


def _face_key(collection_id: str, face_id: str) -> dict[str, Any]:
    return {"collection_id": _s(collection_id), "face_id": _s(face_id)}


def _user_key(collection_id: str, user_id: str) -> dict[str, Any]:
    return {"collection_id": _s(collection_id), "user_id": _s(user_id)}


def _collection(item: dict[str, Any]) -> CollectionRecord:
    d = _plain(item)
    return CollectionRecord(
        collection_id=d["collection_id"],
        arn=d["arn"],
        face_model_version=d["face_model_version"],
        pack=d["pack"],
        created=float(d["created"]),
        tags=dict(d.get("tags", {})),
        face_count=int(d.get("face_count", 0)),
        user_count=int(d.get("user_count", 0)),
    )


def _face(item: dict[str, Any]) -> FaceRecord:
    d = _plain(item)
    return FaceRecord(
        face_id=d["face_id"],
        image_id=d["image_id"],
        external_image_id=d.get("external_image_id"),
        bounding_box={k: float(v) for k, v in d["bounding_box"].items()},
        confidence=float(d["confidence"]),
        index_faces_model_version=d["index_faces_model_version"],
        user_id=d.get("user_id"),
        segment=d["segment"],
        created=float(d["created"]),
    )


def _user(item: dict[str, Any]) -> UserRecord:
    d = _plain(item)
    return UserRecord(
        user_id=d["user_id"],
        status=d["status"],
        face_ids=sorted(d.get("face_ids", ())),
        client_request_token=d.get("client_request_token"),
        created=float(d["created"]),
        version=int(d.get("ver", 0)),
        vector_id=d.get("vector_id"),
    )


def _backoff(attempt: int) -> None:
    """Full-jitter exponential backoff, capped at 1 s."""
    time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))


def _page(recs: list, max_results: int, kind: str, key: Callable[[Any], str]) -> tuple[list, str | None]:
    if len(recs) > max_results:
        recs = recs[:max_results]
        return recs, encode_token(kind, key(recs[-1]))
    return recs, None


class _Dynamo:
    """The calls every adapter here makes, with this module's rules: strongly consistent reads,
    a failed write condition returned rather than raised, contention retried a bounded number of
    times (then StorageBusy)."""

    def __init__(self, dynamodb: Any, max_attempts: int):
        self.client = _client(dynamodb)
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
                if code == _CCF_ERROR:
                    return None
                if code != "TransactionConflictException":
                    raise
            _backoff(attempt)
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
                failed = {name for name, code in reasons.items() if code == _CCF}
                if failed:
                    return failed
                if reasons and not _RETRYABLE.intersection(reasons.values()):
                    raise
            # Conflicts on the collection item (its counters) are expected when many writers
            # hit one collection.
            _backoff(attempt)
        raise StorageBusy(f"transaction still conflicting after {self.max_attempts} attempts")

    def query(self, table: str, collection_id: str, sk: str, after: str | None, **kw: Any) -> Iterator[dict[str, Any]]:
        """Yield items of one collection in sort-key order, strictly after `after`."""
        cond = "collection_id = :c"
        values: dict[str, Any] = {":c": _s(collection_id)}
        if after is not None:
            cond += f" AND {sk} > :a"
            values[":a"] = _s(after)
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
        for i in range(0, len(keys), _BATCH_GET_MAX):
            request = {table: {"Keys": keys[i : i + _BATCH_GET_MAX], "ConsistentRead": True}}
            for attempt in range(self.max_attempts):
                resp = self.client.batch_get_item(RequestItems=request)
                out.extend(resp.get("Responses", {}).get(table, []))
                request = resp.get("UnprocessedKeys") or {}
                if not request:
                    break
                _backoff(attempt)  # unprocessed keys: the table is throttling us
            else:
                raise StorageBusy(f"BatchGetItem on {table} still unprocessed after {self.max_attempts} attempts")
        return out

    def batch_delete(self, table: str, keys: list[dict[str, Any]]) -> None:
        for i in range(0, len(keys), _BATCH_WRITE_MAX):
            request = {table: [{"DeleteRequest": {"Key": k}} for k in keys[i : i + _BATCH_WRITE_MAX]]}
            for attempt in range(self.max_attempts):
                resp = self.client.batch_write_item(RequestItems=request)
                request = resp.get("UnprocessedItems") or {}
                if not request:
                    break
                _backoff(attempt)  # unprocessed items: the table is throttling us
            else:
                raise StorageBusy(f"BatchWriteItem on {table} still unprocessed after {self.max_attempts} attempts")


# Transaction item names (see _Dynamo.transact).
_FACE, _USER, _PREVIOUS_USER, _COUNTER, _TOMBSTONE_ITEM = "face", "user", "previous user", "counter", "tombstone"


class DynamoMetadataStore:
    def __init__(self, dynamodb: Any, tables: TableNames, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        self._db = _Dynamo(dynamodb, max_attempts)
        self.tables = tables

    # --- plumbing

    def _live_collection_item(self, collection_id: str) -> dict[str, Any] | None:
        item = self._db.get(self.tables.collections, _collection_key(collection_id))
        return None if item is None or "deleting" in item else item

    def _require_collection(self, collection_id: str) -> None:
        if self._live_collection_item(collection_id) is None:
            raise CollectionNotFound(collection_id)

    def _count_update(self, collection_id: str, attr: str, delta: int, live: bool) -> dict[str, Any]:
        """The collection-counter half of a transaction; `live` also requires it not be deleting."""
        cond = "attribute_exists(collection_id)"
        if live:
            cond += " AND attribute_not_exists(deleting)"
        return {
            "Update": {
                "TableName": self.tables.collections,
                "Key": _collection_key(collection_id),
                "UpdateExpression": f"ADD {attr} :d",
                "ConditionExpression": cond,
                "ExpressionAttributeValues": {":d": {"N": str(delta)}},
            }
        }

    def _write_counted(
        self, collection_id: str, writes: dict[str, dict[str, Any]], attr: str, sign: int, *, live: bool
    ) -> list[str]:
        """Apply the named item writes, each conditional (so it happens at most once), in
        transactions of up to _TX_MAX - 1 of them plus the update moving the collection's `attr`
        by sign x the number applied. A write whose condition fails is left out and its
        transaction run again without it. Returns the names applied, in order.

        Raises CollectionNotFound when the counter's condition fails.
        """
        applied: list[str] = []
        names = list(writes)
        for i in range(0, len(names), _TX_MAX - 1):  # one slot for the counter
            pending = names[i : i + _TX_MAX - 1]
            while pending:  # shrinks on every failure: ends
                # The counter is named None, which no write is.
                items: dict[str | None, dict[str, Any]] = {name: writes[name] for name in pending}
                items[None] = self._count_update(collection_id, attr, sign * len(pending), live)
                failed = self._db.transact(items)
                if not failed:
                    applied += pending
                    break
                if None in failed:
                    raise CollectionNotFound(collection_id)
                pending = [name for name in pending if name not in failed]
        return applied

    # --- collections

    def create_collection(self, rec: CollectionRecord) -> None:
        item = _item(
            collection_id=rec.collection_id,
            arn=rec.arn,
            face_model_version=rec.face_model_version,
            pack=rec.pack,
            created=rec.created,
            tags=dict(rec.tags),
            face_count=0,
            user_count=0,
        )
        for _ in range(3):
            if (
                self._db.write(
                    "put_item",
                    TableName=self.tables.collections,
                    Item=item,
                    ConditionExpression="attribute_not_exists(collection_id)",
                )
                is not None
            ):
                return
            existing = self._db.get(self.tables.collections, _collection_key(rec.collection_id))
            if existing is None:
                continue  # deleted meanwhile: try again
            if "deleting" not in existing:
                raise CollectionExists(rec.collection_id)
            self._purge(rec.collection_id)  # a half-finished delete: finish it, then create
        raise CollectionExists(rec.collection_id)

    def get_collection(self, collection_id: str) -> CollectionRecord | None:
        item = self._live_collection_item(collection_id)
        return _collection(item) if item else None

    def list_collections(
        self, max_results: int, next_token: str | None = None
    ) -> tuple[list[CollectionRecord], str | None]:
        # Scan order (by hash) is stable, and resuming after the last *returned* key is valid
        # even when we read past it or it was deleted since.
        check_max_results(max_results)
        after = decode_token("collections", next_token)
        args: dict[str, Any] = {
            "TableName": self.tables.collections,
            "ConsistentRead": True,
            "Limit": max_results + 1,
        }
        if after is not None:
            args["ExclusiveStartKey"] = _collection_key(after)
        recs: list[CollectionRecord] = []
        while len(recs) <= max_results:
            resp = self._db.client.scan(**args)
            recs += [_collection(i) for i in resp.get("Items", []) if "deleting" not in i]
            if "LastEvaluatedKey" not in resp:
                break
            args["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return _page(recs, max_results, "collections", lambda c: c.collection_id)

    def update_tags(self, collection_id: str, put: dict[str, str], remove: list[str]) -> dict[str, str]:
        # One UpdateItem on the tags map: concurrent tag changes to other keys never clobber
        # each other, and the condition keeps a deleted (or deleting) collection untouched.
        names = {"#t": "tags"}
        values: dict[str, Any] = {}
        sets, removes = [], []
        for i, (key, value) in enumerate(put.items()):
            names[f"#p{i}"] = key
            values[f":p{i}"] = {"S": value}
            sets.append(f"#t.#p{i} = :p{i}")
        # Each key once: DynamoDB refuses an update naming one document path twice.
        for i, key in enumerate(k for k in dict.fromkeys(remove) if k not in put):
            names[f"#r{i}"] = key
            removes.append(f"#t.#r{i}")
        clauses = [("SET ", sets), ("REMOVE ", removes)]
        expression = " ".join(verb + ", ".join(paths) for verb, paths in clauses if paths)
        if not expression:
            item = self._live_collection_item(collection_id)
            if item is None:
                raise CollectionNotFound(collection_id)
            return _collection(item).tags
        out = self._db.write(
            "update_item",
            TableName=self.tables.collections,
            Key=_collection_key(collection_id),
            UpdateExpression=expression,
            ConditionExpression="attribute_exists(collection_id) AND attribute_not_exists(deleting)",
            ExpressionAttributeNames=names,
            **({"ExpressionAttributeValues": values} if values else {}),
            ReturnValues="ALL_NEW",
        )
        if out is None:
            raise CollectionNotFound(collection_id)
        return _collection(out["Attributes"]).tags

    def delete_collection(self, collection_id: str) -> bool:
        # Tombstone first: the condition on every face/user insert (attribute_not_exists(deleting))
        # then stops new children, so the purge below cannot race with writers and leave strays
        # that a re-created collection of the same id would inherit.
        existed = (
            self._db.write(
                "update_item",
                TableName=self.tables.collections,
                Key=_collection_key(collection_id),
                UpdateExpression="SET deleting = :t",
                ConditionExpression="attribute_exists(collection_id) AND attribute_not_exists(deleting)",
                ExpressionAttributeValues={":t": {"BOOL": True}},
            )
            is not None
        )
        if not existed and self._db.get(self.tables.collections, _collection_key(collection_id)) is None:
            return False
        # (not existed: another delete got there first; help it finish)
        self._purge(collection_id)
        return existed

    def _purge(self, collection_id: str) -> None:
        for table, sk in ((self.tables.faces, "face_id"), (self.tables.users, "user_id")):
            keys = [
                {"collection_id": _s(collection_id), sk: i[sk]}
                for i in self._db.query(table, collection_id, sk, None, ProjectionExpression=sk)
            ]
            self._db.batch_delete(table, keys)
        # Its condition fails only if another purge removed the item first: done either way.
        self._db.write(
            "delete_item",
            TableName=self.tables.collections,
            Key=_collection_key(collection_id),
            ConditionExpression="attribute_exists(deleting)",
        )

    # --- faces

    def put_faces(self, collection_id: str, faces: list[FaceRecord]) -> list[FaceRecord]:
        for f in faces:
            if f.user_id is not None:
                raise ValueError("new faces carry no user; associate them with set_face_user")
        first: dict[str, FaceRecord] = {}
        for f in faces:
            first.setdefault(f.face_id, f)  # a repeated id within the call: the first one wins
        if not first:
            self._require_collection(collection_id)
            return []
        puts = {
            f.face_id: {
                "Put": {
                    "TableName": self.tables.faces,
                    "Item": _item(
                        collection_id=collection_id,
                        face_id=f.face_id,
                        image_id=f.image_id,
                        external_image_id=f.external_image_id,
                        bounding_box=dict(f.bounding_box),
                        confidence=f.confidence,
                        index_faces_model_version=f.index_faces_model_version,
                        segment=f.segment,
                        created=f.created,
                    ),
                    # A face already stored (a retried request) is left out, not counted twice.
                    "ConditionExpression": "attribute_not_exists(face_id)",
                }
            }
            for f in first.values()
        }
        stored = self._write_counted(collection_id, puts, "face_count", +1, live=True)
        return [first[face_id] for face_id in stored]

    def get_faces(self, collection_id: str, face_ids: list[str]) -> dict[str, FaceRecord]:
        keys = [_face_key(collection_id, fid) for fid in dict.fromkeys(face_ids)]
        return {f.face_id: f for f in map(_face, self._db.batch_get(self.tables.faces, keys))}

    def list_faces(
        self,
        collection_id: str,
        max_results: int,
        next_token: str | None = None,
        user_id: str | None = None,
        face_ids: list[str] | None = None,
    ) -> tuple[list[FaceRecord], str | None]:
        check_max_results(max_results)
        after = decode_token(f"faces/{collection_id}", next_token)
        self._require_collection(collection_id)
        recs: list[FaceRecord] = []
        if user_id is None and face_ids is None:
            for item in self._db.query(self.tables.faces, collection_id, "face_id", after, Limit=max_results + 1):
                recs.append(_face(item))
                if len(recs) > max_results:
                    break
            return _page(recs, max_results, f"faces/{collection_id}", lambda f: f.face_id)
        # Filtered: the candidate ids are known (the user's set and/or the given list), so fetch
        # them directly rather than filtering a scan of the whole collection.
        wanted: set[str] | None = set(face_ids) if face_ids is not None else None
        if user_id is not None:
            user = self.get_user(collection_id, user_id)
            members = set(user.face_ids) if user else set()
            wanted = members if wanted is None else wanted & members
        candidates = sorted(i for i in wanted or () if after is None or i > after)
        for i in range(0, len(candidates), _BATCH_GET_MAX):
            found = self.get_faces(collection_id, candidates[i : i + _BATCH_GET_MAX])
            recs += [
                found[fid]
                for fid in candidates[i : i + _BATCH_GET_MAX]
                if fid in found and (user_id is None or found[fid].user_id == user_id)
            ]
            if len(recs) > max_results:
                break
        return _page(recs, max_results, f"faces/{collection_id}", lambda f: f.face_id)

    def delete_faces(self, collection_id: str, face_ids: list[str]) -> list[str]:
        self._require_collection(collection_id)
        deletes = {
            fid: {
                "Delete": {
                    "TableName": self.tables.faces,
                    "Key": _face_key(collection_id, fid),
                    # Faces of a user stay: Rekognition refuses to delete them.
                    "ConditionExpression": "attribute_exists(face_id) AND attribute_not_exists(user_id)",
                }
            }
            for fid in dict.fromkeys(face_ids)
        }
        return self._write_counted(collection_id, deletes, "face_count", -1, live=False)

    # --- users

    def put_user(self, collection_id: str, rec: UserRecord) -> None:
        if rec.face_ids:
            raise ValueError("a new user has no faces; associate them with set_face_user")
        put = {
            "Put": {
                "TableName": self.tables.users,
                "Item": _item(
                    collection_id=collection_id,
                    user_id=rec.user_id,
                    status=rec.status,
                    client_request_token=rec.client_request_token,
                    created=rec.created,
                    ver=0,
                ),
                "ConditionExpression": "attribute_not_exists(user_id)",
            }
        }
        count = self._count_update(collection_id, "user_count", 1, live=True)
        failed = self._db.transact({_USER: put, _COUNTER: count})
        if _COUNTER in failed:
            raise CollectionNotFound(collection_id)
        if _USER in failed:
            raise UserExists(rec.user_id)

    def get_user(self, collection_id: str, user_id: str) -> UserRecord | None:
        item = self._db.get(self.tables.users, _user_key(collection_id, user_id))
        return _user(item) if item else None

    def get_users(self, collection_id: str, user_ids: list[str]) -> dict[str, UserRecord]:
        keys = [_user_key(collection_id, uid) for uid in dict.fromkeys(user_ids)]
        return {u.user_id: u for u in map(_user, self._db.batch_get(self.tables.users, keys))}

    def deleted_user_token(self, collection_id: str, user_id: str) -> str | None:
        item = self._db.get(self.tables.users, _user_key(collection_id, _TOMBSTONE + user_id))
        return _plain(item).get("client_request_token") if item else None

    def delete_user(self, collection_id: str, user_id: str, client_request_token: str | None = None) -> bool:
        key = _user_key(collection_id, user_id)
        for attempt in range(self._db.max_attempts):
            item = self._db.get(self.tables.users, key)
            if item is None:
                return False
            # Disassociate faces first (at most 100, too many for one transaction with the rest),
            # then delete the user only if its membership did not change meanwhile (ver).
            for fid in _plain(item).get("face_ids", ()):
                # Its condition fails if the face moved on meanwhile: then it is not ours to detach.
                self._db.write(
                    "update_item",
                    TableName=self.tables.faces,
                    Key=_face_key(collection_id, fid),
                    UpdateExpression="REMOVE user_id",
                    ConditionExpression="user_id = :u",
                    ExpressionAttributeValues={":u": _s(user_id)},
                )
            delete = {
                "Delete": {
                    "TableName": self.tables.users,
                    "Key": key,
                    "ConditionExpression": "ver = :v",
                    "ExpressionAttributeValues": {":v": item["ver"]},
                }
            }
            tombstone = {
                "Put": {
                    "TableName": self.tables.users,
                    "Item": _item(
                        collection_id=collection_id,
                        user_id=_TOMBSTONE + user_id,
                        client_request_token=client_request_token,
                        deleted=time.time(),
                    ),
                }
            }
            failed = self._db.transact(
                {
                    _USER: delete,
                    _COUNTER: self._count_update(collection_id, "user_count", -1, live=False),
                    _TOMBSTONE_ITEM: tombstone,
                }
            )
            if not failed:
                return True
            if _COUNTER in failed:
                return False  # the collection is gone (its purge removes the user)
            # The user changed or vanished meanwhile: look again.
            _backoff(attempt)
        raise StorageBusy(f"user {user_id!r} kept changing while it was deleted")

    def list_users(
        self, collection_id: str, max_results: int, next_token: str | None = None
    ) -> tuple[list[UserRecord], str | None]:
        check_max_results(max_results)
        after = decode_token(f"users/{collection_id}", next_token)
        self._require_collection(collection_id)
        recs: list[UserRecord] = []
        for item in self._db.query(self.tables.users, collection_id, "user_id", after, Limit=max_results + 1):
            if item["user_id"]["S"].startswith(_NOT_A_USER):
                break  # tombstones and the request ledger sort after every user
            recs.append(_user(item))
            if len(recs) > max_results:
                break
        return _page(recs, max_results, f"users/{collection_id}", lambda u: u.user_id)

    def set_face_user(
        self,
        collection_id: str,
        face_id: str,
        user_id: str | None,
        expected_user_id: str | None,
        max_faces: int | None = None,
    ) -> None:
        face_key = _face_key(collection_id, face_id)
        if user_id == expected_user_id:  # nothing moves; just check the premise
            item = self._db.get(self.tables.faces, face_key)
            if item is None:
                raise FaceNotFound(face_id)
            current = _plain(item).get("user_id")
            if current != expected_user_id:
                raise FaceUserConflict(face_id, current)
            return
        if expected_user_id is None:
            face_cond, values = "attribute_exists(face_id) AND attribute_not_exists(user_id)", {}
        else:
            face_cond, values = "user_id = :e", {":e": _s(expected_user_id)}
        face_update: dict[str, Any] = {
            "TableName": self.tables.faces,
            "Key": face_key,
            "ConditionExpression": face_cond,
        }
        if user_id is None:
            face_update["UpdateExpression"] = "REMOVE user_id"
        else:
            face_update["UpdateExpression"] = "SET user_id = :u"
            values[":u"] = _s(user_id)
        if values:
            face_update["ExpressionAttributeValues"] = values
        items: dict[str, dict[str, Any]] = {_FACE: {"Update": face_update}}
        if user_id is not None:
            items[_USER] = self._membership(collection_id, user_id, face_id, "ADD", max_faces)
        if expected_user_id is not None:
            items[_PREVIOUS_USER] = self._membership(collection_id, expected_user_id, face_id, "DELETE")
        if self._move_face(collection_id, face_id, user_id, max_faces, items):
            return
        # Only the previous user's item is missing (the invariants rule that out, but a stray
        # must not wedge the face): the face's own condition held, so move it without it. That
        # transaction has no previous user's item to fail: it commits or raises.
        del items[_PREVIOUS_USER]
        self._move_face(collection_id, face_id, user_id, max_faces, items)

    def _move_face(
        self,
        collection_id: str,
        face_id: str,
        user_id: str | None,
        max_faces: int | None,
        items: dict[str, dict[str, Any]],
    ) -> bool:
        """set_face_user's transaction: True if it committed, False if only the previous user's
        item failed; the face's or the new user's failing raises what it means."""
        failed = self._db.transact(items)
        if _FACE in failed:
            item = self._db.get(self.tables.faces, _face_key(collection_id, face_id))
            if item is None:
                raise FaceNotFound(face_id)
            raise FaceUserConflict(face_id, _plain(item).get("user_id"))
        if user_id is not None and _USER in failed:
            if self._db.get(self.tables.users, _user_key(collection_id, user_id)) is None:
                raise UserNotFound(user_id)
            raise UserFaceLimit(user_id, max_faces or 0)
        return not failed

    def _membership(
        self, collection_id: str, user_id: str, face_id: str, op: str, max_faces: int | None = None
    ) -> dict[str, Any]:
        """Add/remove one face in a user's face_ids set, bumping ver (see delete_user and
        set_user_vector) and marking the user UPDATING; an ADD may be capped at max_faces."""
        change = "ADD face_ids :f, ver :one" if op == "ADD" else "DELETE face_ids :f ADD ver :one"
        values = {":f": {"SS": [face_id]}, ":one": {"N": "1"}, ":updating": _s("UPDATING")}
        cond = "attribute_exists(user_id)"
        if op == "ADD" and max_faces is not None:
            cond += " AND (attribute_not_exists(face_ids) OR size(face_ids) < :max)"
            values[":max"] = {"N": str(max_faces)}
        return {
            "Update": {
                "TableName": self.tables.users,
                "Key": _user_key(collection_id, user_id),
                "UpdateExpression": f"SET #status = :updating {change}",
                "ConditionExpression": cond,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": values,
            }
        }

    def set_user_vector(self, collection_id: str, user_id: str, vector_id: str | None, version: int) -> bool:
        key = _user_key(collection_id, user_id)
        item = self._db.get(self.tables.users, key)
        if item is None:
            raise UserNotFound(user_id)
        if int(item.get("ver", {"N": "0"})["N"]) != version:
            return False
        # The condition on ver pins the membership read above, so the status follows from it.
        status = "ACTIVE" if item.get("face_ids") else "CREATED"
        values = {":v": {"N": str(version)}, ":s": _s(status)}
        if vector_id is None:
            expr = "SET #status = :s REMOVE vector_id"
        else:
            expr = "SET #status = :s, vector_id = :id"
            values[":id"] = _s(vector_id)
        committed = self._db.write(
            "update_item",
            TableName=self.tables.users,
            Key=key,
            UpdateExpression=expr,
            ConditionExpression="attribute_exists(user_id) AND ver = :v",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values,
        )
        if committed is None:
            if self._db.get(self.tables.users, key) is None:
                raise UserNotFound(user_id)
            return False
        return True

    # --- shard maps: users-table items "~shards~<kind>" (after every user; purged with them)

    def get_shard_map(self, collection_id: str, kind: str) -> tuple[str | None, int]:
        item = self._db.get(self.tables.users, _user_key(collection_id, _SHARDS + kind))
        if item is None:
            return None, 0
        return item["body"]["S"], int(item["ver"]["N"])

    def put_shard_map(self, collection_id: str, kind: str, body: str, version: int) -> bool:
        if version == 0:
            condition, values = "attribute_not_exists(user_id)", {}
        else:
            condition, values = "ver = :v", {":v": {"N": str(version)}}
        item = _user_key(collection_id, _SHARDS + kind) | {"body": _s(body), "ver": {"N": str(version + 1)}}
        kw: dict[str, Any] = {"ExpressionAttributeValues": values} if values else {}
        written = self._db.write(
            "put_item", TableName=self.tables.users, Item=item, ConditionExpression=condition, **kw
        )
        return written is not None


class DynamoRequestLedger:
    """The request ledger as items of the users table (see the module docstring): the scope is
    the item's collection_id, so a collection's purge removes its entries with its users."""

    def __init__(self, dynamodb: Any, tables: TableNames, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        self._db = _Dynamo(dynamodb, max_attempts)
        self.table = tables.users

    def _entry(self, scope: str, key: str) -> dict[str, Any] | None:
        return self._db.get(self.table, _user_key(scope, _LEDGER + key))

    def claim(self, scope: str, key: str, digest: str, since: float) -> tuple[str, str | None]:
        now = time.time()
        item = _item(
            collection_id=scope,
            user_id=_LEDGER + key,
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
            _backoff(attempt)  # released between our write and our read: claim again
        raise StorageBusy(f"request {key!r} claimed and released again {self._db.max_attempts} times")

    def answer(self, scope: str, key: str, response: str) -> str:
        if (
            self._db.write(
                "update_item",
                TableName=self.table,
                Key=_user_key(scope, _LEDGER + key),
                UpdateExpression="SET #r = :r",
                ConditionExpression="attribute_exists(user_id) AND attribute_not_exists(#r)",
                ExpressionAttributeNames={"#r": "response"},
                ExpressionAttributeValues={":r": _s(response)},
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
            Key=_user_key(scope, _LEDGER + key),
            ConditionExpression="attribute_not_exists(#r)",
            ExpressionAttributeNames={"#r": "response"},
        )


class DynamoIngestLedger:
    """The ingest ledger: one item per S3 object in its own table (see the module docstring)."""

    def __init__(self, dynamodb: Any, table: str, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        self._db = _Dynamo(dynamodb, max_attempts)
        self.table = table

    def get(self, object_key: str) -> IngestRecord | None:
        item = self._db.get(self.table, {"object_key": _s(object_key)})
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
            "object_key": _s(object_key),
            "sequencer": _s(record.sequencer),
            "collection_id": _s(record.collection_id),
            "external_image_id": _s(record.external_image_id),
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
                "ExpressionAttributeValues": {":expected": _s(expected)},
            }
        return self._db.write("put_item", TableName=self.table, Item=item, **condition) is not None
