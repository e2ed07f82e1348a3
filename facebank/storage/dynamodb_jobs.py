"""AWS store of stored-video jobs (``JobStore``, see ports.py) on one DynamoDB table.

Key schema (create_jobs_table() builds it for tests; the CDK stack, infra/video.py, declares the
same), on-demand, no secondary index:

  <prefix>jobs   HASH job_id (S)
      api, status (S); created, updated (N); video, params (S: JSON of the request's Video and of
      the operation parameters, so floats such as FaceMatchThreshold round-trip exactly);
      job_tag, status_message (S, optional); notification_channel, video_metadata (S: JSON,
      optional); segments_total, result_count (N); segments_done (NS, absent while empty).
      One more item, job_id "#active", holds the count of IN_PROGRESS jobs (active, N). "#" is
      not a character of a JobId (uuid4 hex), so it can never collide with a job.

The concurrent-job limit holds under any number of concurrent Start* calls because a job is
created in one TransactWriteItems with the counter's conditional ADD (``active < max``), and
leaves IN_PROGRESS in one TransactWriteItems with the counter's ADD -1, conditioned on the job
still being IN_PROGRESS: the counter moves exactly once per job, both ways.

``segment_done`` ADDs the segment's number to a number set, so a retried segment (SQS delivers at
least once) counts once; the update returns the new set, and only the call that completes it sees
done == total (a retry of that call sees it again: the fan-in step it starts is idempotent).

Retries follow facebank.storage.dynamodb: contention is retried a bounded number of times and then
raises StorageBusy (reported as throttling; the client or SQS retries later).
"""

from __future__ import annotations

import json
import time
from typing import Any

from facebank.storage.dynamodb_base import (
    DEFAULT_MAX_ATTEMPTS,
    Dynamo,
    client_of,
    counter_free,
    counter_take,
    create_table_specs,
)
from facebank.storage.errors import JobExists, JobLimit
from facebank.storage.ports import JobRecord

COUNTER_ID = "#active"
IN_PROGRESS = "IN_PROGRESS"
FINISHED = frozenset({"SUCCEEDED", "FAILED"})
_JOB, _COUNTER = "job", "counter"  # transaction item names (see Dynamo.transact)


def create_jobs_table(dynamodb: Any, name: str, *, wait: bool = True) -> None:
    """Create the jobs table (see the module docstring) unless it exists."""
    create_table_specs(client_of(dynamodb), {name: [("job_id", "HASH")]}, wait)


def _key(job_id: str) -> dict[str, Any]:
    return {"job_id": {"S": job_id}}


def _n(value: float | int) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(int(value))}


def _json(value: Any) -> dict[str, str]:
    return {"S": json.dumps(value, separators=(",", ":"), sort_keys=True)}


def _job_item(rec: JobRecord) -> dict[str, Any]:
    item: dict[str, Any] = {
        "job_id": {"S": rec.job_id},
        "api": {"S": rec.api},
        "status": {"S": rec.status},
        "video": _json(rec.video),
        "params": _json(rec.params),
        "created": _n(float(rec.created)),
        "updated": _n(float(rec.updated or rec.created)),
        "segments_total": _n(rec.segments_total),
        "result_count": _n(rec.result_count),
    }
    if rec.job_tag is not None:
        item["job_tag"] = {"S": rec.job_tag}
    if rec.notification_channel is not None:
        item["notification_channel"] = _json(rec.notification_channel)
    if rec.status_message is not None:
        item["status_message"] = {"S": rec.status_message}
    if rec.video_metadata is not None:
        item["video_metadata"] = _json(rec.video_metadata)
    if rec.segments_done:  # DynamoDB has no empty sets
        item["segments_done"] = {"NS": [str(s) for s in sorted(rec.segments_done)]}
    return item


def _record(item: dict[str, Any]) -> JobRecord:
    def text(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    def parsed(name: str) -> Any:
        return json.loads(item[name]["S"]) if name in item else None

    return JobRecord(
        job_id=item["job_id"]["S"],
        api=item["api"]["S"],
        status=item["status"]["S"],
        video=parsed("video"),
        params=parsed("params"),
        created=float(item["created"]["N"]),
        job_tag=text("job_tag"),
        notification_channel=parsed("notification_channel"),
        status_message=text("status_message"),
        video_metadata=parsed("video_metadata"),
        segments_total=int(item.get("segments_total", {"N": "0"})["N"]),
        segments_done=frozenset(int(s) for s in item.get("segments_done", {}).get("NS", [])),
        result_count=int(item.get("result_count", {"N": "0"})["N"]),
        updated=float(item.get("updated", item["created"])["N"]),
    )


class DynamoJobStore:
    def __init__(self, dynamodb: Any, table: str, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        self._db = Dynamo(dynamodb, max_attempts)
        self.table = table

    def create_job(self, rec: JobRecord, max_active: int) -> None:
        if rec.job_id == COUNTER_ID:
            raise ValueError(f"{COUNTER_ID!r} is the counter's key, not a job id")
        # A new job starts IN_PROGRESS with no progress, whatever the record says (as embedded).
        new = JobRecord(
            job_id=rec.job_id,
            api=rec.api,
            status=IN_PROGRESS,
            video=rec.video,
            params=rec.params,
            created=rec.created,
            job_tag=rec.job_tag,
            notification_channel=rec.notification_channel,
            updated=time.time(),
        )
        put = {
            "Put": {
                "TableName": self.table,
                "Item": _job_item(new),
                "ConditionExpression": "attribute_not_exists(job_id)",
            }
        }
        count = counter_take(self.table, _key(COUNTER_ID), "active", max_active)
        failed = self._db.transact({_JOB: put, _COUNTER: count})
        if _JOB in failed:  # first: a taken id is the answer even when the limit is reached too
            raise JobExists(rec.job_id)
        if _COUNTER in failed:
            raise JobLimit(max_active)

    def get_job(self, job_id: str) -> JobRecord | None:
        if job_id == COUNTER_ID:
            return None
        item = self._db.get(self.table, _key(job_id))
        return _record(item) if item else None

    def plan_job(self, job_id: str, video_metadata: dict, segments_total: int) -> None:
        # A job finished meanwhile (failed from its dead-letter queue) keeps what it has.
        self._db.write(
            "update_item",
            TableName=self.table,
            Key=_key(job_id),
            UpdateExpression="SET video_metadata = :m, segments_total = :t, updated = :now",
            ConditionExpression="#status = :running",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":m": _json(video_metadata),
                ":t": _n(segments_total),
                ":now": _n(time.time()),
                ":running": {"S": IN_PROGRESS},
            },
        )

    def segment_done(self, job_id: str, segment: int) -> tuple[int, int]:
        response = self._db.write(
            "update_item",
            TableName=self.table,
            Key=_key(job_id),
            UpdateExpression="ADD segments_done :k SET updated = :now",
            ConditionExpression="attribute_exists(job_id)",
            ExpressionAttributeValues={":k": {"NS": [str(int(segment))]}, ":now": _n(time.time())},
            ReturnValues="ALL_NEW",
        )
        if response is None:  # no such job
            return 0, 0
        job = _record(response["Attributes"])
        return len(job.segments_done), job.segments_total

    def finish_job(self, job_id: str, status: str, status_message: str | None, result_count: int) -> bool:
        if status not in FINISHED:
            raise ValueError(f"a job finishes SUCCEEDED or FAILED, not {status}")
        values: dict[str, Any] = {
            ":s": {"S": status},
            ":n": _n(result_count),
            ":now": _n(time.time()),
            ":running": {"S": IN_PROGRESS},
        }
        if status_message is None:
            expression = "SET #status = :s, result_count = :n, updated = :now REMOVE status_message"
        else:
            expression = "SET #status = :s, result_count = :n, updated = :now, status_message = :m"
            values[":m"] = {"S": status_message}
        finish = {
            "Update": {
                "TableName": self.table,
                "Key": _key(job_id),
                "UpdateExpression": expression,
                "ConditionExpression": "#status = :running",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": values,
            }
        }
        free = counter_free(self.table, _key(COUNTER_ID), "active")
        return not self._db.transact({_JOB: finish, _COUNTER: free})

    def active_jobs(self) -> list[JobRecord]:
        args: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "#status = :running",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {":running": {"S": IN_PROGRESS}},
            "ConsistentRead": True,
        }
        jobs = []
        while True:
            response = self._db.client.scan(**args)
            jobs += [_record(item) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                return sorted(jobs, key=lambda j: (j.created, j.job_id))
            args["ExclusiveStartKey"] = response["LastEvaluatedKey"]
