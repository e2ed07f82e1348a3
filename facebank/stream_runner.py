"""Stream processors inside ``facebank serve``: one thread per running processor.

StartStreamProcessor moves a processor to STARTING and calls ``start`` (``Context.
start_stream_processor``, set by facebank.wiring); the thread maps the processor's input (the
Kinesis video stream named in ``Input.KinesisVideoStream.Arn``) to a source this machine reads,
given by ``--stream NAME=URL`` (or ``FACEBANK_STREAMS``), writes records to the output data stream
at ``--kinesis-endpoint-url``, and runs ``stream_run.run_stream``. When serve starts, ``resume``
restarts processors left RUNNING or STARTING and settles STOPPING ones as STOPPED; when it stops,
``stop`` ends every thread between fragments (the processors stay RUNNING for the next start).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from facebank.operations import Context
from facebank.operations.stream_processors import kinesis_video_stream_name
from facebank.operations.stream_run import end_failed, failure_message, run_stream

if TYPE_CHECKING:
    from facebank.engine.stream_media import Fragment

log = logging.getLogger("facebank.streams")

JOIN_TIMEOUT_S = 15.0  # a network read times out after 10 s (engine.stream_media)


def parse_streams(values: Iterable[str]) -> dict[str, str]:
    """``NAME=URL`` values -> {NAME: URL}; ValueError for a malformed one."""
    out = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise ValueError(f"--stream {value!r}: expected NAME=URL (NAME: the Kinesis video stream's name)")
        out[name.strip()] = url.strip()
    return out


def selected(fragments: Iterable[Fragment], start_selector: dict | None) -> Iterator[Fragment]:
    """The fragments from StartSelector.KVSStreamStartSelector on: ProducerTimestamp (ms) or
    FragmentNumber (this source's synthesised numbers) at or after it. A live source has nothing
    older, so a past selector changes nothing."""
    kvs = (start_selector or {}).get("KVSStreamStartSelector") or {}
    after_ms, after_number = kvs.get("ProducerTimestamp"), kvs.get("FragmentNumber")
    iterator = iter(fragments)
    try:
        for fragment in iterator:
            if after_ms is not None and fragment.producer_timestamp * 1000 < float(after_ms):
                continue
            if after_number is not None and int(fragment.number) < int(after_number):
                continue
            yield fragment
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def kinesis_client(endpoint_url: str | None, region: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=10)
    return boto3.client("kinesis", endpoint_url=endpoint_url, region_name=region, config=config)


class StreamRunner:
    def __init__(
        self,
        ctx: Context,
        sources: dict[str, str],
        open_kinesis: Callable[[str], Any],
        open_fragments: Callable[[str], Iterable[Fragment]] | None = None,
    ):
        self.ctx, self.sources, self.open_kinesis = ctx, sources, open_kinesis
        self.open_fragments = open_fragments or _open_source
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: dict[tuple[str, int], threading.Thread] = {}
        self._kinesis: dict[str, Any] = {}  # a client per region of the output streams

    def start(self, name: str) -> None:
        """Run the processor's current session in a thread (once, however often it is called)."""
        rec = self.ctx.storage.streams.get(name)
        if rec is None:
            return
        key = (name, rec.session)
        with self._lock:
            if self._stopping.is_set():
                raise RuntimeError("the stream runner is stopping")
            if key in self._threads:
                return
            thread = threading.Thread(target=self._run, args=key, name=f"stream-{name}", daemon=True)
            self._threads[key] = thread
        thread.start()

    def _sink(self, rec: Any) -> Any:
        from facebank.storage.kinesis import KinesisSink

        region = rec.output_arn.split(":")[3] or self.ctx.settings.region  # the output stream's own region
        with self._lock:
            if region not in self._kinesis:
                self._kinesis[region] = self.open_kinesis(region)
        return KinesisSink(self._kinesis[region], rec.output_arn, rec.name)

    def _run(self, name: str, session: int) -> None:
        store = self.ctx.storage.streams
        try:
            rec = store.get(name)
            if rec is None or rec.session != session:
                return
            stream = kinesis_video_stream_name(rec.input_arn)
            url = self.sources.get(stream)
            if url is None:
                message = (
                    f"No source for the Kinesis video stream {stream}: start facebank serve with "
                    f"--stream {stream}=URL (a file, RTSP, HTTP or HLS URL; or FACEBANK_STREAMS)"
                )
                self._fail(name, session, message)
                return
            fragments = selected(self.open_fragments(url), rec.start_selector)
            why = run_stream(name, session, self.ctx, fragments, self._sink(rec), should_yield=self._stopping.is_set)
            if why == "ended":
                self._fail(name, session, f"The input {stream} ended")
            log.info("stream processor %s (session %d): %s", name, session, why)
        except Exception as exc:
            message = failure_message(exc)
            if message.startswith("Internal error"):
                log.exception("stream processor %s (session %d) failed", name, session)
            self._fail(name, session, message)
        finally:
            with self._lock:
                self._threads.pop((name, session), None)

    def _fail(self, name: str, session: int, message: str) -> None:
        try:
            end_failed(self.ctx.storage.streams, name, session, message)
        except Exception:
            log.exception("stream processor %s: could not record its failure (%s)", name, message)

    def resume(self) -> int:
        """At serve's start: restart RUNNING/STARTING processors, settle STOPPING ones; returns how
        many were restarted."""
        store = self.ctx.storage.streams
        restarted, token = 0, None
        while True:
            page, token = store.list(100, token)
            for rec in page:
                if rec.status in ("RUNNING", "STARTING"):
                    log.info("resuming stream processor %s (%s)", rec.name, rec.status)
                    self.start(rec.name)
                    restarted += 1
                elif rec.status == "STOPPING":
                    store.transition(rec.name, ("STOPPING",), "STOPPED", session=rec.session)
            if not token:
                return restarted

    def running(self) -> list[str]:
        with self._lock:
            return sorted(name for name, _ in self._threads)

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        """End every thread between fragments; their processors stay as they are (RUNNING ones
        restart at the next start)."""
        with self._lock:
            self._stopping.set()
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)


def _open_source(url: str) -> Iterable[Fragment]:
    from facebank.engine.stream_media import open_source

    return open_source(url)
