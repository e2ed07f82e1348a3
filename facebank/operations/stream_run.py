"""What a stream processor does with its input, shared by both runtimes (issue 26):

    fragments (engine.stream_media / engine.mkv) -> StreamAnalyzer -> RecordSink (Kinesis)

``run_stream`` is the one loop: it moves the processor STARTING -> RUNNING once the input
delivers, re-reads the record before every fragment (STOPPING -> STOPPED; another session or a
deleted processor: it stops at once), analyses the fragment, writes its records and checkpoints
(last fragment, analyser state) under the session's lease. ``facebank serve`` runs it in a thread
per processor (facebank.stream_runner); on AWS a chain of consumer invocations runs it
(facebank.aws.streams), handing over between fragments.

``StreamAnalyzer`` samples frames at ``stream_sample_fps`` on the producer's clock, detects
faces, embeds and tracks them and searches the collection as StartFaceSearch does
(operations.video_jobs: ``search_tracked``, ``search_collection``), and writes one record per
sampled frame (``FaceSearchResponse`` empty when it has no face), shaped as Rekognition's "Kinesis
face recognition record".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from facebank.operations import Context
from facebank.operations.video_jobs import link_rule, search_collection, search_tracked
from facebank.storage import StreamProcessorRecord, StreamProcessorStore

if TYPE_CHECKING:
    from facebank.engine.stream_media import Fragment

log = logging.getLogger("facebank.streams")

# MatchedFaces of one detected face: the best ones at or above FaceMatchThreshold. Rekognition's
# record reference gives no number; 10 bounds a record (<= 1 MB for Kinesis) with 100 faces.
MAX_MATCHED_FACES = 10
DETECTED_FACE_KEYS = ("BoundingBox", "Confidence", "Landmarks", "Pose", "Quality")  # the record reference's
MATCHED_FACE_KEYS = ("BoundingBox", "FaceId", "Confidence", "ImageId", "ExternalImageId")
STOP_REASONS = ("stopped", "lost", "ended", "yield")


class RecordSink(Protocol):
    def put(self, records: list[dict]) -> None:
        """Write every record (in order), or raise."""


class StreamAnalyzer:
    """Sampling, detect, embed, track, search -> records, for one processor's session.

    ``state`` (from ``state()``, kept in the checkpoint) restores the sampling clock and the
    tracker, so a run resumed after a restart or a hand-over samples and reuses track matches as
    one run would."""

    def __init__(self, rec: StreamProcessorRecord, ctx: Context, state: dict | None = None):
        from facebank.engine.tracker import Tracker
        from facebank.operations.collections import get_collection

        get_collection(ctx, rec.collection_id, check_pack=True)  # exists, and its vectors are this pack's
        state = state or {}
        self.rec, self.ctx = rec, ctx
        self.fps = float(state.get("sample_fps") or ctx.settings.stream_sample_fps)
        self.period = 1.0 / self.fps
        self.next_sample: float | None = state.get("next_sample")  # epoch s on the producer's clock
        rule = link_rule(ctx, self.fps)
        self.tracker = Tracker.from_state(rule, state["tracker"]) if "tracker" in state else Tracker(rule)
        # Each live track's MatchedFaces when its face was last embedded (video_jobs._Searches).
        self.track_matches: dict[int, list[dict]] = {int(k): v for k, v in state.get("matches", {}).items()}

    def state(self) -> dict:
        live = {t.index for t in self.tracker.summaries()}
        return {
            "sample_fps": self.fps,
            "next_sample": self.next_sample,
            "tracker": self.tracker.to_state(),
            "matches": {str(k): v for k, v in self.track_matches.items() if k in live},
        }

    def _sampled(self, t: float) -> bool:
        """Whether the frame at producer time ``t`` is analysed: one grid step apart, each sample the
        first frame at or after its grid time (a gap in the input restarts the grid)."""
        if self.next_sample is not None and t + 1e-6 < self.next_sample:
            return False
        if self.next_sample is None or t - self.next_sample > self.period:
            self.next_sample = t + self.period
        else:
            self.next_sample += self.period
        return True

    def fragment(self, fragment: Fragment) -> list[dict]:
        records = []
        for offset, rgb in fragment.frames:
            if self._sampled(fragment.producer_timestamp + offset):
                # One record per analysed frame, FaceSearchResponse [] when it has no face, as the
                # guide's "Kinesis face recognition JSON frame record" says Rekognition writes.
                faces = self.frame(int(round((fragment.producer_timestamp + offset) * 1000)), rgb)
                records.append(self.record(fragment, offset, faces))
        return records

    def frame(self, timestamp_ms: int, rgb: Any) -> list[dict]:
        """FaceSearchResponse of one sampled frame."""
        engine = self.ctx.engine
        faces = engine.detect(rgb, attributes=["DEFAULT"])
        out = []
        for face, _, matches in search_tracked(
            engine, self.tracker, self.track_matches, timestamp_ms, rgb, faces, self._search
        ):
            detail = face.detail()
            out.append({"DetectedFace": {k: detail[k] for k in DETECTED_FACE_KEYS}, "MatchedFaces": matches})
        self.tracker.prune(timestamp_ms - self.tracker.rule.max_gap_ms)  # only live tracks matter here
        return out

    def _search(self, vector: Any) -> list[dict]:
        found = search_collection(self.ctx, self.rec.collection_id, self.rec.face_match_threshold, vector)
        return [_matched_face(m) for m in found[:MAX_MATCHED_FACES]]

    def record(self, fragment: Fragment, offset: float, faces: list[dict]) -> dict:
        return {
            "InputInformation": {
                "KinesisVideo": {
                    "StreamArn": self.rec.input_arn,
                    "FragmentNumber": fragment.number,
                    "ServerTimestamp": round(fragment.server_timestamp, 3),
                    "ProducerTimestamp": round(fragment.producer_timestamp, 3),
                    "FrameOffsetInSeconds": round(offset, 3),
                }
            },
            "StreamProcessorInformation": {"Status": "RUNNING"},
            "FaceSearchResponse": faces,
        }


def _matched_face(match: dict) -> dict:
    face = match["Face"]
    return {"Similarity": match["Similarity"], "Face": {k: face[k] for k in MATCHED_FACE_KEYS if k in face}}


def _stop_if_stopping(ctx: Context, rec: StreamProcessorRecord | None, session: int) -> str | None:
    """Why the run must end now (the record says so), or None to go on."""
    if rec is None or rec.session != session:
        return "lost"  # deleted, or started again: another session owns the processor
    if rec.status == "STOPPING":
        ctx.storage.streams.transition(rec.name, ("STOPPING",), "STOPPED", session=session)
        return "stopped"
    if rec.status not in ("STARTING", "RUNNING"):
        return "lost"
    return None


def run_stream(
    name: str,
    session: int,
    ctx: Context,
    fragments: Iterable[Fragment],
    sink: RecordSink,
    *,
    should_yield: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.time,
) -> str:
    """The one loop both runtimes use: RUNNING once the input delivers, then per fragment: check
    the record (stop/lease), analyse, ``sink.put(records)``, ``put_checkpoint``. Returns why it
    ended: "stopped" (STOPPING -> STOPPED, or StopSelector.MaxDurationInSeconds reached) | "lost"
    (another session, or the processor deleted) | "ended" (the input ended) | "yield"
    (``should_yield()`` said hand over; checked between fragments only). Raises for failures
    (the caller ends the processor FAILED with the message)."""
    store = ctx.storage.streams
    rec = store.get(name)
    if (why := _stop_if_stopping(ctx, rec, session)) is not None:
        return why
    assert rec is not None
    checkpoint = store.get_checkpoint(name) or {}
    if checkpoint.get("session") != session:
        checkpoint = {}  # an earlier session's: this one starts afresh
    analyzer = StreamAnalyzer(rec, ctx, checkpoint.get("analyzer"))
    started = checkpoint.get("started")
    max_s = (rec.stop_selector or {}).get("MaxDurationInSeconds")
    iterator = iter(fragments)
    try:
        while True:
            if should_yield():
                return "yield"
            fragment = next(iterator, None)  # the first opens the input (raises when it cannot)
            if fragment is None:
                return "ended"
            why = _running(ctx, name, session)
            while why == "again":  # Stop (or Delete) came in between STARTING and RUNNING: read again
                why = _running(ctx, name, session)
            if why is not None:
                return why
            started = clock() if started is None else started
            if max_s and clock() - started >= float(max_s):  # StopSelector.MaxDurationInSeconds
                store.transition(name, ("RUNNING",), "STOPPED", session=session)
                return "stopped"
            sink.put(analyzer.fragment(fragment))
            data = {
                "session": session,
                "fragment": fragment.number,
                "producer_timestamp": fragment.producer_timestamp,
                "started": started,
                "analyzer": analyzer.state(),
            }
            if not store.put_checkpoint(name, session, data):
                return "lost"
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()  # the source's connection / file


def _running(ctx: Context, name: str, session: int) -> str | None:
    """Before a fragment: None when the processor is RUNNING for this session (moved there from
    STARTING: the input delivers), else why the run ends ("again": the move lost a race)."""
    store = ctx.storage.streams
    rec = store.get(name)
    if (why := _stop_if_stopping(ctx, rec, session)) is not None:
        return why
    assert rec is not None
    if rec.status == "STARTING" and not mark_running(store, name, session):
        return "again"
    return None


def mark_running(store: StreamProcessorStore, name: str, session: int) -> bool:
    """STARTING -> RUNNING for this session (its input delivers); False when the move lost a race."""
    if store.transition(name, ("STARTING",), "RUNNING", session=session) is None:
        return False
    log.info("stream processor %s (session %d) RUNNING", name, session)
    return True


def end_failed(store: StreamProcessorStore, name: str, session: int, message: str) -> None:
    """End a session's run that failed: FAILED with ``message``, or STOPPED when a Stop came first
    (it ends as asked). Both runtimes end failed runs here."""
    if store.transition(name, ("STARTING", "RUNNING"), "FAILED", message, session=session) is not None:
        log.warning("stream processor %s FAILED: %s", name, message)
    else:
        store.transition(name, ("STOPPING",), "STOPPED", session=session)


def failure_message(exc: BaseException) -> str:
    """StatusMessage for what ended a run with an exception."""
    from facebank.engine.stream_media import SourceError
    from facebank.errors import RekognitionError
    from facebank.storage import CollectionNotFound
    from facebank.storage.kinesis import KinesisWriteError

    if isinstance(exc, SourceError | KinesisWriteError):
        return str(exc)
    if isinstance(exc, CollectionNotFound):
        return f"The collection {exc.collection_id} was deleted while the stream processor ran"
    if isinstance(exc, RekognitionError):
        return exc.message
    return f"Internal error analysing the stream ({type(exc).__name__}): see the server's log"
