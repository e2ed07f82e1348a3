"""Stored-video jobs on AWS: the VideoWorker handler.

Start* records the job (``JobStore.create_job``) and calls ``Context.submit_video_job``, which
here sends ``{"type": "plan", "job_id"}`` to the video queue (``VideoQueue``, in ``video_queue.py``). The worker
(``functions/video_worker.py``, SQS event source, one message per invocation) runs the pipeline of
``facebank.operations.video_jobs`` one step per message:

* ``plan``: probe the video, record its metadata and segments, send one ``segment`` message each;
* ``segment``: analyse ``[start_ms, end_ms)``, write its partial result, mark it done; the call
  that completes the set sends ``assemble``;
* ``assemble``: join tracks across segments, write the result pages, finish SUCCEEDED (which
  publishes the completion message).

Every step may run more than once (SQS delivers at least once; a timed-out worker's message comes
back): planning again sends the same segments, a segment's partial is overwritten with the same
bytes and counted once (``segment_done`` is a set), assembling again writes the same pages and
``finish_job`` refuses a second finish. A step for a job that is no longer IN_PROGRESS is skipped.

Failures. A video that cannot be decoded (``VideoDecodeError``: not a video, cut short, too long)
fails its job at once with that message: retrying cannot help. Anything else fails the message,
which comes back after a short backoff (``retry_delay``); after ``MAX_RECEIVES`` receives SQS moves
it to the dead-letter queue, which the same function consumes: the job ends FAILED with a
StatusMessage naming the step, and the completion message is published. No job stays IN_PROGRESS.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from facebank.aws.observability import lambda_entry, logger, metrics, tracer
from facebank.aws.runtime import shared_context
from facebank.aws.video_queue import VideoQueue, sqs_client

if TYPE_CHECKING:
    from facebank.operations import Context
    from facebank.storage.ports import JobRecord

IN_PROGRESS = "IN_PROGRESS"
MESSAGE_TYPES = ("plan", "segment", "assemble")
MAX_RECEIVES = 3  # the redrive policy's maxReceiveCount (infra/video.py)
# Failure messages of jobs failed from the dead-letter queue, by step.
DEAD_LETTER_MESSAGES = {
    "plan": "Internal error: the video could not be read or planned after {n} attempts",
    "segment": "Internal error analysing the video (segment {segment}, {start_ms}-{end_ms} ms) after {n} attempts",
    "assemble": "Internal error assembling the results after {n} attempts",
}


def retry_delay(receive_count: int) -> int:
    """Seconds before a failed message is delivered again: 30 s, then 60 s (a transient S3 or
    DynamoDB failure clears by then), instead of the queue's 30-minute visibility timeout."""
    return min(30 * 2 ** max(receive_count - 1, 0), 900)


# --- the worker


def queue_name(url_or_arn: str) -> str:
    """The queue's name, from its URL (https://sqs.../<account>/<name>) or ARN (arn:...:<name>)."""
    return url_or_arn.rstrip("/").replace(":", "/").rsplit("/", 1)[-1]


class VideoWorker:
    """One message at a time, over an operation Context (shared per execution environment)."""

    def __init__(self, ctx: Context, queue: VideoQueue):
        self.ctx = ctx
        self.queue = queue

    def handle(self, message: dict, *, dead: bool) -> str:
        """Run one message's step; returns what was done (for logs and tests)."""
        from facebank.engine.video import VideoDecodeError
        from facebank.operations import video_jobs
        from facebank.operations.video_source import VideoUnreadable
        from facebank.storage import CollectionNotFound

        kind, job_id = message.get("type"), message.get("job_id")
        if kind not in MESSAGE_TYPES or not isinstance(job_id, str):
            logger.error("not a video job message: dropped", extra={"video_message": message})
            return "dropped"
        job = self.ctx.storage.jobs.get_job(job_id)
        if job is None or job.status != IN_PROGRESS:
            logger.info("job not in progress: message skipped", extra={"job_id": job_id, "type": kind})
            return "skipped"
        if dead:
            text = DEAD_LETTER_MESSAGES[kind].format(n=MAX_RECEIVES, **{k: message.get(k) for k in _SEGMENT_FIELDS})
            logger.error("video job message failed repeatedly: job failed", extra={"job_id": job_id, "type": kind})
            metrics.add_metric(name="VideoJobsFailedInternally", unit=MetricUnit.Count, value=1)
            video_jobs.finish(job, self.ctx, "FAILED", text)
            return "failed"
        try:
            return getattr(self, f"_{kind}")(job, message, video_jobs)
        except (VideoDecodeError, VideoUnreadable, video_jobs.JobFailed, CollectionNotFound) as exc:
            reason = str(exc)
            if isinstance(exc, CollectionNotFound):
                reason = f"The collection {exc.collection_id} was deleted while the job ran"
            logger.info("video cannot be analysed: job failed", extra={"job_id": job_id, "reason": reason})
            video_jobs.finish(self._fresh(job), self.ctx, "FAILED", reason)
            return "failed"

    def _fresh(self, job: JobRecord) -> JobRecord:
        return self.ctx.storage.jobs.get_job(job.job_id) or job

    def _plan(self, job: JobRecord, message: dict, video_jobs: Any) -> str:
        segments = video_jobs.plan(job, self.ctx)  # JobFailed for a job of another model pack, too
        self.queue.send(
            {"type": "segment", "job_id": job.job_id, "segment": k, "start_ms": start, "end_ms": end}
            for k, (start, end) in enumerate(segments)
        )
        if not segments:  # an empty video: nothing to analyse, the (empty) result is ready
            self.queue.send([{"type": "assemble", "job_id": job.job_id}])
        logger.info("video planned", extra={"job_id": job.job_id, "segments": len(segments)})
        return "planned"

    def _segment(self, job: JobRecord, message: dict, video_jobs: Any) -> str:
        k, start_ms, end_ms = int(message["segment"]), int(message["start_ms"]), int(message["end_ms"])
        done, total = video_jobs.analyse_segment(job, k, start_ms, end_ms, self.ctx)
        if done >= total:
            self.queue.send([{"type": "assemble", "job_id": job.job_id}])
            return "last segment"
        return "segment"

    def _assemble(self, job: JobRecord, message: dict, video_jobs: Any) -> str:
        count = video_jobs.assemble(self._fresh(job), self.ctx)
        video_jobs.finish(self._fresh(job), self.ctx, "SUCCEEDED", None, count)
        metrics.add_metric(name="VideoJobsSucceeded", unit=MetricUnit.Count, value=1)
        return "succeeded"


_SEGMENT_FIELDS = ("segment", "start_ms", "end_ms")
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
_worker: VideoWorker | None = None


def worker() -> VideoWorker:
    """The worker of this execution environment (over runtime.shared_context)."""
    global _worker
    ctx = shared_context()
    if _worker is None or _worker.ctx is not ctx:
        _worker = VideoWorker(ctx, VideoQueue(sqs_client(ctx.settings), ctx.settings.video_queue_url or ""))
    return _worker


@tracer.capture_method(capture_response=False)
def record_handler(record: SQSRecord) -> str:
    """One SQS message; from the dead-letter queue when its source is not the video queue."""
    video = worker()
    dead = queue_name(record.event_source_arn) != queue_name(video.queue.url)
    receive_count = int(record.attributes.approximate_receive_count or 1)
    try:
        message = json.loads(record.body)
    except ValueError:
        logger.error("video job message is not JSON: dropped", extra={"message_id": record.message_id})
        return "dropped"
    try:
        return video.handle(message, dead=dead)
    except Exception:
        if not dead:  # back off briefly instead of the whole visibility timeout (see retry_delay)
            _delay_retry(video.queue, record.receipt_handle, receive_count)
        logger.exception("video job step failed", extra={"video_message": message, "receive_count": receive_count})
        raise


def _delay_retry(queue: VideoQueue, receipt_handle: str, receive_count: int) -> None:
    try:
        queue.sqs.change_message_visibility(
            QueueUrl=queue.url, ReceiptHandle=receipt_handle, VisibilityTimeout=retry_delay(receive_count)
        )
    except Exception:  # noqa: BLE001 - the message still comes back, after the visibility timeout
        logger.warning("could not shorten the retry delay", exc_info=True)


@lambda_entry()
def handler(event: dict, context: Any) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
