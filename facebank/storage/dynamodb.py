"""AWS metadata store on DynamoDB (the tables and their key schema: ``dynamodb_tables``; the
ledgers: ``dynamodb_ledgers``).

Counts stay exact under concurrency because every write that changes one is a TransactWriteItems
that also carries the count update, with conditions making each face/user insert or delete happen
at most once. Reads are strongly consistent. Collections are listed by Scan (the table is small),
a user's faces come from its face_ids set (at most 100 per user in Rekognition).

Every retry here (contention, unprocessed batch items, a claim released under our feet) is bounded
and ends in StorageBusy, which callers report as throttling: the client retries later
(``dynamodb_base``: the calls, transactions and the retry loop every DynamoDB adapter shares).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from facebank.storage.dynamodb_base import (
    BATCH_GET_MAX,
    DEFAULT_MAX_ATTEMPTS,
    TX_MAX,
    Dynamo,
    backoff,
)
from facebank.storage.dynamodb_items import (
    NOT_A_USER,
    SHARDS_PREFIX,
    TOMBSTONE_PREFIX,
    collection_of,
    ddb_item,
    ddb_s,
    face_of,
    key_of_collection,
    key_of_face,
    key_of_user,
    plain_item,
    user_of,
)
from facebank.storage.dynamodb_tables import TableNames, create_ingest_table, create_tables
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

__all__ = ["DynamoMetadataStore", "TableNames", "create_ingest_table", "create_tables"]


def _page(recs: list, max_results: int, kind: str, key: Callable[[Any], str]) -> tuple[list, str | None]:
    if len(recs) > max_results:
        recs = recs[:max_results]
        return recs, encode_token(kind, key(recs[-1]))
    return recs, None


# Transaction item names (see Dynamo.transact).
_FACE, _USER, _PREVIOUS_USER, _COUNTER, _TOMBSTONE_ITEM = "face", "user", "previous user", "counter", "tombstone"


class DynamoMetadataStore:
    def __init__(self, dynamodb: Any, tables: TableNames, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        self._db = Dynamo(dynamodb, max_attempts)
        self.tables = tables

    # --- plumbing

    def _live_collection_item(self, collection_id: str) -> dict[str, Any] | None:
        item = self._db.get(self.tables.collections, key_of_collection(collection_id))
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
                "Key": key_of_collection(collection_id),
                "UpdateExpression": f"ADD {attr} :d",
                "ConditionExpression": cond,
                "ExpressionAttributeValues": {":d": {"N": str(delta)}},
            }
        }

    def _write_counted(
        self, collection_id: str, writes: dict[str, dict[str, Any]], attr: str, sign: int, *, live: bool
    ) -> list[str]:
        """Apply the named item writes, each conditional (so it happens at most once), in
        transactions of up to TX_MAX - 1 of them plus the update moving the collection's `attr`
        by sign x the number applied. A write whose condition fails is left out and its
        transaction run again without it. Returns the names applied, in order.

        Raises CollectionNotFound when the counter's condition fails.
        """
        applied: list[str] = []
        names = list(writes)
        for i in range(0, len(names), TX_MAX - 1):  # one slot for the counter
            pending = names[i : i + TX_MAX - 1]
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
        item = ddb_item(
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
            existing = self._db.get(self.tables.collections, key_of_collection(rec.collection_id))
            if existing is None:
                continue  # deleted meanwhile: try again
            if "deleting" not in existing:
                raise CollectionExists(rec.collection_id)
            self._purge(rec.collection_id)  # a half-finished delete: finish it, then create
        raise CollectionExists(rec.collection_id)

    def get_collection(self, collection_id: str) -> CollectionRecord | None:
        item = self._live_collection_item(collection_id)
        return collection_of(item) if item else None

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
            args["ExclusiveStartKey"] = key_of_collection(after)
        recs: list[CollectionRecord] = []
        while len(recs) <= max_results:
            resp = self._db.client.scan(**args)
            recs += [collection_of(i) for i in resp.get("Items", []) if "deleting" not in i]
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
            return collection_of(item).tags
        out = self._db.write(
            "update_item",
            TableName=self.tables.collections,
            Key=key_of_collection(collection_id),
            UpdateExpression=expression,
            ConditionExpression="attribute_exists(collection_id) AND attribute_not_exists(deleting)",
            ExpressionAttributeNames=names,
            **({"ExpressionAttributeValues": values} if values else {}),
            ReturnValues="ALL_NEW",
        )
        if out is None:
            raise CollectionNotFound(collection_id)
        return collection_of(out["Attributes"]).tags

    def delete_collection(self, collection_id: str) -> bool:
        # Tombstone first: the condition on every face/user insert (attribute_not_exists(deleting))
        # then stops new children, so the purge below cannot race with writers and leave strays
        # that a re-created collection of the same id would inherit.
        existed = (
            self._db.write(
                "update_item",
                TableName=self.tables.collections,
                Key=key_of_collection(collection_id),
                UpdateExpression="SET deleting = :t",
                ConditionExpression="attribute_exists(collection_id) AND attribute_not_exists(deleting)",
                ExpressionAttributeValues={":t": {"BOOL": True}},
            )
            is not None
        )
        if not existed and self._db.get(self.tables.collections, key_of_collection(collection_id)) is None:
            return False
        # (not existed: another delete got there first; help it finish)
        self._purge(collection_id)
        return existed

    def _purge(self, collection_id: str) -> None:
        for table, sk in ((self.tables.faces, "face_id"), (self.tables.users, "user_id")):
            keys = [
                {"collection_id": ddb_s(collection_id), sk: i[sk]}
                for i in self._db.query(table, collection_id, sk, None, ProjectionExpression=sk)
            ]
            self._db.batch_delete(table, keys)
        # Its condition fails only if another purge removed the item first: done either way.
        self._db.write(
            "delete_item",
            TableName=self.tables.collections,
            Key=key_of_collection(collection_id),
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
                    "Item": ddb_item(
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
        keys = [key_of_face(collection_id, fid) for fid in dict.fromkeys(face_ids)]
        return {f.face_id: f for f in map(face_of, self._db.batch_get(self.tables.faces, keys))}

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
                recs.append(face_of(item))
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
        for i in range(0, len(candidates), BATCH_GET_MAX):
            found = self.get_faces(collection_id, candidates[i : i + BATCH_GET_MAX])
            recs += [
                found[fid]
                for fid in candidates[i : i + BATCH_GET_MAX]
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
                    "Key": key_of_face(collection_id, fid),
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
                "Item": ddb_item(
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
        item = self._db.get(self.tables.users, key_of_user(collection_id, user_id))
        return user_of(item) if item else None

    def get_users(self, collection_id: str, user_ids: list[str]) -> dict[str, UserRecord]:
        keys = [key_of_user(collection_id, uid) for uid in dict.fromkeys(user_ids)]
        return {u.user_id: u for u in map(user_of, self._db.batch_get(self.tables.users, keys))}

    def deleted_user_token(self, collection_id: str, user_id: str) -> str | None:
        item = self._db.get(self.tables.users, key_of_user(collection_id, TOMBSTONE_PREFIX + user_id))
        return plain_item(item).get("client_request_token") if item else None

    def delete_user(self, collection_id: str, user_id: str, client_request_token: str | None = None) -> bool:
        key = key_of_user(collection_id, user_id)
        for attempt in range(self._db.max_attempts):
            item = self._db.get(self.tables.users, key)
            if item is None:
                return False
            # Disassociate faces first (at most 100, too many for one transaction with the rest),
            # then delete the user only if its membership did not change meanwhile (ver).
            for fid in plain_item(item).get("face_ids", ()):
                # Its condition fails if the face moved on meanwhile: then it is not ours to detach.
                self._db.write(
                    "update_item",
                    TableName=self.tables.faces,
                    Key=key_of_face(collection_id, fid),
                    UpdateExpression="REMOVE user_id",
                    ConditionExpression="user_id = :u",
                    ExpressionAttributeValues={":u": ddb_s(user_id)},
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
                    "Item": ddb_item(
                        collection_id=collection_id,
                        user_id=TOMBSTONE_PREFIX + user_id,
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
            backoff(attempt)
        raise StorageBusy(f"user {user_id!r} kept changing while it was deleted")

    def list_users(
        self, collection_id: str, max_results: int, next_token: str | None = None
    ) -> tuple[list[UserRecord], str | None]:
        check_max_results(max_results)
        after = decode_token(f"users/{collection_id}", next_token)
        self._require_collection(collection_id)
        recs: list[UserRecord] = []
        for item in self._db.query(self.tables.users, collection_id, "user_id", after, Limit=max_results + 1):
            if item["user_id"]["S"].startswith(NOT_A_USER):
                break  # tombstones and the request ledger sort after every user
            recs.append(user_of(item))
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
        face_key = key_of_face(collection_id, face_id)
        if user_id == expected_user_id:  # nothing moves; just check the premise
            item = self._db.get(self.tables.faces, face_key)
            if item is None:
                raise FaceNotFound(face_id)
            current = plain_item(item).get("user_id")
            if current != expected_user_id:
                raise FaceUserConflict(face_id, current)
            return
        if expected_user_id is None:
            face_cond, values = "attribute_exists(face_id) AND attribute_not_exists(user_id)", {}
        else:
            face_cond, values = "user_id = :e", {":e": ddb_s(expected_user_id)}
        face_update: dict[str, Any] = {
            "TableName": self.tables.faces,
            "Key": face_key,
            "ConditionExpression": face_cond,
        }
        if user_id is None:
            face_update["UpdateExpression"] = "REMOVE user_id"
        else:
            face_update["UpdateExpression"] = "SET user_id = :u"
            values[":u"] = ddb_s(user_id)
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
            item = self._db.get(self.tables.faces, key_of_face(collection_id, face_id))
            if item is None:
                raise FaceNotFound(face_id)
            raise FaceUserConflict(face_id, plain_item(item).get("user_id"))
        if user_id is not None and _USER in failed:
            if self._db.get(self.tables.users, key_of_user(collection_id, user_id)) is None:
                raise UserNotFound(user_id)
            raise UserFaceLimit(user_id, max_faces or 0)
        return not failed

    def _membership(
        self, collection_id: str, user_id: str, face_id: str, op: str, max_faces: int | None = None
    ) -> dict[str, Any]:
        """Add/remove one face in a user's face_ids set, bumping ver (see delete_user and
        set_user_vector) and marking the user UPDATING; an ADD may be capped at max_faces."""
        change = "ADD face_ids :f, ver :one" if op == "ADD" else "DELETE face_ids :f ADD ver :one"
        values = {":f": {"SS": [face_id]}, ":one": {"N": "1"}, ":updating": ddb_s("UPDATING")}
        cond = "attribute_exists(user_id)"
        if op == "ADD" and max_faces is not None:
            cond += " AND (attribute_not_exists(face_ids) OR size(face_ids) < :max)"
            values[":max"] = {"N": str(max_faces)}
        return {
            "Update": {
                "TableName": self.tables.users,
                "Key": key_of_user(collection_id, user_id),
                "UpdateExpression": f"SET #status = :updating {change}",
                "ConditionExpression": cond,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": values,
            }
        }

    def set_user_vector(self, collection_id: str, user_id: str, vector_id: str | None, version: int) -> bool:
        key = key_of_user(collection_id, user_id)
        item = self._db.get(self.tables.users, key)
        if item is None:
            raise UserNotFound(user_id)
        if int(item.get("ver", {"N": "0"})["N"]) != version:
            return False
        # The condition on ver pins the membership read above, so the status follows from it.
        status = "ACTIVE" if item.get("face_ids") else "CREATED"
        values = {":v": {"N": str(version)}, ":s": ddb_s(status)}
        if vector_id is None:
            expr = "SET #status = :s REMOVE vector_id"
        else:
            expr = "SET #status = :s, vector_id = :id"
            values[":id"] = ddb_s(vector_id)
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
        item = self._db.get(self.tables.users, key_of_user(collection_id, SHARDS_PREFIX + kind))
        if item is None:
            return None, 0
        return item["body"]["S"], int(item["ver"]["N"])

    def put_shard_map(self, collection_id: str, kind: str, body: str, version: int) -> bool:
        if version == 0:
            condition, values = "attribute_not_exists(user_id)", {}
        else:
            condition, values = "ver = :v", {":v": {"N": str(version)}}
        item = key_of_user(collection_id, SHARDS_PREFIX + kind) | {"body": ddb_s(body), "ver": {"N": str(version + 1)}}
        kw: dict[str, Any] = {"ExpressionAttributeValues": values} if values else {}
        written = self._db.write(
            "put_item", TableName=self.tables.users, Item=item, ConditionExpression=condition, **kw
        )
        return written is not None
