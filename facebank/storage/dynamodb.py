"""AWS metadata store on DynamoDB.

Key schema (create_tables() builds it for tests and local tooling; the CDK stack declares the same).
All tables on-demand (PAY_PER_REQUEST), no secondary indexes:

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
      client_request_token and deleted (N); the request ledger (answers of requests made with a
      ClientRequestToken) under user_id "~request~<operation>:<token>" with digest, response (S),
      created and expires (N, the table's TTL attribute). "~" sorts after every character a
      UserId may contain, so these sit after all users of the collection and list_users stops
      before them; the collection's purge removes them with its users.

Counts stay exact under concurrency because every write that changes one is a TransactWriteItems
that also carries the count update, with conditions making each face/user insert or delete happen
at most once. Reads are strongly consistent. Collections are listed by Scan (the table is small),
a user's faces come from its face_ids set (at most 100 per user in Rekognition).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

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
from facebank.storage.ports import CollectionRecord, FaceRecord, UserRecord

_TX_MAX = 100  # TransactWriteItems limit
_BATCH_GET_MAX = 100
_BATCH_WRITE_MAX = 25
_RETRYABLE = {"TransactionConflict", "ProvisionedThroughputExceeded", "ThrottlingError"}
_CCF = "ConditionalCheckFailed"
_NOT_A_USER = "~"  # prefix of the users table's other items, sorting after every UserId
_TOMBSTONE = "~deleted~"
_LEDGER = "~request~"
LEDGER_TTL_SECONDS = 24 * 3600  # user_id prefix of deleted-user tombstones (see the module docstring)

_ser = TypeSerializer()
_de = TypeDeserializer()


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


def create_tables(dynamodb: Any, names: TableNames, *, wait: bool = True) -> None:
    """Create the three tables (see the module docstring); existing ones are left alone."""
    client = _client(dynamodb)
    specs = {
        names.collections: [("collection_id", "HASH")],
        names.faces: [("collection_id", "HASH"), ("face_id", "RANGE")],
        names.users: [("collection_id", "HASH"), ("user_id", "RANGE")],
    }
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
            client.get_waiter("table_exists").wait(
                TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )


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


def _page(recs: list, max_results: int, kind: str, key) -> tuple[list, str | None]:
    if len(recs) > max_results:
        recs = recs[:max_results]
        return recs, encode_token(kind, key(recs[-1]))
    return recs, None


class DynamoMetadataStore:
    def __init__(self, dynamodb: Any, tables: TableNames, *, max_attempts: int = 10):
        self._c = _client(dynamodb)
        self.tables = tables
        self._max_attempts = max_attempts

    # --- plumbing

    def _transact(self, items: list[dict[str, Any]]) -> list[str] | None:
        """Run one transaction, retrying contention. None on success, else the per-item
        cancellation codes when a condition failed (the caller decides what that means)."""
        for attempt in range(self._max_attempts):
            try:
                self._c.transact_write_items(TransactItems=items)
                return None
            except ClientError as e:
                if e.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                codes = [r.get("Code", "None") for r in e.response.get("CancellationReasons", [])]
                if _CCF in codes:
                    return codes
                if codes and not _RETRYABLE.intersection(codes):
                    raise
            # Conflicts on the collection item (its counters) are expected when many writers
            # hit one collection.
            _backoff(attempt)
        raise StorageBusy(f"transaction still conflicting after {self._max_attempts} attempts")

    def _write1(self, method: str, **kw: Any) -> dict[str, Any]:
        """A single-item write, retried when it collides with an in-flight transaction
        (TransactionConflictException, which botocore does not retry)."""
        for attempt in range(self._max_attempts):
            try:
                return getattr(self._c, method)(**kw)
            except ClientError as e:
                if e.response["Error"]["Code"] != "TransactionConflictException":
                    raise
            _backoff(attempt)
        raise StorageBusy(f"{method} still conflicting after {self._max_attempts} attempts")

    def _get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        return self._c.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")

    def _collection_key(self, collection_id: str) -> dict[str, Any]:
        return {"collection_id": _s(collection_id)}

    def _live_collection_item(self, collection_id: str) -> dict[str, Any] | None:
        item = self._get(self.tables.collections, self._collection_key(collection_id))
        return None if item is None or "deleting" in item else item

    def _require_collection(self, collection_id: str) -> None:
        if self._live_collection_item(collection_id) is None:
            raise CollectionNotFound(collection_id)

    def _count_update(self, collection_id: str, attr: str, delta: int, live: bool) -> dict:
        """The collection-counter half of a transaction; `live` also requires it not be deleting."""
        cond = "attribute_exists(collection_id)"
        if live:
            cond += " AND attribute_not_exists(deleting)"
        return {
            "Update": {
                "TableName": self.tables.collections,
                "Key": self._collection_key(collection_id),
                "UpdateExpression": f"ADD {attr} :d",
                "ConditionExpression": cond,
                "ExpressionAttributeValues": {":d": {"N": str(delta)}},
            }
        }

    def _query(self, table: str, collection_id: str, sk: str, after: str | None, **kw: Any):
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
        while True:
            resp = self._c.query(**args)
            yield from resp.get("Items", [])
            if "LastEvaluatedKey" not in resp:
                return
            args["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _batch_get(self, table: str, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(0, len(keys), _BATCH_GET_MAX):
            request = {table: {"Keys": keys[i : i + _BATCH_GET_MAX], "ConsistentRead": True}}
            attempt = 0
            while request:
                resp = self._c.batch_get_item(RequestItems=request)
                out.extend(resp.get("Responses", {}).get(table, []))
                request = resp.get("UnprocessedKeys") or {}
                if request:
                    attempt += 1
                    _backoff(attempt)
        return out

    def _batch_delete(self, table: str, keys: list[dict[str, Any]]) -> None:
        for i in range(0, len(keys), _BATCH_WRITE_MAX):
            chunk = keys[i : i + _BATCH_WRITE_MAX]
            request = {table: [{"DeleteRequest": {"Key": k}} for k in chunk]}
            attempt = 0
            while request:
                resp = self._c.batch_write_item(RequestItems=request)
                request = resp.get("UnprocessedItems") or {}
                if request:
                    attempt += 1
                    _backoff(attempt)

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
            try:
                self._write1(
                    "put_item",
                    TableName=self.tables.collections,
                    Item=item,
                    ConditionExpression="attribute_not_exists(collection_id)",
                )
                return
            except ClientError as e:
                if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
            existing = self._get(self.tables.collections, self._collection_key(rec.collection_id))
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
            args["ExclusiveStartKey"] = self._collection_key(after)
        recs: list[CollectionRecord] = []
        while len(recs) <= max_results:
            resp = self._c.scan(**args)
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
        expression = " ".join(
            part for part in ("SET " + ", ".join(sets) if sets else "", "REMOVE " + ", ".join(removes) if removes else "")
            if part
        )
        key = self._collection_key(collection_id)
        if not expression:
            item = self._live_collection_item(collection_id)
            if item is None:
                raise CollectionNotFound(collection_id)
            return _collection(item).tags
        try:
            out = self._write1(
                "update_item",
                TableName=self.tables.collections,
                Key=key,
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(collection_id) AND attribute_not_exists(deleting)",
                ExpressionAttributeNames=names,
                **({"ExpressionAttributeValues": values} if values else {}),
                ReturnValues="ALL_NEW",
            )
        except ClientError as e:
            if e.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise CollectionNotFound(collection_id) from None
            raise
        return _collection(out["Attributes"]).tags

    def delete_collection(self, collection_id: str) -> bool:
        # Tombstone first: the condition on every face/user insert (attribute_not_exists(deleting))
        # then stops new children, so the purge below cannot race with writers and leave strays
        # that a re-created collection of the same id would inherit.
        try:
            self._write1(
                "update_item",
                TableName=self.tables.collections,
                Key=self._collection_key(collection_id),
                UpdateExpression="SET deleting = :t",
                ConditionExpression=(
                    "attribute_exists(collection_id) AND attribute_not_exists(deleting)"
                ),
                ExpressionAttributeValues={":t": {"BOOL": True}},
            )
            existed = True
        except ClientError as e:
            if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            if self._get(self.tables.collections, self._collection_key(collection_id)) is None:
                return False
            existed = False  # another delete got there first; help it finish
        self._purge(collection_id)
        return existed

    def _purge(self, collection_id: str) -> None:
        for table, sk in ((self.tables.faces, "face_id"), (self.tables.users, "user_id")):
            keys = [
                {"collection_id": _s(collection_id), sk: i[sk]}
                for i in self._query(table, collection_id, sk, None, ProjectionExpression=sk)
            ]
            self._batch_delete(table, keys)
        try:
            self._write1(
                "delete_item",
                TableName=self.tables.collections,
                Key=self._collection_key(collection_id),
                ConditionExpression="attribute_exists(deleting)",
            )
        except ClientError as e:
            if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    # --- faces

    def _face_key(self, collection_id: str, face_id: str) -> dict[str, Any]:
        return {"collection_id": _s(collection_id), "face_id": _s(face_id)}

    def put_faces(self, collection_id: str, faces: list[FaceRecord]) -> list[FaceRecord]:
        for f in faces:
            if f.user_id is not None:
                raise ValueError("new faces carry no user; associate them with set_face_user")
        first: dict[str, FaceRecord] = {}
        for f in faces:
            first.setdefault(f.face_id, f)  # a repeated id within the call: the first one wins
        unique = list(first.values())
        if not unique:
            self._require_collection(collection_id)
            return []
        stored: list[FaceRecord] = []
        for i in range(0, len(unique), _TX_MAX - 1):  # one slot for the counter
            pending = unique[i : i + _TX_MAX - 1]
            while pending:
                puts = [
                    {
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
                            "ConditionExpression": "attribute_not_exists(face_id)",
                        }
                    }
                    for f in pending
                ]
                count = self._count_update(collection_id, "face_count", len(pending), live=True)
                codes = self._transact(puts + [count])
                if codes is None:
                    stored += pending
                    break
                if codes[-1] == _CCF:
                    raise CollectionNotFound(collection_id)
                # Drop the faces that already exist (idempotent retry) and go again.
                pending = [f for f, c in zip(pending, codes) if c != _CCF]
        return stored

    def get_faces(self, collection_id: str, face_ids: list[str]) -> dict[str, FaceRecord]:
        keys = [self._face_key(collection_id, fid) for fid in dict.fromkeys(face_ids)]
        return {f.face_id: f for f in map(_face, self._batch_get(self.tables.faces, keys))}

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
        if user_id is None and face_ids is None:
            items = self._query(
                self.tables.faces, collection_id, "face_id", after, Limit=max_results + 1
            )
            recs: list[FaceRecord] = []
            for item in items:
                recs.append(_face(item))
                if len(recs) > max_results:
                    break
            return _page(recs, max_results, f"faces/{collection_id}", lambda f: f.face_id)
        # Filtered: the candidate ids are known (the user's set and/or the given list), so fetch
        # them directly rather than filtering a scan of the whole collection.
        wanted = set(face_ids) if face_ids is not None else None
        if user_id is not None:
            user = self.get_user(collection_id, user_id)
            members = set(user.face_ids) if user else set()
            wanted = members if wanted is None else wanted & members
        candidates = sorted(i for i in wanted if after is None or i > after)
        recs = []
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
        deleted: list[str] = []
        unique = list(dict.fromkeys(face_ids))
        for i in range(0, len(unique), _TX_MAX - 1):
            pending = unique[i : i + _TX_MAX - 1]
            while pending:
                deletes = [
                    {
                        "Delete": {
                            "TableName": self.tables.faces,
                            "Key": self._face_key(collection_id, fid),
                            # Faces of a user stay: Rekognition refuses to delete them.
                            "ConditionExpression": (
                                "attribute_exists(face_id) AND attribute_not_exists(user_id)"
                            ),
                        }
                    }
                    for fid in pending
                ]
                count = self._count_update(collection_id, "face_count", -len(pending), live=False)
                codes = self._transact(deletes + [count])
                if codes is None:
                    deleted += pending
                    break
                if codes[-1] == _CCF:
                    raise CollectionNotFound(collection_id)
                pending = [fid for fid, c in zip(pending, codes) if c != _CCF]
        return deleted

    # --- users

    def _user_key(self, collection_id: str, user_id: str) -> dict[str, Any]:
        return {"collection_id": _s(collection_id), "user_id": _s(user_id)}

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
        codes = self._transact([put, self._count_update(collection_id, "user_count", 1, live=True)])
        if codes is not None:
            if codes[1] == _CCF:
                raise CollectionNotFound(collection_id)
            raise UserExists(rec.user_id)

    def get_user(self, collection_id: str, user_id: str) -> UserRecord | None:
        item = self._get(self.tables.users, self._user_key(collection_id, user_id))
        return _user(item) if item else None

    def get_users(self, collection_id: str, user_ids: list[str]) -> dict[str, UserRecord]:
        keys = [self._user_key(collection_id, uid) for uid in dict.fromkeys(user_ids)]
        return {u.user_id: u for u in map(_user, self._batch_get(self.tables.users, keys))}

    def _ledger_entry(self, collection_id: str, key: str) -> dict[str, Any] | None:
        return self._get(self.tables.users, self._user_key(collection_id, _LEDGER + key))

    def claim_request(self, collection_id: str, key: str, digest: str, since: float) -> tuple[str, str | None]:
        now = time.time()
        item = _item(
            collection_id=collection_id, user_id=_LEDGER + key, digest=digest, created=now,
            expires=int(now + LEDGER_TTL_SECONDS),
        )  # fmt: skip
        while True:
            try:
                self._write1(
                    "put_item",
                    TableName=self.tables.users,
                    Item=item,
                    # An expired entry TTL has not removed yet counts as absent.
                    ConditionExpression="attribute_not_exists(user_id) OR created < :since",
                    ExpressionAttributeValues={":since": {"N": repr(since)}},
                )
                return digest, None
            except ClientError as e:
                if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
            standing = self._ledger_entry(collection_id, key)
            if standing is not None:  # else released meanwhile: claim again
                return standing["digest"]["S"], standing.get("response", {}).get("S")

    def answer_request(self, collection_id: str, key: str, response: str) -> str:
        try:
            self._write1(
                "update_item",
                TableName=self.tables.users,
                Key=self._user_key(collection_id, _LEDGER + key),
                UpdateExpression="SET #r = :r",
                ConditionExpression="attribute_exists(user_id) AND attribute_not_exists(#r)",
                ExpressionAttributeNames={"#r": "response"},
                ExpressionAttributeValues={":r": _s(response)},
            )
        except ClientError as e:
            if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            standing = self._ledger_entry(collection_id, key)
            if standing is not None and "response" in standing:
                return standing["response"]["S"]
        return response

    def release_request(self, collection_id: str, key: str) -> None:
        try:
            self._write1(
                "delete_item",
                TableName=self.tables.users,
                Key=self._user_key(collection_id, _LEDGER + key),
                ConditionExpression="attribute_not_exists(#r)",
                ExpressionAttributeNames={"#r": "response"},
            )
        except ClientError as e:
            if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def deleted_user_token(self, collection_id: str, user_id: str) -> str | None:
        item = self._get(self.tables.users, self._user_key(collection_id, _TOMBSTONE + user_id))
        return _plain(item).get("client_request_token") if item else None

    def delete_user(
        self, collection_id: str, user_id: str, client_request_token: str | None = None
    ) -> bool:
        key = self._user_key(collection_id, user_id)
        while True:
            item = self._get(self.tables.users, key)
            if item is None:
                return False
            # Disassociate faces first (at most 100, too many for one transaction with the rest),
            # then delete the user only if its membership did not change meanwhile (ver).
            for fid in _plain(item).get("face_ids", ()):
                try:
                    self._write1(
                        "update_item",
                        TableName=self.tables.faces,
                        Key=self._face_key(collection_id, fid),
                        UpdateExpression="REMOVE user_id",
                        ConditionExpression="user_id = :u",
                        ExpressionAttributeValues={":u": _s(user_id)},
                    )
                except ClientError as e:
                    if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                        raise
            delete = {
                "Delete": {
                    "TableName": self.tables.users,
                    "Key": key,
                    "ConditionExpression": "ver = :v",
                    "ExpressionAttributeValues": {":v": item["ver"]},
                }
            }
            count = self._count_update(collection_id, "user_count", -1, live=False)
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
            codes = self._transact([delete, count, tombstone])
            if codes is None:
                return True
            if codes[1] == _CCF:
                return False  # the collection is gone (its purge removes the user)
            # The user changed or vanished meanwhile: look again.

    def list_users(
        self, collection_id: str, max_results: int, next_token: str | None = None
    ) -> tuple[list[UserRecord], str | None]:
        check_max_results(max_results)
        after = decode_token(f"users/{collection_id}", next_token)
        self._require_collection(collection_id)
        recs: list[UserRecord] = []
        for item in self._query(
            self.tables.users, collection_id, "user_id", after, Limit=max_results + 1
        ):
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
        face_key = self._face_key(collection_id, face_id)
        if user_id == expected_user_id:  # nothing moves; just check the premise
            item = self._get(self.tables.faces, face_key)
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
        include_previous = expected_user_id is not None
        while True:
            items = [{"Update": face_update}]
            if user_id is not None:
                items.append(
                    self._membership(collection_id, user_id, face_id, "ADD", max_faces)
                )
            if include_previous:
                items.append(self._membership(collection_id, expected_user_id, face_id, "DELETE"))
            codes = self._transact(items)
            if codes is None:
                return
            if codes[0] == _CCF:
                item = self._get(self.tables.faces, face_key)
                if item is None:
                    raise FaceNotFound(face_id)
                raise FaceUserConflict(face_id, _plain(item).get("user_id"))
            if user_id is not None and codes[1] == _CCF:
                user = self._get(self.tables.users, self._user_key(collection_id, user_id))
                if user is None:
                    raise UserNotFound(user_id)
                raise UserFaceLimit(user_id, max_faces or 0)
            # Only the previous user's item is missing (the invariants rule that out, but a
            # stray must not wedge the face): the face's own condition held, so move it anyway.
            assert include_previous
            include_previous = False

    def _membership(
        self, collection_id: str, user_id: str, face_id: str, op: str, max_faces: int | None = None
    ) -> dict:
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
                "Key": self._user_key(collection_id, user_id),
                "UpdateExpression": f"SET #status = :updating {change}",
                "ConditionExpression": cond,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": values,
            }
        }

    def set_user_vector(
        self, collection_id: str, user_id: str, vector_id: str | None, version: int
    ) -> bool:
        key = self._user_key(collection_id, user_id)
        item = self._get(self.tables.users, key)
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
        try:
            self._write1(
                "update_item",
                TableName=self.tables.users,
                Key=key,
                UpdateExpression=expr,
                ConditionExpression="attribute_exists(user_id) AND ver = :v",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
            )
        except ClientError as e:
            if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            if self._get(self.tables.users, key) is None:
                raise UserNotFound(user_id) from None
            return False
        return True
