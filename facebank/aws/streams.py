"""Stream processors on AWS: the StreamConsumer handler, a chain of Lambda invocations per session.

StartStreamProcessor makes the processor STARTING (a new session S) and invokes this function
asynchronously with ``{"name", "session": S, "hop": 0}`` (``facebank.aws.stream_client``). One
invocation:

1. takes the session's lease (below) and reads the checkpoint: the last fragment done, the
   analyser's state (sampling clock, tracker);
2. reads the Kinesis video stream: GetDataEndpoint(GET_MEDIA), then GetMedia from the request's
   StartSelector (KVSStreamStartSelector: a FragmentNumber or a ProducerTimestamp; else NOW) or,
   when the session has a checkpoint, from FRAGMENT_NUMBER = that fragment. Kinesis Video serves
   the named fragment again in practice (its reference says "after"), so fragments numbered at or
   below the last one done are skipped, whichever it does: nothing is lost or repeated. The
   payload is split by ``facebank.engine.mkv.read_fragments``; a payload that ends (the
   connection's limit, a read timeout while the producer is idle) is reopened after the last
   fragment read;
3. runs ``operations.stream_run.run_stream`` over those fragments with a ``KinesisSink`` on the
   output data stream: RUNNING once GetMedia answers, records, a checkpoint after every fragment;
4. hands over before its time runs out: ``should_yield`` is true when less than
   ``YIELD_MARGIN_MS`` remain (``context.get_remaining_time_in_millis()``), checked between
   fragments; it then invokes the function again with ``hop + 1`` and returns.

Stop: run_stream re-reads the record before every fragment, and the reader does between GetMedia
connections (a read times out after ``READ_TIMEOUT_S`` while the stream is idle), so a STOPPING
processor becomes STOPPED within a fragment or ``READ_TIMEOUT_S`` + ``IDLE_WAIT_S``.

Failures: a stream that does not exist or disappears (ResourceNotFoundException), media that
cannot be read, an output stream that cannot be written, anything else raised: the processor ends
FAILED with a StatusMessage, and the invocation returns normally (no Lambda retry). What cannot
be caught (the function's timeout, running out of memory) makes Lambda retry the event twice, the
retry resuming from the checkpoint; then the event goes to the on-failure destination, an SQS
queue this function also consumes (``{"Records": [...]}`` events): the session ends FAILED (or
STOPPED when it was being stopped), so no processor stays RUNNING with nothing running it.

The lease: the checkpoint carries ``lease = {"hop", "owner"}``. An invocation takes it when the
checkpoint's hop is not above its own (a late duplicate of an older hop stays out) and every
checkpoint write first checks it still holds it; an invocation that finds another owner stops
("lost") without writing. Lambda may deliver one asynchronous event twice: the second copy takes
the lease and the first stops at its next fragment, so at most that one fragment's records can be
written twice. Different hops never overlap: a hop invokes the next only after its last
checkpoint.

Credentials: the consumer reads Kinesis Video and writes Kinesis Data Streams with its own role
(infra/streams.py: GetDataEndpoint/GetMedia on the account's video streams, PutRecords on its
data streams, in the stack's region), where Rekognition assumes the processor's RoleArn. A role
made for Rekognition trusts rekognition.amazonaws.com, not this function, so assuming it would
fail for every existing role, and assuming callers' roles would need sts:AssumeRole on any role,
the privilege this stack avoids (docs/deploy.md, notifications). The RoleArn is recorded and
returned, as for video jobs.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from facebank.aws import stream_client
from facebank.aws.observability import lambda_entry, logger, metrics
from facebank.aws.runtime import shared_context

if TYPE_CHECKING:
    from facebank.engine.stream_media import Fragment
    from facebank.operations import Context
    from facebank.storage.ports import StreamProcessorRecord, StreamProcessorStore

# Hand over when less than this remains: one fragment's analysis (Kinesis Video fragments are at
# most 20 s; at 4 samples/s on one vCPU a 20 s fragment takes well under 30 s) plus the checkpoint
# and the next invocation's request.
YIELD_MARGIN_MS = 60_000
READ_TIMEOUT_S = 5.0  # a GetMedia read waiting longer reconnects (and the record is re-read)
IDLE_WAIT_S = 1.0  # between GetMedia calls that brought nothing (GetMedia allows 5 calls/s/stream)
MAX_CONNECTION_FAILURES = 5  # consecutive GetMedia connections failing with no fragment: FAILED
LIVE = ("STARTING", "RUNNING")
ACTIVE = ("STARTING", "RUNNING", "STOPPING")


# GetMedia's limits (5 calls a second per stream, connections per stream): wait and call again.
THROTTLED = frozenset({"ClientLimitExceededException", "ConnectionLimitExceededException"})


class _Throttled(Exception):
    pass


def _source_error(message: str) -> Exception:
    from facebank.engine.stream_media import SourceError  # failure_message shows its text

    return SourceError(message)


def arn_region(arn: str, default: str) -> str:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 and parts[3] else default


def first_selector(rec: StreamProcessorRecord) -> dict:
    """GetMedia's StartSelector for a session's first fragment: StartStreamProcessor's
    KVSStreamStartSelector (FragmentNumber, or ProducerTimestamp in epoch milliseconds), else NOW."""
    kvs = (rec.start_selector or {}).get("KVSStreamStartSelector") or {}
    if kvs.get("FragmentNumber"):
        return {"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": str(kvs["FragmentNumber"])}
    if kvs.get("ProducerTimestamp") is not None:
        when = datetime.fromtimestamp(int(kvs["ProducerTimestamp"]) / 1000.0, tz=UTC)
        return {"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": when}
    return {"StartSelectorType": "NOW"}


def _after(last: str | None, number: str) -> bool:
    """Whether fragment ``number`` comes after ``last`` (fragment numbers grow with ingestion)."""
    if last is None:
        return True
    try:
        return int(number) > int(last)
    except ValueError:
        return number != last


class KinesisVideoReader:
    """Fragments of one Kinesis video stream, after the last one read, across GetMedia connections."""

    def __init__(
        self,
        arn: str,
        region: str,
        *,
        open_client: Callable[..., Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.arn, self.region = arn, region
        self.open_client = open_client or _client
        self.sleep = sleep
        self._control: Any = None
        self.last: str | None = None  # the last fragment read
        self.failures = 0  # connections failed in a row

    def open(self, selector: dict) -> Any:
        """GetDataEndpoint + GetMedia: the payload (a botocore StreamingBody)."""
        from botocore.exceptions import ClientError

        try:
            if self._control is None:
                self._control = self.open_client("kinesisvideo", self.region)
            endpoint = self._control.get_data_endpoint(StreamARN=self.arn, APIName="GET_MEDIA")["DataEndpoint"]
            media = self.open_client("kinesis-video-media", self.region, endpoint_url=endpoint)
            return media.get_media(StreamARN=self.arn, StartSelector=selector)["Payload"]
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", "")
            if code == "ResourceNotFoundException":
                raise _source_error(
                    f"The Kinesis video stream {self.arn} was not found (it does not exist, was deleted, "
                    f"or is not active): {message}".rstrip(": ")
                ) from None
            if code in ("NotAuthorizedException", "AccessDeniedException", "AccessDeniedForDependencyException"):
                raise _source_error(
                    f"The stream consumer may not read the Kinesis video stream {self.arn}: {message}"
                ) from None
            if code == "InvalidArgumentException":
                raise _source_error(f"Kinesis Video refused to read {self.arn}: {message}") from None
            if code in THROTTLED:
                raise _Throttled(f"{code}: {message}") from None
            raise  # service errors are retried by botocore first; then FAILED

    def fragments(
        self, selector: dict, after: str | None, keep_going: Callable[[], bool], on_open: Callable[[], object]
    ) -> Iterator[Fragment]:
        """Fragments numbered above ``after``, from ``selector`` on; between connections, stops
        when ``keep_going()`` says so. ``on_open`` runs once GetMedia first answers."""
        self.last, self.failures = after, 0
        opened = False
        while True:
            if self.last is not None:  # resume: the checkpointed fragment (served again, skipped) on
                selector = {"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": self.last}
            payload = self._connect(selector)
            got = False
            if payload is not None:
                if not opened:
                    opened = True
                    on_open()
                got = yield from self._read(payload)
            if not keep_going():
                return
            if not got:
                self.sleep(IDLE_WAIT_S)

    def _connect(self, selector: dict) -> Any:
        """The payload, or None when the connection failed (FAILED after several in a row)."""
        from botocore.exceptions import BotoCoreError

        try:
            return self.open(selector)
        except (BotoCoreError, _Throttled) as exc:  # refused / reset / timed out before an answer; a limit
            self.failures += 1
            if self.failures >= MAX_CONNECTION_FAILURES:
                raise _source_error(f"Kinesis Video cannot be reached for {self.arn}: {exc}") from None
            return None

    def _read(self, payload: Any) -> Generator[Fragment, None, bool]:
        """One connection's new fragments; returns whether there were any."""
        from botocore.exceptions import BotoCoreError

        from facebank.engine.mkv import KinesisVideoMediaError, read_fragments

        got = False
        try:
            for fragment in read_fragments(payload):
                if not _after(self.last, fragment.number):
                    continue  # FRAGMENT_NUMBER serves the checkpointed fragment again
                got, self.failures, self.last = True, 0, fragment.number
                yield fragment
        except KinesisVideoMediaError as exc:
            if not exc.reconnect:
                raise
            logger.info("GetMedia ended (%s): reconnecting after fragment %s", exc, self.last)
        except BotoCoreError as exc:  # a read timed out (an idle stream) or the connection broke
            logger.info("GetMedia connection ended (%s): reconnecting after fragment %s", exc, self.last)
        finally:
            payload.close()
        return got


def _client(service: str, region: str, endpoint_url: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=READ_TIMEOUT_S)
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url, config=config)


class LeasedStreams:
    """The streams store as one invocation of a session sees it: checkpoints are written only while
    this invocation holds the session's lease (see the module docstring)."""

    def __init__(self, inner: StreamProcessorStore, name: str, session: int, hop: int):
        self.inner, self.name, self.session, self.hop = inner, name, session, hop
        self.lease = {"hop": hop, "owner": uuid.uuid4().hex}

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def claim(self) -> dict | None:
        """Take the lease: the session's checkpoint (without the lease), or None when a later
        invocation holds it or the session is over."""
        current = self.inner.get_checkpoint(self.name) or {}
        if current.get("session") == self.session:
            if int((current.get("lease") or {}).get("hop", -1)) > self.hop:
                return None
        else:
            current = {"session": self.session}
        if not self.inner.put_checkpoint(self.name, self.session, {**current, "lease": self.lease}):
            return None
        return {k: v for k, v in current.items() if k != "lease"}

    def holds(self) -> bool:
        current = self.inner.get_checkpoint(self.name) or {}
        return current.get("session") == self.session and current.get("lease") == self.lease

    def put_checkpoint(self, name: str, session: int, data: dict) -> bool:
        if name != self.name or session != self.session or not self.holds():
            return False
        return self.inner.put_checkpoint(name, session, {**data, "lease": self.lease})


@dataclass
class Consumer:
    """One invocation's work; the handler builds it from the environment, tests from their own."""

    ctx: Context
    should_yield: Callable[[], bool]
    invoke: Callable[[str, int, int], None]
    open_client: Callable[..., Any] | None = None
    sleep: Callable[[float], None] = time.sleep

    def run(self, name: str, session: int, hop: int) -> str:
        from facebank.operations.stream_run import end_failed, failure_message, mark_running, run_stream

        store = self.ctx.storage.streams
        rec = store.get(name)
        if rec is None or rec.session != session or rec.status not in ACTIVE:
            return "lost"
        leased = LeasedStreams(store, name, session, hop)
        checkpoint = leased.claim()
        if checkpoint is None:
            return "lost"
        ctx = self._leased_context(leased)
        region = self.ctx.settings.region
        try:
            reader = KinesisVideoReader(
                rec.input_arn, arn_region(rec.input_arn, region), open_client=self.open_client, sleep=self.sleep
            )
            fragments = reader.fragments(
                first_selector(rec),
                checkpoint.get("fragment"),
                keep_going=lambda: self._live(store, name, session) and not self.should_yield(),
                on_open=lambda: mark_running(store, name, session),  # GetMedia answered: the input is open
            )
            why = run_stream(name, session, ctx, fragments, self._sink(rec), should_yield=self.should_yield)
        except Exception as exc:
            message = failure_message(exc)
            if message.startswith("Internal error"):
                logger.exception("stream processor %s (session %d) failed", name, session)
            end_failed(store, name, session, message)
            return "failed"
        if why == "ended":  # the reader stops only when the record or the clock says so
            why = self._settle(store, name, session)
        if why == "yield":
            if not leased.holds():
                return "lost"
            try:
                self.invoke(name, session, hop + 1)
            except Exception as exc:
                logger.exception("stream processor %s: the hand-over failed", name)
                end_failed(store, name, session, f"The stream consumer could not hand over to its next run: {exc}")
                return "failed"
        return why

    def _leased_context(self, leased: LeasedStreams) -> Context:
        storage = replace(self.ctx.storage, streams=leased)
        ctx = replace(self.ctx, open_storage=lambda: storage)
        self.ctx.index  # noqa: B018 - made once per execution environment: its segment cache stays warm across hops
        ctx._opened = {k: v for k, v in self.ctx._opened.items() if k != "storage"}
        return ctx

    def _sink(self, rec: StreamProcessorRecord) -> Any:
        from facebank.storage.kinesis import KinesisSink

        open_client = self.open_client or _client
        kinesis = open_client("kinesis", arn_region(rec.output_arn, self.ctx.settings.region))
        return KinesisSink(kinesis, rec.output_arn, rec.name)

    @staticmethod
    def _live(store: StreamProcessorStore, name: str, session: int) -> bool:
        rec = store.get(name)
        return rec is not None and rec.session == session and rec.status in LIVE

    def _settle(self, store: StreamProcessorStore, name: str, session: int) -> str:
        rec = store.get(name)
        if rec is None or rec.session != session:
            return "lost"
        if rec.status == "STOPPING":
            store.transition(name, ("STOPPING",), "STOPPED", session=session)
            return "stopped"
        if rec.status in LIVE:
            return "yield"
        return "lost"


def dead_letter(ctx: Context, record: dict) -> None:
    """An invocation Lambda gave up on (its retries exhausted: a timeout, out of memory): the
    on-failure destination's message ends the session FAILED (STOPPED if it was stopping)."""
    body = json.loads(record["body"])
    payload = body.get("requestPayload") or {}
    name, session = payload.get("name"), payload.get("session")
    if not isinstance(name, str) or not isinstance(session, int):
        logger.warning("stream consumer dead letter without a processor: %s", record["body"][:500])
        return
    condition = (body.get("requestContext") or {}).get("condition", "RetriesExhausted")
    error = (body.get("responsePayload") or {}).get("errorMessage") or (body.get("responseContext") or {}).get(
        "functionError", ""
    )
    from facebank.operations.stream_run import end_failed

    message = f"The stream consumer stopped unexpectedly ({condition}{': ' + error if error else ''}); start it again"
    end_failed(ctx.storage.streams, name, session, message[:1000])


def idle_sleep(seconds: float) -> None:
    """The consumer's wait between GetMedia connections that brought nothing."""
    time.sleep(seconds)


@lambda_entry()
def handler(event: dict, context: Any) -> dict:
    ctx = shared_context()
    if "Records" in event:  # the on-failure destination's queue
        for record in event["Records"]:
            dead_letter(ctx, record)
        metrics.add_metric(name="StreamConsumerDeadLetters", unit=MetricUnit.Count, value=len(event["Records"]))
        return {"dead_letters": len(event["Records"])}
    settings = ctx.settings
    consumer = Consumer(
        ctx,
        should_yield=lambda: context.get_remaining_time_in_millis() < YIELD_MARGIN_MS,
        invoke=lambda name, session, hop: stream_client.invoke(settings, name, session, hop),
        sleep=lambda seconds: idle_sleep(seconds),
    )
    name, session, hop = str(event["name"]), int(event["session"]), int(event.get("hop", 0))
    why = consumer.run(name, session, hop)
    if why == "failed":
        metrics.add_metric(name="StreamProcessorsFailed", unit=MetricUnit.Count, value=1)
    logger.info("stream processor %s (session %d, hop %d): %s", name, session, hop, why)
    return {"name": name, "session": session, "hop": hop, "result": why}
