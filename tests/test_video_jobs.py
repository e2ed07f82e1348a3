"""Stored-video face jobs through the protocol (validation, operations, pipeline, embedded storage),
with videos made from shared/faces photos for exact ground truth and S3/SNS/SQS under moto.

Jobs here run synchronously: the Context's submit_video_job records the job and the test runs
``video_jobs.run_job`` itself, so no test waits on a thread (the worker pool is tested in
test_video_server.py through `facebank serve`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import FACES, MODEL, check_shape, dev_people, embedded_ctx, require_faces, serialised_moto
from test_appearance import SHIPPED  # the appearance heads that met their target
from video_clips import Shown, make_clip

from facebank import protocol
from facebank.engine.attributes import FACE_DETAIL
from facebank.operations import Context, video, video_jobs
from facebank.storage import CollectionRecord
from facebank.video_runner import VideoRunner

BUCKET = "videos"
A_SHOWN = (1000, 3000)  # person A on the left
B_SHOWN = (2000, 4000)  # person B on the right
DURATION = 5000


class ApiError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def call(ctx: Context, name: str, **request) -> dict:
    """One request through the wire protocol, its response checked against botocore's model."""
    raw = json.dumps(request, default=lambda b: base64.b64encode(b).decode()).encode()
    wire = protocol.dispatch(name, raw, ctx)
    body = json.loads(wire.body)
    operation = MODEL.operation_model(name)
    if wire.status != 200:
        assert body["__type"] in {e.name for e in operation.error_shapes} | {"ValidationException"}, body
        raise ApiError(body["__type"], body["Message"])
    check_shape(operation.output_shape, body, name)
    return body


@pytest.fixture(scope="module")
def aws() -> Iterator[None]:
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        serialised_moto(mp)
        with mock_aws():
            yield


@pytest.fixture(scope="module")
def people() -> tuple[list[Path], list[Path]]:
    require_faces()
    found = dev_people()
    # Index [1] is the photo indexed into collections: a photo other than the one the clips show ([0]).
    a = [FACES / p for p in found["colin_powell"]]
    b = [FACES / p for p in found["barack_obama"]]
    return [a[0], FACES / "dev/colin_powell/2.jpg"], [b[0], FACES / "dev/barack_obama/2.jpg"]


@pytest.fixture(scope="module")
def s3(aws):
    import boto3

    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def two_people_clip(people, s3) -> str:
    a, b = people
    clip = make_clip([Shown(a[0], 40, 60, *A_SHOWN), Shown(b[0], 360, 60, *B_SHOWN)], DURATION)
    s3.put_object(Bucket=BUCKET, Key="two-people.mp4", Body=clip)
    return "two-people.mp4"


@pytest.fixture
def ctx(model_env, aws, tmp_path) -> Context:
    context = embedded_ctx(tmp_path / "data", video_segment_s=2, video_sample_fps=5.0)  # samples every 200 ms
    context.submitted = []  # type: ignore[attr-defined]
    context.submit_video_job = context.submitted.append  # type: ignore[attr-defined]
    return context


def video_of(key: str, **extra) -> dict:
    return {"S3Object": {"Bucket": BUCKET, "Name": key, **extra}}


def run_all(ctx: Context) -> None:
    while ctx.submitted:  # type: ignore[attr-defined]
        video_jobs.run_job(ctx.submitted.pop(0), ctx)  # type: ignore[attr-defined]


def get_all(ctx: Context, name: str, job_id: str, member: str, **extra) -> tuple[dict, list[dict]]:
    first = response = call(ctx, name, JobId=job_id, **extra)
    items = list(response[member])
    while "NextToken" in response:
        response = call(ctx, name, JobId=job_id, NextToken=response["NextToken"], **extra)
        items += response[member]
    return first, items


def wait_for(condition, timeout: float) -> None:
    """Wait for a condition with a deadline (polling: the job runs in the runner's thread)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def sampled(start: int, end: int, period: int = 200) -> set[int]:
    return set(range(start, end, period))


# --- face detection


def test_face_detection_finds_each_face_where_and_when_it_is_shown(ctx, two_people_clip):
    job_id = call(ctx, "StartFaceDetection", Video=video_of(two_people_clip), JobTag="two-people")["JobId"]
    assert len(job_id) == 32 and int(job_id, 16) >= 0
    pending = call(ctx, "GetFaceDetection", JobId=job_id)
    assert pending["JobStatus"] == "IN_PROGRESS" and pending["Faces"] == []
    run_all(ctx)
    response, faces = get_all(ctx, "GetFaceDetection", job_id, "Faces")
    assert response["JobStatus"] == "SUCCEEDED" and "StatusMessage" not in response
    assert response["JobTag"] == "two-people" and response["Video"] == video_of(two_people_clip)
    assert response["VideoMetadata"] == {
        "Codec": "h264",
        "DurationMillis": DURATION,
        "Format": "QuickTime / MOV",
        "FrameRate": 10.0,
        "FrameHeight": 360,
        "FrameWidth": 640,
        "ColorRange": "LIMITED",
    }
    left = {f["Timestamp"] for f in faces if f["Face"]["BoundingBox"]["Left"] < 0.5}
    right = {f["Timestamp"] for f in faces if f["Face"]["BoundingBox"]["Left"] >= 0.5}
    assert left == sampled(*A_SHOWN) and right == sampled(*B_SHOWN)
    assert len(faces) == len(left) + len(right)  # one face per person per sampled frame, nothing else
    assert [f["Timestamp"] for f in faces] == sorted(f["Timestamp"] for f in faces)
    assert set(faces[0]["Face"]) == {"BoundingBox", "Landmarks", "Pose", "Quality", "Confidence"}


def test_face_attributes_all_gives_what_detect_faces_all_gives(ctx, two_people_clip, people):
    job_id = call(ctx, "StartFaceDetection", Video=video_of(two_people_clip), FaceAttributes="ALL")["JobId"]
    run_all(ctx)
    _, faces = get_all(ctx, "GetFaceDetection", job_id, "Faces")
    still = call(ctx, "DetectFaces", Image={"Bytes": people[0][0].read_bytes()}, Attributes=["ALL"])
    assert faces and all(set(f["Face"]) == set(still["FaceDetails"][0]) for f in faces)
    assert "EyeDirection" in faces[0]["Face"] and len(faces[0]["Face"]["Landmarks"]) == 30
    for f in faces:  # botocore's FaceDetail order, with the appearance heads that met their target
        assert list(f["Face"]) == [k for k in FACE_DETAIL if k in f["Face"]]
        assert set(f["Face"]) >= SHIPPED and all(set(f["Face"][m]) == {"Value", "Confidence"} for m in SHIPPED)


# --- face search


@pytest.fixture
def collection(ctx, people) -> str:
    call(ctx, "CreateCollection", CollectionId="people")
    a, _ = people
    indexed = call(
        ctx, "IndexFaces", CollectionId="people", Image={"Bytes": a[1].read_bytes()}, ExternalImageId="a", MaxFaces=1
    )
    assert len(indexed["FaceRecords"]) == 1
    return "people"


def test_face_search_finds_the_indexed_person_at_the_right_timestamps_and_nobody_else(ctx, collection, two_people_clip):
    job_id = call(ctx, "StartFaceSearch", Video=video_of(two_people_clip), CollectionId=collection)["JobId"]
    run_all(ctx)
    response, persons = get_all(ctx, "GetFaceSearch", job_id, "Persons")
    assert response["JobStatus"] == "SUCCEEDED"
    assert {p["Timestamp"] for p in persons} == sampled(*A_SHOWN)
    assert len(persons) == len(sampled(*A_SHOWN))
    assert all(p["Person"]["BoundingBox"]["Left"] < 0.5 for p in persons)  # A's place, never B's
    assert len({p["Person"]["Index"] for p in persons}) == 1  # one person, one Index throughout
    for p in persons:
        assert [m["Face"]["ExternalImageId"] for m in p["FaceMatches"]] == ["a"]
        assert p["FaceMatches"][0]["Similarity"] >= 80
        assert set(p["Person"]["Face"]) == {"BoundingBox", "Landmarks", "Pose", "Quality", "Confidence"}


def test_person_index_is_stable_per_track_and_kept_on_reentry(ctx, collection, people, s3):
    a, b = people
    # A visible 0-1.6 s, gone 1.6-3.2 s (longer than the tracker's gap), back 3.2-4.8 s at another
    # place; B throughout. Segments of 2 s: A's two visits and B's track cross segment boundaries.
    clip = make_clip(
        [Shown(a[0], 40, 60, 0, 1600), Shown(a[0], 200, 100, 3200, 4800), Shown(b[0], 400, 60, 0, 4800)], 4800
    )
    s3.put_object(Bucket=BUCKET, Key="reentry.mp4", Body=clip)
    call(
        ctx, "IndexFaces", CollectionId=collection, Image={"Bytes": b[1].read_bytes()}, ExternalImageId="b", MaxFaces=1
    )
    job_id = call(ctx, "StartFaceSearch", Video=video_of("reentry.mp4"), CollectionId=collection)["JobId"]
    run_all(ctx)
    _, by_time = get_all(ctx, "GetFaceSearch", job_id, "Persons")
    _, by_index = get_all(ctx, "GetFaceSearch", job_id, "Persons", SortBy="INDEX")
    index_of = {}
    for p in by_time:
        index_of.setdefault(p["FaceMatches"][0]["Face"]["ExternalImageId"], set()).add(p["Person"]["Index"])
    assert len(index_of["a"]) == 1 and len(index_of["b"]) == 1 and index_of["a"] != index_of["b"]
    a_times = {p["Timestamp"] for p in by_time if p["Person"]["Index"] in index_of["a"]}
    assert a_times == sampled(0, 1600) | sampled(3200, 4800)
    assert sorted(by_index, key=lambda p: (p["Person"]["Index"], p["Timestamp"])) == by_index
    assert sorted(by_time, key=lambda p: p["Timestamp"]) == by_time
    assert sorted(map(json.dumps, by_time)) == sorted(map(json.dumps, by_index))


def test_face_search_threshold_100_matches_nobody(ctx, collection, two_people_clip):
    job_id = call(
        ctx, "StartFaceSearch", Video=video_of(two_people_clip), CollectionId=collection, FaceMatchThreshold=100
    )["JobId"]
    run_all(ctx)
    response = call(ctx, "GetFaceSearch", JobId=job_id)
    assert (response["JobStatus"], response["Persons"]) == ("SUCCEEDED", [])


def test_face_search_needs_an_existing_collection_of_this_pack(ctx, two_people_clip):
    with pytest.raises(ApiError) as missing:
        call(ctx, "StartFaceSearch", Video=video_of(two_people_clip), CollectionId="nope")
    assert missing.value.code == "ResourceNotFoundException"
    ctx.metadata.create_collection(
        CollectionRecord("other-pack", "arn:c", "facebank-other", pack="not-this-pack", created=1.0)
    )
    with pytest.raises(ApiError) as other:
        call(ctx, "StartFaceSearch", Video=video_of(two_people_clip), CollectionId="other-pack")
    assert other.value.code == "InvalidParameterException" and "not-this-pack" in other.value.message
    assert ctx.storage.jobs.active_jobs() == [] and ctx.submitted == []


def test_a_collection_deleted_while_the_job_waits_fails_the_job(ctx, collection, two_people_clip):
    job_id = call(ctx, "StartFaceSearch", Video=video_of(two_people_clip), CollectionId=collection)["JobId"]
    call(ctx, "DeleteCollection", CollectionId=collection)
    run_all(ctx)
    response = call(ctx, "GetFaceSearch", JobId=job_id)
    assert response["JobStatus"] == "FAILED" and "deleted" in response["StatusMessage"]


# --- pagination


def test_pages_follow_tokens_bound_to_their_job_and_sort(ctx, collection, two_people_clip):
    detection = call(ctx, "StartFaceDetection", Video=video_of(two_people_clip))["JobId"]
    search = call(ctx, "StartFaceSearch", Video=video_of(two_people_clip), CollectionId=collection)["JobId"]
    run_all(ctx)
    _, everything = get_all(ctx, "GetFaceDetection", detection, "Faces")
    _, paged = get_all(ctx, "GetFaceDetection", detection, "Faces", MaxResults=3)
    assert paged == everything and len(everything) == 20
    page = call(ctx, "GetFaceDetection", JobId=detection, MaxResults=7)
    assert len(page["Faces"]) == 7 and page["Faces"] == everything[:7]
    assert "NextToken" not in call(ctx, "GetFaceDetection", JobId=detection, MaxResults=5000)
    token = page["NextToken"]
    assert call(ctx, "GetFaceDetection", JobId=detection, NextToken=token)["Faces"] == everything[7:]
    with pytest.raises(ApiError) as other_job:
        call(ctx, "GetFaceSearch", JobId=search, NextToken=token)
    assert other_job.value.code == "InvalidPaginationTokenException"
    by_time = call(ctx, "GetFaceSearch", JobId=search, MaxResults=2)
    with pytest.raises(ApiError) as other_sort:
        call(ctx, "GetFaceSearch", JobId=search, NextToken=by_time["NextToken"], SortBy="INDEX")
    assert other_sort.value.code == "InvalidPaginationTokenException"
    for garbage in ("x", "eyJqIjoiMDAwMDAwMDAiLCJvIjotMSwicyI6IlRJTUVTVEFNUCJ9", "!!!!"):
        with pytest.raises(ApiError) as malformed:
            call(ctx, "GetFaceDetection", JobId=detection, NextToken=garbage)
        assert malformed.value.code == "InvalidPaginationTokenException"


def test_results_span_stored_pages(ctx, two_people_clip, monkeypatch):
    monkeypatch.setattr(video, "PAGE_ITEMS", 4)
    monkeypatch.setattr(video_jobs, "PAGE_ITEMS", 4)
    job_id = call(ctx, "StartFaceDetection", Video=video_of(two_people_clip))["JobId"]
    run_all(ctx)
    _, all_at_once = get_all(ctx, "GetFaceDetection", job_id, "Faces")
    _, in_threes = get_all(ctx, "GetFaceDetection", job_id, "Faces", MaxResults=3)
    assert len(all_at_once) == 20 and in_threes == all_at_once
    assert [f["Timestamp"] for f in all_at_once] == sorted(f["Timestamp"] for f in all_at_once)


# --- bad input


def test_unknown_job_id_is_resource_not_found(ctx, collection, two_people_clip):
    for name in ("GetFaceDetection", "GetFaceSearch"):
        with pytest.raises(ApiError) as unknown:
            call(ctx, name, JobId="0" * 32)
        assert unknown.value.code == "ResourceNotFoundException"
    search = call(ctx, "StartFaceSearch", Video=video_of(two_people_clip), CollectionId=collection)["JobId"]
    with pytest.raises(ApiError) as other_kind:
        call(ctx, "GetFaceDetection", JobId=search)
    assert other_kind.value.code == "ResourceNotFoundException"


def test_missing_bucket_key_or_version_is_invalid_s3_object(ctx, s3, two_people_clip):
    for target in (
        {"S3Object": {"Bucket": "no-such-bucket", "Name": two_people_clip}},
        video_of("no-such-key.mp4"),
        video_of(two_people_clip, Version="no-such-version"),
    ):
        with pytest.raises(ApiError) as error:
            call(ctx, "StartFaceDetection", Video=target)
        assert error.value.code == "InvalidS3ObjectException", target
    with pytest.raises(ApiError) as no_object:
        call(ctx, "StartFaceDetection", Video={})
    assert no_object.value.code == "InvalidParameterException"
    assert ctx.storage.jobs.active_jobs() == []


def test_video_over_the_size_limit(ctx, two_people_clip, monkeypatch):
    monkeypatch.setattr(video, "MAX_VIDEO_BYTES", 1000)
    with pytest.raises(ApiError) as error:
        call(ctx, "StartFaceDetection", Video=video_of(two_people_clip))
    assert error.value.code == "VideoTooLargeException"


def test_video_over_the_duration_limit_fails_the_job(ctx, two_people_clip, monkeypatch):
    monkeypatch.setattr(video_jobs, "MAX_DURATION_MS", 4000)
    job_id = call(ctx, "StartFaceDetection", Video=video_of(two_people_clip))["JobId"]
    run_all(ctx)
    response = call(ctx, "GetFaceDetection", JobId=job_id)
    assert response["JobStatus"] == "FAILED" and "6 hours" in response["StatusMessage"]
    assert response["Faces"] == []


def _failed_message(ctx: Context, s3, key: str, body: bytes) -> str:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    job_id = call(ctx, "StartFaceDetection", Video=video_of(key))["JobId"]
    run_all(ctx)
    response = call(ctx, "GetFaceDetection", JobId=job_id)
    assert response["JobStatus"] == "FAILED", response
    assert ctx.storage.jobs.active_jobs() == []
    return response["StatusMessage"]


def test_a_file_that_is_not_a_video_fails_with_a_message(ctx, s3, people):
    assert "Unsupported format" in _failed_message(ctx, s3, "photo.mp4", people[0][0].read_bytes())
    assert "not a video" in _failed_message(ctx, s3, "noise.mp4", bytes(range(256)) * 64)


def test_a_truncated_video_fails_with_a_message(ctx, s3, people):
    # PyAV writes the MP4 index (moov) last, as most encoders do: an upload cut short has none.
    clip = make_clip([Shown(people[0][0], 40, 60, 0, 8000)], 8000)
    assert "not a video that can be read" in _failed_message(ctx, s3, "cut.mp4", clip[: len(clip) // 2])


def test_a_video_cut_after_its_index_fails_as_truncated(ctx, s3, people, tmp_path):
    import av

    clip = make_clip([Shown(people[0][0], 40, 60, 0, 8000)], 8000, container_format="mp4")
    # mp4 as PyAV writes it puts the index (moov) last; move it first (faststart, which needs a
    # real file) so the cut file still probes, then cut the frames' data short.
    (tmp_path / "in.mp4").write_bytes(clip)
    with (
        av.open(str(tmp_path / "in.mp4")) as inp,
        av.open(str(tmp_path / "out.mp4"), "w", options={"movflags": "faststart"}) as dst,
    ):
        stream = dst.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    faststart = (tmp_path / "out.mp4").read_bytes()
    assert faststart.find(b"moov") < faststart.find(b"mdat")
    message = _failed_message(ctx, s3, "cut-faststart.mp4", faststart[: int(len(faststart) * 0.6)])
    assert "truncated" in message or "could not be decoded" in message


def test_a_codec_rekognition_does_not_take_fails_with_a_message(ctx, s3, people):
    clip = make_clip([Shown(people[0][0], 40, 60, 0, 1000)], 1000, codec="mpeg4")
    assert "Unsupported codec" in _failed_message(ctx, s3, "mpeg4.mp4", clip)


def test_an_empty_object_is_refused_at_start(ctx, s3):
    s3.put_object(Bucket=BUCKET, Key="empty.mp4", Body=b"")
    with pytest.raises(ApiError) as error:
        call(ctx, "StartFaceDetection", Video=video_of("empty.mp4"))
    assert error.value.code == "InvalidParameterException"


def test_a_video_deleted_before_it_is_analysed_fails_the_job(ctx, s3, two_people_clip):
    s3.copy_object(Bucket=BUCKET, Key="gone.mp4", CopySource={"Bucket": BUCKET, "Key": two_people_clip})
    job_id = call(ctx, "StartFaceDetection", Video=video_of("gone.mp4"))["JobId"]
    s3.delete_object(Bucket=BUCKET, Key="gone.mp4")
    run_all(ctx)
    response = call(ctx, "GetFaceDetection", JobId=job_id)
    assert response["JobStatus"] == "FAILED" and "Unable to read the video" in response["StatusMessage"]


def test_notification_topic_outside_the_allowed_set(ctx, two_people_clip):
    ctx.settings = dataclasses.replace(ctx.settings, notification_topics=("arn:aws:sns:us-east-1:111122223333:*",))
    channel = {"SNSTopicArn": "arn:aws:sns:us-east-1:444455556666:t", "RoleArn": "arn:aws:iam::444455556666:role/r"}
    with pytest.raises(ApiError) as error:
        call(ctx, "StartFaceDetection", Video=video_of(two_people_clip), NotificationChannel=channel)
    assert error.value.code == "InvalidParameterException"
    channel["SNSTopicArn"] = "arn:aws:sns:us-east-1:111122223333:t"
    assert call(ctx, "StartFaceDetection", Video=video_of(two_people_clip), NotificationChannel=channel)["JobId"]


# --- idempotency and the limit


def test_client_request_token(ctx, s3, two_people_clip):
    first = call(ctx, "StartFaceDetection", Video=video_of(two_people_clip), ClientRequestToken="t-1")
    again = call(ctx, "StartFaceDetection", Video=video_of(two_people_clip), ClientRequestToken="t-1")
    assert first == again and len(ctx.storage.jobs.active_jobs()) == 1 and ctx.submitted == [first["JobId"]]
    for other in (
        {"Video": video_of(two_people_clip), "FaceAttributes": "ALL"},
        {"Video": video_of(two_people_clip), "JobTag": "x"},
    ):
        with pytest.raises(ApiError) as mismatch:
            call(ctx, "StartFaceDetection", ClientRequestToken="t-1", **other)
        assert mismatch.value.code == "IdempotentParameterMismatchException"
    # A request that failed leaves its token free: the retry after the upload runs.
    with pytest.raises(ApiError):
        call(ctx, "StartFaceDetection", Video=video_of("later.mp4"), ClientRequestToken="t-2")
    s3.copy_object(Bucket=BUCKET, Key="later.mp4", CopySource={"Bucket": BUCKET, "Key": two_people_clip})
    later = call(ctx, "StartFaceDetection", Video=video_of("later.mp4"), ClientRequestToken="t-2")
    assert later["JobId"] != first["JobId"] and len(ctx.storage.jobs.active_jobs()) == 2


def test_concurrent_jobs_above_the_limit(ctx, two_people_clip):
    ctx.settings = dataclasses.replace(ctx.settings, max_video_jobs=2)
    ids = [call(ctx, "StartFaceDetection", Video=video_of(two_people_clip))["JobId"] for _ in range(2)]
    with pytest.raises(ApiError) as error:
        call(ctx, "StartFaceDetection", Video=video_of(two_people_clip))
    assert error.value.code == "LimitExceededException"
    assert len(ctx.storage.jobs.active_jobs()) == 2
    video_jobs.run_job(ctx.submitted.pop(0), ctx)
    assert call(ctx, "GetFaceDetection", JobId=ids[0])["JobStatus"] == "SUCCEEDED"
    assert call(ctx, "StartFaceDetection", Video=video_of(two_people_clip))["JobId"]  # a slot is free again


def test_a_job_that_cannot_be_queued_does_not_stay_in_progress(ctx, two_people_clip):
    def refuse(job_id: str) -> None:
        raise RuntimeError("queue unavailable")

    ctx.submit_video_job = refuse
    with pytest.raises(ApiError) as error:
        call(ctx, "StartFaceDetection", Video=video_of(two_people_clip))
    assert error.value.code == "InternalServerError"
    assert ctx.storage.jobs.active_jobs() == []


# --- restarts


def test_an_interrupted_job_resumes_after_a_restart(ctx, model_env, tmp_path, collection, people, s3):
    a, b = people
    clip = make_clip([Shown(a[0], 40, 60, 500, 5500), Shown(b[0], 360, 60, 0, 6000)], 6000)
    s3.put_object(Bucket=BUCKET, Key="long.mp4", Body=clip)
    straight = call(ctx, "StartFaceSearch", Video=video_of("long.mp4"), CollectionId=collection)["JobId"]
    interrupted = call(ctx, "StartFaceSearch", Video=video_of("long.mp4"), CollectionId=collection)["JobId"]
    video_jobs.run_job(ctx.submitted.pop(0), ctx)
    frames = iter(range(10**6))
    video_jobs.run_job(ctx.submitted.pop(0), ctx, should_stop=lambda: next(frames) >= 14)  # mid second segment
    job = ctx.storage.jobs.get_job(interrupted)
    assert job.status == "IN_PROGRESS" and job.segments_done == frozenset({0}) and job.segments_total == 3

    restarted = embedded_ctx(tmp_path / "data", video_segment_s=2, video_sample_fps=5.0)  # serve starting again
    runner = VideoRunner(restarted, workers=1)
    restarted.submit_video_job = runner.submit
    assert runner.resume() == 1
    try:
        wait_for(lambda: restarted.storage.jobs.get_job(interrupted).status != "IN_PROGRESS", 120)
    finally:
        runner.stop()
    assert restarted.storage.jobs.get_job(interrupted).status == "SUCCEEDED"
    _, want = get_all(ctx, "GetFaceSearch", straight, "Persons")
    _, got = get_all(restarted, "GetFaceSearch", interrupted, "Persons")
    assert got == want and got


def test_a_job_of_another_pack_fails_when_resumed(ctx, two_people_clip):
    job_id = call(ctx, "StartFaceDetection", Video=video_of(two_people_clip))["JobId"]
    record = ctx.storage.jobs.get_job(job_id)
    ctx.settings = dataclasses.replace(ctx.settings, pack="mobile" if record.params["pack"] != "mobile" else "open")
    run_all(ctx)
    response = call(ctx, "GetFaceDetection", JobId=job_id)
    assert response["JobStatus"] == "FAILED" and "model pack" in response["StatusMessage"]


# --- notifications


def test_completion_is_published_to_the_topic(ctx, two_people_clip, s3):
    import boto3

    sns, sqs = boto3.client("sns", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="video-done")["TopicArn"]
    queue = sqs.create_queue(QueueName="video-done")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    channel = {"SNSTopicArn": topic, "RoleArn": "arn:aws:iam::123456789012:role/rekognition-publish"}
    job_id = call(
        ctx, "StartFaceDetection", Video=video_of(two_people_clip), NotificationChannel=channel, JobTag="tagged"
    )["JobId"]
    bad = s3.put_object(Bucket=BUCKET, Key="bad.mp4", Body=b"not a video at all")
    assert bad
    failed_id = call(ctx, "StartFaceDetection", Video=video_of("bad.mp4"), NotificationChannel=channel)["JobId"]
    run_all(ctx)
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    by_job = {m["JobId"]: m for m in (json.loads(json.loads(raw["Body"])["Message"]) for raw in messages)}
    done = by_job[job_id]
    assert set(done) == {"JobId", "Status", "API", "JobTag", "Timestamp", "Video"}
    assert (done["Status"], done["API"], done["JobTag"]) == ("SUCCEEDED", "StartFaceDetection", "tagged")
    assert done["Video"] == {"S3ObjectName": two_people_clip, "S3Bucket": BUCKET}
    assert isinstance(done["Timestamp"], int) and done["Timestamp"] > 1_700_000_000_000
    assert by_job[failed_id]["Status"] == "FAILED" and "JobTag" not in by_job[failed_id]


def test_a_failed_publish_does_not_change_the_result_and_is_logged_with_a_count(ctx, two_people_clip, caplog):
    channel = {
        "SNSTopicArn": "arn:aws:sns:us-east-1:123456789012:no-such-topic",
        "RoleArn": "arn:aws:iam::123456789012:role/r",
    }
    job_id = call(ctx, "StartFaceDetection", Video=video_of(two_people_clip), NotificationChannel=channel)["JobId"]
    before = next(video_jobs.failed_notifications)  # the running count (this takes one number)
    with caplog.at_level(logging.WARNING, logger="facebank.video"):
        run_all(ctx)
    assert call(ctx, "GetFaceDetection", JobId=job_id)["JobStatus"] == "SUCCEEDED"
    # Visible: a WARNING naming the job, the topic, the running count and what to do instead.
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING and job_id in r.getMessage()]
    message = warning.getMessage()
    assert "could not be published to arn:aws:sns:us-east-1:123456789012:no-such-topic" in message
    assert f"notification failures since start: {before + 1}" in message and "poll Get*" in message
    assert warning.metric == "NotificationFailed"  # type: ignore[attr-defined]  # a field for a metric filter


def test_each_segment_is_logged_and_progress_is_in_the_status_message(ctx, two_people_clip, caplog):
    job_id = call(ctx, "StartFaceDetection", Video=video_of(two_people_clip))["JobId"]
    job = ctx.storage.jobs.get_job(job_id)
    segments = video_jobs.plan(job, ctx)  # 5 s at 2 s per segment: 3 segments
    assert len(segments) == 3
    assert call(ctx, "GetFaceDetection", JobId=job_id)["StatusMessage"] == "0 of 3 segments analysed"
    with caplog.at_level(logging.INFO, logger="facebank.video"):
        caplog.clear()  # only what follows (an earlier test may have set the root logger to INFO)
        video_jobs.plan(job, ctx)  # again: planning is idempotent
        video_jobs.analyse_segment(job, 0, *segments[0], ctx)
    pending = call(ctx, "GetFaceDetection", JobId=job_id)
    assert (pending["JobStatus"], pending["StatusMessage"]) == ("IN_PROGRESS", "1 of 3 segments analysed")
    planned, analysed = [r.getMessage() for r in caplog.records if job_id in r.getMessage()]
    assert planned.endswith(f"s3://{BUCKET}/{two_people_clip}, 5.0 s, planned in 3 segment(s) of 2 s"), planned
    assert "segment 0 (0.0-2.0 s) analysed in" in analysed and analysed.endswith("1 of 3 segments done")
    run_all(ctx)
    done = call(ctx, "GetFaceDetection", JobId=job_id)
    assert done["JobStatus"] == "SUCCEEDED" and "StatusMessage" not in done
