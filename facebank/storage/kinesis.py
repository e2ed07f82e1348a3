"""A stream processor's output: records written to its Kinesis data stream with PutRecords.

Batches hold at most 500 records and 5 MB (PutRecords' limits; a record's data and partition key
at most 1 MB). A partial failure (FailedRecordCount > 0, e.g. a shard's throughput exceeded) is
retried for the failed entries only, with exponential backoff, a bounded number of times; then
``KinesisWriteError``. Whole-call throttling is retried by botocore's own retry policy. Retried
entries may land after later ones of the same batch (as with any PutRecords retry); consumers
order by the records' ProducerTimestamp + FrameOffsetInSeconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024  # data + partition key


class KinesisWriteError(Exception):
    """Records could not be written; the message is user-facing (StatusMessage)."""


class KinesisSink:
    def __init__(
        self,
        client: Any,
        stream_arn: str,
        partition_key: str,
        *,
        attempts: int = 6,
        backoff_s: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.client, self.stream_arn, self.partition_key = client, stream_arn, partition_key
        self.attempts, self.backoff_s, self.sleep = attempts, backoff_s, sleep

    def put(self, records: list[dict]) -> None:
        """Write every record, in batches; raises KinesisWriteError when some cannot be written."""
        if not records:
            return
        entries = []
        key_bytes = len(self.partition_key.encode())
        for record in records:
            data = json.dumps(record, separators=(",", ":")).encode()
            if len(data) + key_bytes > MAX_RECORD_BYTES:
                raise KinesisWriteError(
                    f"A record of {len(data)} bytes exceeds Kinesis's 1 MB record limit ({self.stream_arn})"
                )
            entries.append({"Data": data, "PartitionKey": self.partition_key})
        for batch in self._batches(entries):
            self._put_batch(batch)

    def _batches(self, entries: list[dict]) -> Iterator[list[dict]]:
        batch: list[dict] = []
        size = 0
        for entry in entries:
            entry_size = len(entry["Data"]) + len(entry["PartitionKey"].encode())
            if batch and (len(batch) == MAX_BATCH_RECORDS or size + entry_size > MAX_BATCH_BYTES):
                yield batch
                batch, size = [], 0
            batch.append(entry)
            size += entry_size
        if batch:
            yield batch

    def _put_batch(self, batch: list[dict]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        pending = batch
        for attempt in range(self.attempts):
            try:
                response = self.client.put_records(StreamARN=self.stream_arn, Records=pending)
            except ClientError as exc:
                error = exc.response.get("Error", {})
                reason = f"{error.get('Code')}: {error.get('Message')}"
                raise KinesisWriteError(f"The output stream {self.stream_arn} cannot be written: {reason}") from None
            except BotoCoreError as exc:
                raise KinesisWriteError(f"The output stream {self.stream_arn} cannot be written: {exc}") from None
            if not response.get("FailedRecordCount"):
                return
            failed = [(e, r) for e, r in zip(pending, response["Records"], strict=True) if r.get("ErrorCode")]
            pending = [e for e, _ in failed]
            last = failed[0][1]
            if attempt + 1 < self.attempts:
                self.sleep(min(self.backoff_s * 2**attempt, 2.0))
        raise KinesisWriteError(
            f"{len(pending)} record(s) could not be written to {self.stream_arn} after {self.attempts} attempts: "
            f"{last.get('ErrorCode')}: {last.get('ErrorMessage')}"
        )
