"""The video job pipeline, as plain functions over a Context, shared by both runtimes:

    plan -> analyse_segment (each segment, in any order, any number of times) -> assemble -> finish

``facebank serve`` runs them in order in a worker thread (``run_job``, from facebank.video_runner);
on AWS each step is a message of the video queue (facebank.aws.video). Every step is idempotent and
keeps its state in storage (the job record, ``segment-<k>.json`` partial results, the result
pages), so a step that is retried, or a job resumed after a restart, redoes only what is missing.

Sampling: frames at ``params["sample_fps"]`` (the setting when the job started, so a resumed job
samples as it began); Timestamp is the sampled frame's presentation time in ms. FaceSearch embeds
every face, tracks people (engine.tracker) and searches the collection with each face, as
SearchFacesByImage does; a PersonMatch is written for every sampled face that matches. Segment
tracks are joined across boundaries at assembly (tracker.join_segments), so Person.Index is one
numbering for the whole video.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from facebank.operations import Context, person_tracking
from facebank.operations.celebrities import CELEBRITY_JOBS, celebrity_frame_items, celebrity_orders
from facebank.operations.collections import cosine_floor, face_matches  # SearchFacesByImage's own matching
from facebank.operations.video import DETECTION, PAGE_ITEMS, SEARCH, page_name
from facebank.operations.video_source import VideoUnreadable, describe, open_video
from facebank.storage import CollectionNotFound, JobRecord

if TYPE_CHECKING:
    from facebank.engine.tracker import LinkRule, Tracker

log = logging.getLogger("facebank.video")

MAX_DURATION_MS = 6 * 3600 * 1000  # Rekognition Video's limit for a stored video: 6 hours
MAX_MATCHES_PER_FACE = 100  # FaceMatches of one sampled face (the collection's best, at the threshold)
LINK_SIMILARITY = 1.0  # a detection overlapping a live track continues it unless it matches below this
REID_SIMILARITY = 80.0  # "the same person" across a gap, or a segment boundary without overlap
# A face that continues its track beyond doubt (overlap >= REUSE_IOU with the track's last box, no
# other candidate) reuses the track's FaceMatches for up to EMBED_REFRESH_MS instead of being
# embedded again: embedding is most of a search's cost (bench/video.py), and within a second the
# same tracked face matches the same faces. A new or uncertain face is always embedded.
REUSE_IOU = 0.5
EMBED_REFRESH_MS = 1000
INTERNAL_ERROR = "Internal error analysing the video"
PERSONS = person_tracking.PERSONS
StopCheck = Callable[[], bool]


class JobFailed(Exception):
    """The job cannot complete; the message is user-facing (StatusMessage)."""


class JobInterrupted(Exception):
    """The runtime is stopping: the job stays IN_PROGRESS and resumes where it stopped."""


def segment_name(segment: int) -> str:
    return f"segment-{segment:05d}.json"


def link_rule(ctx: Context, sample_fps: float) -> LinkRule:
    """The tracker's rule at this pack's calibration: similarity thresholds as cosines."""
    from facebank.engine.tracker import MAX_GAP_MS, MIN_IOU, LinkRule

    calibration = ctx.model_pack.calibration
    return LinkRule(
        max_gap_ms=max(MAX_GAP_MS, math.ceil(3000 / sample_fps)),  # two missed samples at least
        min_iou=MIN_IOU,
        link_cosine=calibration.cosine_floor(LINK_SIMILARITY),
        reid_cosine=calibration.cosine_floor(REID_SIMILARITY),
    )


def _fps(job: JobRecord, ctx: Context) -> float:
    return float(job.params.get("sample_fps") or ctx.settings.video_sample_fps)


# --- plan


def plan(job: JobRecord, ctx: Context) -> list[tuple[int, int]]:
    """Probe the video, record its VideoMetadata and split [0, duration) into segments.
    Raises VideoDecodeError / VideoUnreadable / JobFailed (the job fails with their message)."""
    from facebank.engine.video import probe

    if job.params.get("pack") not in (None, ctx.model_pack.name):  # e.g. resumed by a server on another pack
        raise JobFailed(
            f"The job was started with model pack '{job.params['pack']}' and this deployment runs "
            f"'{ctx.model_pack.name}'; start the job again"
        )
    _require_collection(job, ctx)
    with open_video(ctx.s3, job.video["S3Object"]) as source:
        info = probe(source)
    if info.duration_ms > MAX_DURATION_MS:
        raise JobFailed(
            f"The video is {info.duration_ms / 3_600_000:.2f} hours long; the limit for stored videos is 6 hours"
        )
    step = int(job.params.get("segment_s") or ctx.settings.video_segment_s) * 1000
    duration = max(info.duration_ms, 1)
    segments = [(start, min(start + step, duration)) for start in range(0, duration, step)]
    ctx.storage.jobs.plan_job(job.job_id, info.metadata(), len(segments))
    log.info(
        "video job %s (%s): %s, %.1f s, planned in %d segment(s) of %d s",
        job.job_id,
        job.api,
        describe(job.video["S3Object"]),
        info.duration_ms / 1000,
        len(segments),
        step // 1000,
    )
    return segments


# --- job types: one small handler per API (frames -> items, join, sort keys)


class FrameAnalysis(Protocol):
    """One segment's analysis of one job type: the items of each sampled frame, and (tracked
    types) the tracks the segment saw, which assembly joins across segments."""

    tracker: Tracker | None

    def frame(self, timestamp: int, rgb: Any) -> list[dict]: ...


@dataclass(frozen=True)
class JobType:
    """A stored-video API: how a segment's frames become items (``analysis``), whether items carry
    a Person.Index joined across segments (``tracked``), and its result pages' sort orders."""

    api: str
    analysis: Callable[[JobRecord, Context], FrameAnalysis]
    orders: Callable[[list[dict]], dict[str, list[dict]]]
    tracked: bool = False
    collection: bool = False  # the job searches a collection, which must still exist


JOB_TYPES: dict[str, JobType] = {}


def register(job_type: JobType) -> JobType:
    JOB_TYPES[job_type.api] = job_type
    return job_type


def job_type(job: JobRecord) -> JobType:
    return JOB_TYPES[job.api]


def _attributes(job: JobRecord) -> list[str]:
    return ["ALL"] if job.params.get("FaceAttributes") == "ALL" else ["DEFAULT"]


class _Detections:
    """StartFaceDetection: every face of every sampled frame."""

    def __init__(self, job: JobRecord, ctx: Context):
        self.engine, self.attributes = ctx.engine, _attributes(job)
        self.tracker: Tracker | None = None

    def frame(self, timestamp: int, rgb: Any) -> list[dict]:
        return [
            {"Timestamp": timestamp, "Face": face.detail()}
            for face in self.engine.detect(rgb, attributes=self.attributes)
        ]


class _Searches:
    """StartFaceSearch: faces tracked as people, each searched in the collection (a PersonMatch per
    sampled face that matches); a face that continues its track reuses the track's matches."""

    def __init__(self, job: JobRecord, ctx: Context):
        from facebank.engine.tracker import Tracker

        self.job, self.ctx, self.engine = job, ctx, ctx.engine
        self.tracker: Tracker | None = Tracker(link_rule(ctx, _fps(job, ctx)))
        self.track_matches: dict[int, list[dict]] = {}  # each track's FaceMatches when its face was last embedded

    def frame(self, timestamp: int, rgb: Any) -> list[dict]:
        assert self.tracker is not None
        items = []
        faces = self.engine.detect(rgb, attributes=["DEFAULT"])
        search = functools.partial(_search, self.job, self.ctx)
        for face, index, matches in search_tracked(
            self.engine, self.tracker, self.track_matches, timestamp, rgb, faces, search
        ):
            if matches:
                person = {"Index": index, "BoundingBox": face.bounding_box(), "Face": face.detail()}
                items.append({"Timestamp": timestamp, "Person": person, "FaceMatches": matches})
        return items


class _Persons:
    """StartPersonTracking: bodies, then their faces (operations.person_tracking)."""

    def __init__(self, job: JobRecord, ctx: Context):
        from facebank.engine.tracker import Tracker

        self.engine, self.persons = ctx.engine, person_tracking.person_detector(ctx)
        self.tracker: Tracker | None = Tracker(link_rule(ctx, _fps(job, ctx)))

    def frame(self, timestamp: int, rgb: Any) -> list[dict]:
        assert self.tracker is not None
        return person_tracking.frame_items(timestamp, rgb, self.persons, self.engine, self.tracker)


class _Celebrities:
    """StartCelebrityRecognition: one gallery snapshot per segment (not one read per frame)."""

    def __init__(self, job: JobRecord, ctx: Context):
        self.ctx, self.engine, self.attributes = ctx, ctx.engine, _attributes(job)
        self.tracker: Tracker | None = None
        self.gallery = ctx.celebrity_index.current()

    def frame(self, timestamp: int, rgb: Any) -> list[dict]:
        faces = self.engine.detect(rgb, attributes=self.attributes)
        return celebrity_frame_items(timestamp, rgb, faces, self.ctx, self.gallery)


def _detection_order(item: dict) -> tuple:
    box = item["Face"]["BoundingBox"]
    return (item["Timestamp"], box["Left"], box["Top"])


def _person_orders(items: list[dict]) -> dict[str, list[dict]]:
    return {
        "TIMESTAMP": sorted(items, key=lambda i: (i["Timestamp"], i["Person"]["Index"])),
        "INDEX": sorted(items, key=lambda i: (i["Person"]["Index"], i["Timestamp"])),
    }


register(JobType(DETECTION, _Detections, lambda items: {"TIMESTAMP": sorted(items, key=_detection_order)}))
register(JobType(SEARCH, _Searches, _person_orders, tracked=True, collection=True))
register(JobType(PERSONS, _Persons, person_tracking.result_orders, tracked=True))
register(JobType(CELEBRITY_JOBS, _Celebrities, celebrity_orders))


# --- analyse


def analyse_segment(
    job: JobRecord, segment: int, start_ms: int, end_ms: int, ctx: Context, should_stop: StopCheck | None = None
) -> tuple[int, int]:
    """Analyse the sampled frames in [start_ms, end_ms), write ``segment-<k>.json`` and mark the
    segment done; returns (segments done, total). Raises VideoDecodeError / VideoUnreadable."""
    from facebank.engine.video import sample_frames

    _require_collection(job, ctx)
    began = time.monotonic()
    analysis = job_type(job).analysis(job, ctx)
    items: list[dict] = []
    with open_video(ctx.s3, job.video["S3Object"]) as source:
        for timestamp, rgb in sample_frames(source, _fps(job, ctx), start_ms, end_ms):
            if should_stop is not None and should_stop():
                raise JobInterrupted(job.job_id)
            items += analysis.frame(timestamp, rgb)
    tracker = analysis.tracker
    partial = {"items": items, "tracks": [t.to_json() for t in tracker.summaries()] if tracker else []}
    ctx.storage.results.put(job.job_id, segment_name(segment), json.dumps(partial, separators=(",", ":")).encode())
    done, total = ctx.storage.jobs.segment_done(job.job_id, segment)
    log.info(
        "video job %s (%s): segment %d (%.1f-%.1f s) analysed in %.1f s, %d result items; %d of %d segments done",
        job.job_id,
        job.api,
        segment,
        start_ms / 1000,
        end_ms / 1000,
        time.monotonic() - began,
        len(items),
        done,
        total,
    )
    return done, total


def embed_and_track(engine: Any, tracker: Tracker, timestamp: int, rgb: Any, faces: list) -> list[tuple[Any, int, Any]]:
    """(face, track Index, embedding or None) for the faces of one sampled frame: faces that
    continue their track beyond doubt are not embedded again within EMBED_REFRESH_MS (None)."""
    h, w = rgb.shape[:2]
    boxes = [(f.box[0] / w, f.box[1] / h, f.box[2] / w, f.box[3] / h) for f in faces]
    certain = tracker.certain_continuations(timestamp, boxes, REUSE_IOU, EMBED_REFRESH_MS)
    embeddings = [None if known is not None else engine.embed(rgb, f) for f, known in zip(faces, certain, strict=True)]
    indexes = tracker.update(timestamp, boxes, embeddings)
    return list(zip(faces, indexes, embeddings, strict=True))


def search_tracked(
    engine: Any,
    tracker: Tracker,
    track_matches: dict[int, list[dict]],
    timestamp: int,
    rgb: Any,
    faces: list,
    search: Callable[[Any], list[dict]],
) -> list[tuple[Any, int, list[dict]]]:
    """(face, track Index, matches) for the faces of one sampled frame: a face that continues its
    track beyond doubt reuses the track's last matches (``track_matches``, updated here); any
    other face is embedded and searched (``search``: embedding -> matches)."""
    out = []
    for face, index, embedding in embed_and_track(engine, tracker, timestamp, rgb, faces):
        if embedding is None and index in track_matches:
            matches = track_matches[index]
        else:
            matches = search(engine.embed(rgb, face) if embedding is None else embedding)
            track_matches[index] = matches
        out.append((face, index, matches))
    return out


def _require_collection(job: JobRecord, ctx: Context) -> None:
    """A search job's collection still exists (searching a deleted one would find nobody, silently)."""
    if job_type(job).collection and ctx.metadata.get_collection(job.params["CollectionId"]) is None:
        raise CollectionNotFound(job.params["CollectionId"])


def _search(job: JobRecord, ctx: Context, embedding: Any) -> list[dict]:
    return search_collection(
        ctx, job.params["CollectionId"], float(job.params.get("FaceMatchThreshold", 80.0)), embedding
    )


def search_collection(ctx: Context, collection_id: str, threshold: float, embedding: Any) -> list[dict]:
    """FaceMatches of one face's embedding, as SearchFacesByImage finds them (the index searches
    the collection's shards, fanned out when the Context has a shard searcher); stream processors
    search with this too."""
    hits = ctx.index.search_records(collection_id, embedding, MAX_MATCHES_PER_FACE, cosine_floor(ctx, threshold))
    return face_matches(ctx, hits, threshold)


# --- assemble


def assemble(job: JobRecord, ctx: Context) -> int:
    """Join the segments' results into the result pages of every sort order; returns the item count."""
    from facebank.engine.tracker import TrackSummary, join_segments

    kind = job_type(job)
    total = (ctx.storage.jobs.get_job(job.job_id) or job).segments_total
    partials = [json.loads(ctx.storage.results.get(job.job_id, segment_name(k))) for k in range(total)]
    items = []
    if kind.tracked:  # one Person.Index numbering for the whole video
        tracks = [[TrackSummary.from_json(t) for t in p["tracks"]] for p in partials]
        mappings = join_segments(tracks, link_rule(ctx, _fps(job, ctx)))
        for partial, mapping in zip(partials, mappings, strict=True):
            for item in partial["items"]:
                item["Person"]["Index"] = mapping[item["Person"]["Index"]]
                items.append(item)
    else:
        items = [item for partial in partials for item in partial["items"]]
    for sort, ordered in kind.orders(items).items():
        for page in range(math.ceil(len(ordered) / PAGE_ITEMS)):
            chunk = ordered[page * PAGE_ITEMS : (page + 1) * PAGE_ITEMS]
            ctx.storage.results.put(
                job.job_id, page_name(sort, page), json.dumps(chunk, separators=(",", ":")).encode()
            )
    return len(items)


# --- finish


def finish(job: JobRecord, ctx: Context, status: str, message: str | None, result_count: int = 0) -> bool:
    """End the job (once: False if it had already ended) and publish its completion message."""
    if not ctx.storage.jobs.finish_job(job.job_id, status, message, result_count):
        return False
    log.info("video job %s %s%s", job.job_id, status, f": {message}" if message else "")
    if job.notification_channel:
        notify(job, ctx, status)
    return True


def completion_message(job: JobRecord, status: str) -> dict:
    """Rekognition Video's completion message (the SNS Message, as JSON)."""
    obj = job.video["S3Object"]
    message: dict[str, Any] = {"JobId": job.job_id, "Status": status, "API": job.api}
    if job.job_tag:
        message["JobTag"] = job.job_tag
    message["Timestamp"] = int(time.time() * 1000)
    message["Video"] = {"S3ObjectName": obj["Name"], "S3Bucket": obj["Bucket"]}
    return message


# Completion messages that could not be published since this process started (docs/video.md).
failed_notifications = itertools.count(1)


def notify(job: JobRecord, ctx: Context, status: str) -> None:
    """Publish to the job's topic. A publish that fails is logged (a WARNING with a running count
    and the fix) and changes nothing: the job's result stands and Get* serves it, as with
    Rekognition; a client waiting only on the topic's queue never hears of the job."""
    topic = (job.notification_channel or {}).get("SNSTopicArn")
    try:
        ctx.sns.publish(TopicArn=topic, Message=json.dumps(completion_message(job, status)))
    except Exception as exc:
        log.warning(
            "video job %s %s but its completion could not be published to %s (%s: %s); notification "
            "failures since start: %d. The job's result stands: poll Get* with its JobId",
            job.job_id,
            status,
            topic,
            type(exc).__name__,
            exc,
            next(failed_notifications),
            extra={"metric": "NotificationFailed", "job_id": job.job_id, "topic": topic},
        )


# --- the embedded runtime's whole job


def run_job(job_id: str, ctx: Context, should_stop: StopCheck | None = None) -> None:
    """plan -> every segment not yet done -> assemble -> finish. Never leaves the job IN_PROGRESS
    except when ``should_stop`` says the runtime is stopping (it then resumes at the next start)."""
    from facebank.engine.video import VideoDecodeError

    job = ctx.storage.jobs.get_job(job_id)
    if job is None or job.status != "IN_PROGRESS":
        return
    try:
        segments = plan(job, ctx)
        done = (ctx.storage.jobs.get_job(job_id) or job).segments_done  # resumed: skip what is analysed
        for segment, (start, end) in enumerate(segments):
            if segment not in done:
                analyse_segment(job, segment, start, end, ctx, should_stop)
        job = ctx.storage.jobs.get_job(job_id) or job
        finish(job, ctx, "SUCCEEDED", None, assemble(job, ctx))
    except JobInterrupted:
        log.info("video job %s interrupted; it resumes when the server starts again", job_id)
    except (VideoDecodeError, VideoUnreadable, JobFailed) as exc:
        finish(job, ctx, "FAILED", str(exc))
    except CollectionNotFound as exc:
        finish(job, ctx, "FAILED", f"The collection {exc.collection_id} was deleted while the job ran")
    except Exception:
        log.exception("video job %s (%s) failed", job_id, describe(job.video["S3Object"]))
        finish(job, ctx, "FAILED", INTERNAL_ERROR)
