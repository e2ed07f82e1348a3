"""Fixtures running every storage test against both adapter pairs.

"embedded": SqliteMetadataStore + FileVectorStore + SqliteRequestLedger in tmp_path.
"aws": DynamoMetadataStore + S3VectorStore + DynamoRequestLedger on moto's mock_aws.

moto's in-process backends are not thread-safe (a TransactWriteItems deep-copies tables that
other threads are writing). Real DynamoDB and S3 apply each request atomically on the server, so
we serialise moto's request dispatch to get the same guarantee. Clients still run concurrently:
the interleaving of requests, conditional failures and retries are all real.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from storage_helpers import collection_record
from support import serialised_moto

from facebank.storage import Storage, open_embedded
from facebank.storage.ports import MetadataStore, RequestLedger, VectorStore


@dataclass
class Stores:
    kind: str
    meta: MetadataStore
    vecs: VectorStore
    ledger: RequestLedger
    jobs: Any = None  # JobStore, or a stand-in where the adapter set has none
    results: Any = None  # JobResults, likewise
    streams: Any = None  # StreamProcessorStore, likewise

    @classmethod
    def of(cls, kind: str, storage: Storage) -> Stores:
        return cls(
            kind, storage.metadata, storage.vectors, storage.ledger, storage.jobs, storage.results, storage.streams
        )


@dataclass
class _Aws:
    dynamodb: object
    s3: object
    bucket: str


@pytest.fixture(scope="module")
def aws() -> Iterator[_Aws]:
    """One moto mock per test module (starting moto and making boto3 clients costs a few
    hundred ms); each test gets its own tables and key prefix, so nothing leaks between tests
    and moto's per-transaction table copies stay small. Not session-scoped: mock_aws intercepts
    every botocore call in the process, which must not reach other folders' tests (they talk
    to real local endpoints)."""
    import boto3
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        serialised_moto(mp)
        _backup_tables_once_per_transaction(mp)
        with mock_aws():
            session = boto3.session.Session(region_name="us-east-1")
            s3 = session.client("s3")
            s3.create_bucket(Bucket="facebank-test")
            yield _Aws(session.client("dynamodb"), s3, "facebank-test")


def _backup_tables_once_per_transaction(mp: pytest.MonkeyPatch) -> None:
    """Test speed only: moto's TransactWriteItems deep-copies a table once per *item* as its
    rollback backup (O(items x table size)); one copy per table is the same backup. Runs under
    the dispatch lock, so swapping the module's `copy` for the call is safe. If moto changes,
    this simply stops applying."""
    import copy

    from moto.dynamodb import models

    if getattr(models, "copy", None) is not copy or not hasattr(models, "Table"):
        return

    class CopyTablesOnce:
        def __init__(self) -> None:
            self.tables: dict[int, object] = {}

        def deepcopy(self, obj, *args):
            if isinstance(obj, models.Table):
                if id(obj) not in self.tables:
                    self.tables[id(obj)] = copy.deepcopy(obj)
                return self.tables[id(obj)]
            return copy.deepcopy(obj, *args)

        def __getattr__(self, name):
            return getattr(copy, name)

    transact = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        models.copy = CopyTablesOnce()
        try:
            return transact(self, transact_items)
        finally:
            models.copy = copy

    mp.setattr(models.DynamoDBBackend, "transact_write_items", transact_write_items)


_test_ids = itertools.count()


@pytest.fixture
def aws_stores(aws) -> Stores:
    """DynamoDB + S3 stores on fresh tables and a fresh key prefix."""
    from facebank.storage import open_aws
    from facebank.storage.dynamodb import TableNames, create_tables
    from facebank.storage.dynamodb_jobs import create_jobs_table
    from facebank.storage.dynamodb_streams import create_streams_table

    prefix = f"t{next(_test_ids)}-"
    create_tables(aws.dynamodb, TableNames.with_prefix(prefix))
    create_jobs_table(aws.dynamodb, f"{prefix}jobs")
    create_streams_table(aws.dynamodb, f"{prefix}streams")
    storage = open_aws(
        bucket=aws.bucket,
        table_prefix=prefix,
        s3_prefix=prefix,
        results_prefix=f"{prefix}jobs/",
        dynamodb=aws.dynamodb,
        s3=aws.s3,
    )
    return Stores.of("aws", storage)


@pytest.fixture(params=["embedded", "aws"])
def stores(request, tmp_path) -> Iterator[Stores]:
    if request.param == "aws":
        yield request.getfixturevalue("aws_stores")
        return
    stores = Stores.of("embedded", open_embedded(tmp_path / "data"))
    yield stores
    stores.meta.close()


@pytest.fixture
def cid(stores: Stores) -> str:
    stores.meta.create_collection(collection_record("c1"))
    return "c1"
