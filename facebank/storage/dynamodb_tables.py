"""The DynamoDB tables of the AWS adapters: names and key schema.

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
      Shard maps (facebank/search/shards.py) too: user_id "~shards~faces" / "~shards~users"
      with body (S, the JSON document) and ver (N).
  <ingest table>        HASH object_key (S)   (DynamoIngestLedger)
      sequencer, collection_id, external_image_id (S); face_ids (SS, absent when empty);
      updated (N); expires (N, the table's TTL attribute, removal tombstones only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from facebank.storage.dynamodb_base import client_of, create_table_specs


@dataclass(frozen=True)
class TableNames:
    collections: str
    faces: str
    users: str

    @classmethod
    def with_prefix(cls, prefix: str = "facebank-") -> TableNames:
        return cls(f"{prefix}collections", f"{prefix}faces", f"{prefix}users")


def create_tables(dynamodb: Any, names: TableNames, *, wait: bool = True) -> None:
    """Create the three metadata tables (see the module docstring); existing ones are left alone."""
    create_table_specs(
        client_of(dynamodb),
        {
            names.collections: [("collection_id", "HASH")],
            names.faces: [("collection_id", "HASH"), ("face_id", "RANGE")],
            names.users: [("collection_id", "HASH"), ("user_id", "RANGE")],
        },
        wait,
    )


def create_ingest_table(dynamodb: Any, name: str, *, wait: bool = True) -> None:
    """Create the ingest ledger's table (see the module docstring) unless it exists."""
    create_table_specs(client_of(dynamodb), {name: [("object_key", "HASH")]}, wait)
