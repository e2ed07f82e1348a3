"""The ingest ledger (ports.IngestLedger): AWS only, one DynamoDB item per S3 object, replaced
only by a writer that read the sequencer still stored (compare-and-set)."""

from __future__ import annotations

import itertools

import pytest
from storage_helpers import run_threads

from facebank.storage import IngestLedger, IngestRecord, open_aws
from facebank.storage.dynamodb import create_ingest_table
from facebank.storage.dynamodb_ledgers import DynamoIngestLedger

_tables = itertools.count()


@pytest.fixture
def ledger(aws) -> DynamoIngestLedger:
    name = f"ingest-{next(_tables)}"
    create_ingest_table(aws.dynamodb, name)
    return DynamoIngestLedger(aws.dynamodb, name)


def indexed(sequencer: str, *face_ids: str) -> IngestRecord:
    return IngestRecord(sequencer, frozenset(face_ids), "c1", "photo", updated=1_700_000_000)


def test_open_aws_gives_an_ingest_ledger_only_when_a_table_is_named(aws, ledger):
    with_table = open_aws(bucket=aws.bucket, ingest_table=ledger.table, dynamodb=aws.dynamodb, s3=aws.s3)
    assert isinstance(with_table.ingest, IngestLedger)
    with_table.ingest.put_if("b/k", None, indexed("01", "f1"))
    assert ledger.get("b/k") == indexed("01", "f1")  # the same table
    assert open_aws(bucket=aws.bucket, dynamodb=aws.dynamodb, s3=aws.s3).ingest is None


def test_records_round_trip(ledger):
    assert ledger.get("b/k") is None
    assert ledger.put_if("b/k", None, indexed("01", "f1", "f2")) is True
    assert ledger.get("b/k") == indexed("01", "f1", "f2")
    removed = IngestRecord("02", frozenset(), "c1", "photo", updated=1_700_000_100, expires=1_702_592_100)
    assert ledger.put_if("b/k", "01", removed) is True
    assert ledger.get("b/k") == removed  # no faces (DynamoDB has no empty set), a TTL


def test_only_a_writer_that_read_the_stored_sequencer_replaces_it(ledger):
    assert ledger.put_if("b/k", None, indexed("01", "f1")) is True
    assert ledger.put_if("b/k", None, indexed("02", "f2")) is False  # not new any more
    assert ledger.put_if("b/k", "00", indexed("02", "f2")) is False  # read an older one
    assert ledger.get("b/k") == indexed("01", "f1")
    assert ledger.put_if("b/k", "01", indexed("02", "f2")) is True
    assert ledger.get("b/k") == indexed("02", "f2")
    assert ledger.get("b/other") is None  # keys are separate


def test_concurrent_writers_of_one_expected_sequencer_one_wins(ledger):
    ledger.put_if("b/k", None, indexed("01"))
    won: list[int] = []

    def write(i: int) -> None:
        if ledger.put_if("b/k", "01", indexed(f"{i + 2:02d}", f"f{i}")):
            won.append(i)

    run_threads(6, write)
    assert len(won) == 1
    assert ledger.get("b/k") == indexed(f"{won[0] + 2:02d}", f"f{won[0]}")
