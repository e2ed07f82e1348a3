"""The video queue client: ``VideoQueue`` sends stored-video job messages to SQS, and ``submit`` is
``Context.submit_video_job`` of ``aws_context`` (``facebank/wiring.py``): the job's plan message.

Used by the composition root (Start* functions) and by the video worker (``facebank.aws.video``),
which sends the segment and assemble messages; it imports no handler.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from facebank.settings import Settings

SEND_BATCH = 10  # SendMessageBatch's limit
SEND_ATTEMPTS = 5


class VideoQueue:
    """Sends job messages to the video queue (standard queue: at least once, unordered)."""

    def __init__(self, sqs: Any, queue_url: str):
        self.sqs = sqs
        self.url = queue_url

    def send(self, messages: Iterable[dict]) -> None:
        pending = [json.dumps(m, separators=(",", ":"), sort_keys=True) for m in messages]
        for start in range(0, len(pending), SEND_BATCH):
            entries = {str(i): body for i, body in enumerate(pending[start : start + SEND_BATCH])}
            for attempt in range(SEND_ATTEMPTS):
                if attempt:
                    time.sleep(0.05 * 2**attempt)  # SQS failed some entries on its side: back off briefly
                response = self.sqs.send_message_batch(
                    QueueUrl=self.url, Entries=[{"Id": i, "MessageBody": b} for i, b in entries.items()]
                )
                failed = response.get("Failed", [])
                sender_faults = [f for f in failed if f.get("SenderFault")]
                if sender_faults:
                    raise RuntimeError(f"video queue refused messages: {sender_faults}")
                entries = {f["Id"]: entries[f["Id"]] for f in failed}
                if not entries:
                    break
            else:
                raise RuntimeError(f"video queue kept failing {len(entries)} messages after {SEND_ATTEMPTS} attempts")

    def submitter(self) -> Callable[[str], None]:
        """Context.submit_video_job for Start*: the job's plan message."""

        def submit(job_id: str) -> None:
            self.send([{"type": "plan", "job_id": job_id}])

        return submit


_queues: dict[str, VideoQueue] = {}


def submit(settings: Settings, job_id: str) -> None:
    """Context.submit_video_job of aws_context (facebank/wiring.py): the job's plan message to the
    queue at FACEBANK_VIDEO_QUEUE_URL (one client per execution environment)."""
    url = settings.video_queue_url
    if not url:
        raise RuntimeError("no video queue configured for this function: FACEBANK_VIDEO_QUEUE_URL is not set")
    if url not in _queues:
        _queues[url] = VideoQueue(sqs_client(settings), url)
    _queues[url].submitter()(job_id)


def sqs_client(settings: Settings) -> Any:
    """The SQS client of this execution environment's video queue."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sqs", region_name=settings.region, config=Config(retries={"mode": "standard", "max_attempts": 5})
    )
