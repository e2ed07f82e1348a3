"""DynamoDB items of the metadata tables (the key schema is in ``dynamodb.py``'s docstring):
keys, records to and from items (numbers are Decimals; None means "attribute absent"), and the
prefixes of the users table's non-user items."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from facebank.storage.ports import CollectionRecord, FaceRecord, UserRecord

NOT_A_USER = "~"  # prefix of the users table's other items, sorting after every UserId
TOMBSTONE_PREFIX = "~deleted~"  # user_id prefix of deleted-user tombstones
LEDGER_PREFIX = "~request~"  # user_id prefix of request-ledger entries
SHARDS_PREFIX = "~shards~"  # user_id prefix of shard maps (facebank/search/shards.py)
LEDGER_TTL_SECONDS = 24 * 3600

_ser = TypeSerializer()
_de = TypeDeserializer()


def to_ddb(v: Any) -> Any:
    if isinstance(v, float):
        return Decimal(repr(v))
    if isinstance(v, dict):
        return {k: to_ddb(x) for k, x in v.items()}
    return v


def ddb_item(**attrs: Any) -> dict[str, Any]:
    return {k: _ser.serialize(to_ddb(v)) for k, v in attrs.items() if v is not None}


def plain_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in item.items()}


def ddb_s(v: str) -> dict[str, str]:
    return {"S": v}


def key_of_collection(collection_id: str) -> dict[str, Any]:
    return {"collection_id": ddb_s(collection_id)}


def key_of_face(collection_id: str, face_id: str) -> dict[str, Any]:
    return {"collection_id": ddb_s(collection_id), "face_id": ddb_s(face_id)}


def key_of_user(collection_id: str, user_id: str) -> dict[str, Any]:
    return {"collection_id": ddb_s(collection_id), "user_id": ddb_s(user_id)}


def collection_of(item: dict[str, Any]) -> CollectionRecord:
    d = plain_item(item)
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


def face_of(item: dict[str, Any]) -> FaceRecord:
    d = plain_item(item)
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


def user_of(item: dict[str, Any]) -> UserRecord:
    d = plain_item(item)
    return UserRecord(
        user_id=d["user_id"],
        status=d["status"],
        face_ids=sorted(d.get("face_ids", ())),
        client_request_token=d.get("client_request_token"),
        created=float(d["created"]),
        version=int(d.get("ver", 0)),
        vector_id=d.get("vector_id"),
    )
