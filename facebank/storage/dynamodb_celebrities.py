"""The celebrity gallery on AWS: the stack's ``<prefix>celebrities`` table, HASH ``celebrity_id`` (S).
The port and its contract: ``ports.CelebrityGallery``; transactions and retries: ``dynamodb_base``."""

from __future__ import annotations

from typing import Any

from facebank.storage.dynamodb_base import Dynamo, client_of, create_table_specs
from facebank.storage.errors import CelebrityIdConflict, StorageBusy
from facebank.storage.ports import CelebrityRecord

_GENERATION_KEY = "~generation"  # "~" is outside [0-9A-Za-z]: no celebrity Id can take this key
_MAX_ATTEMPTS = 8
_ITEM, _BUMP = "item", "generation"  # transaction item names (Dynamo.transact)


def create_celebrity_table(dynamodb: Any, name: str, *, wait: bool = True) -> None:
    """The gallery's table as the stack declares it (infra/celebrities.py), for tests and tooling."""
    create_table_specs(client_of(dynamodb), {name: [("celebrity_id", "HASH")]}, wait)


def _ddb_record(item: dict[str, Any]) -> CelebrityRecord:
    return CelebrityRecord(
        celebrity_id=item["celebrity_id"]["S"],
        name=item["name"]["S"],
        urls=tuple(v["S"] for v in item.get("urls", {}).get("L", [])),
        known_gender=item["known_gender"]["S"] if "known_gender" in item else None,
        pack=item["pack"]["S"],
        face_model_version=item["face_model_version"]["S"],
        vector=bytes(item["vector"]["B"]),
        photos=int(item["photos"]["N"]),
        updated=float(item["updated"]["N"]),
    )


class DynamoCelebrityGallery:
    """The gallery in one DynamoDB table: an item per celebrity plus the ``~generation`` counter
    item, written in one TransactWriteItems with each put or delete. Reads are strongly consistent."""

    def __init__(self, dynamodb: Any, table: str):
        self._db = Dynamo(dynamodb, _MAX_ATTEMPTS)
        self._client = self._db.client
        self.table = table
        self._bump = {
            "Update": {
                "TableName": table,
                "Key": {"celebrity_id": {"S": _GENERATION_KEY}},
                "UpdateExpression": "ADD generation :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        }

    def _transact(self, change: dict) -> bool:
        """The change and the generation bump as one transaction (contention retried by the
        base); False when the change's condition failed."""
        try:
            return _ITEM not in self._db.transact({_ITEM: change, _BUMP: self._bump})
        except StorageBusy:
            raise StorageBusy("the celebrity gallery stayed contended; retry") from None

    def put_celebrity(self, rec: CelebrityRecord) -> None:
        item = {
            "celebrity_id": {"S": rec.celebrity_id},
            "name": {"S": rec.name},
            "urls": {"L": [{"S": u} for u in rec.urls]},
            "pack": {"S": rec.pack},
            "face_model_version": {"S": rec.face_model_version},
            "vector": {"B": rec.vector},
            "photos": {"N": str(rec.photos)},
            "updated": {"N": repr(rec.updated)},
        }
        if rec.known_gender is not None:
            item["known_gender"] = {"S": rec.known_gender}
        put = {
            "Put": {
                "TableName": self.table,
                "Item": item,
                # A replace of the same person, or a new Id: never another name's record.
                "ConditionExpression": "attribute_not_exists(celebrity_id) OR #n = :n",
                "ExpressionAttributeNames": {"#n": "name"},
                "ExpressionAttributeValues": {":n": {"S": rec.name}},
            }
        }

        if not self._transact(put):
            existing = self.get_celebrity(rec.celebrity_id)
            raise CelebrityIdConflict(rec.celebrity_id, rec.name, existing.name if existing else "?")

    def get_celebrity(self, celebrity_id: str) -> CelebrityRecord | None:
        if celebrity_id == _GENERATION_KEY:
            return None
        item = self._db.get(self.table, {"celebrity_id": {"S": celebrity_id}})
        return _ddb_record(item) if item else None

    def delete_celebrity(self, celebrity_id: str) -> bool:
        if celebrity_id == _GENERATION_KEY:
            return False
        delete = {
            "Delete": {
                "TableName": self.table,
                "Key": {"celebrity_id": {"S": celebrity_id}},
                "ConditionExpression": "attribute_exists(celebrity_id)",
            }
        }
        return self._transact(delete)

    def list_celebrities(self) -> list[CelebrityRecord]:
        records, start = [], None
        while True:
            args: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
            if start:
                args["ExclusiveStartKey"] = start
            page = self._client.scan(**args)
            records += [_ddb_record(i) for i in page.get("Items", []) if i["celebrity_id"]["S"] != _GENERATION_KEY]
            start = page.get("LastEvaluatedKey")
            if not start:
                return sorted(records, key=lambda r: r.celebrity_id)

    def generation(self) -> int:
        item = self._db.get(self.table, {"celebrity_id": {"S": _GENERATION_KEY}})
        return int(item["generation"]["N"]) if item else 0

    def close(self) -> None:
        pass


def open_aws_gallery(table: str, *, dynamodb: Any = None, region_name: str | None = None) -> DynamoCelebrityGallery:
    if dynamodb is None:
        import boto3
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "max_attempts": 8})
        dynamodb = boto3.client("dynamodb", region_name=region_name, config=config)
    return DynamoCelebrityGallery(dynamodb, table)
