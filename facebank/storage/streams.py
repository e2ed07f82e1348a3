"""What both stream processor adapters (sqlite_streams.py, dynamodb_streams.py) share: the
record as a JSON body, how a transition builds the next record, and the listing's tokens.

A record is stored as its status and session (the columns/attributes every condition reads) plus
a JSON body with every other field, so a field added to ``StreamProcessorRecord`` needs no schema
change on either adapter. The run's checkpoint sits beside the record (one row / one item), so
deleting the processor deletes it, and ``put_checkpoint``'s condition on the session is one write.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from facebank.storage.ports import STREAM_STATUSES, StreamProcessorRecord

LISTING = "streamprocessors"  # facebank.storage.pagination's listing name
_COLUMNS = ("name", "status", "session")
_FIELDS = {f.name for f in dataclasses.fields(StreamProcessorRecord)}
# What ``changes`` may set: everything but the identity and what the transition itself moves.
CHANGEABLE = frozenset(_FIELDS - {"name", "arn", "status", "status_message", "session", "created", "updated"})


def body(rec: StreamProcessorRecord) -> str:
    data = {k: v for k, v in dataclasses.asdict(rec).items() if k not in _COLUMNS}
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def record(name: str, status: str, session: int, text: str) -> StreamProcessorRecord:
    data = json.loads(text)
    return StreamProcessorRecord(name=name, status=status, session=int(session), **data)


def check_status(status: str) -> None:
    if status not in STREAM_STATUSES:
        raise ValueError(f"{status!r} is not a stream processor status ({', '.join(STREAM_STATUSES)})")


def allowed(rec: StreamProcessorRecord, expect: tuple[str, ...], session: int | None) -> bool:
    return rec.status in expect and (session is None or rec.session == session)


def next_record(
    rec: StreamProcessorRecord, status: str, message: str | None, new_session: bool, changes: dict | None
) -> StreamProcessorRecord:
    """The record a transition writes (the caller has checked its condition)."""
    check_status(status)
    unknown = set(changes or {}) - CHANGEABLE
    if unknown:
        raise ValueError(f"a transition cannot change {', '.join(sorted(unknown))}")
    values: dict[str, Any] = dict(changes or {})
    values |= {"status": status, "status_message": message, "updated": time.time()}
    if new_session:
        values["session"] = rec.session + 1
    return dataclasses.replace(rec, **values)
