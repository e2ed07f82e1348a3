"""Stored-video person tracking (StartPersonTracking / GetPersonTracking, issue 15) through the protocol.

Jobs run synchronously, as in test_video_jobs.py: Start records the job, the test runs
``video_jobs.run_job`` itself. The clips are the real ones of shared/videos (their labels in
tests/data/video_person_labels.tsv, from shared/videos/MANIFEST.tsv); S3 and SNS are moto, in process.
Segments are 2 s long, so every track longer than that is joined across segment boundaries.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from support import SHARED, embedded_ctx, serialised_moto
from test_persons import people_in_view
from test_video_jobs import ApiError, call, get_all, run_all

from facebank import models
from facebank.engine.packs import PERSON_DETECTOR
from facebank.operations import Context

BUCKET = "videos"
VIDEOS = SHARED / "videos"
VISITS_S = [(8, 20), (23, 44), (50, 70), (74, 86), (92, 118), (125, 137)]  # one-by-one, labelled +-2 s
LABEL_SLACK_S = 2.0
CLASSROOM = "intel_classroom.mp4"
HEAD_POSE = "intel_head-pose-face-detection-female-and-male.mp4"
ONE_BY_ONE = "intel_one-by-one-person-detection.mp4"
CAR = "intel_car-detection.mp4"
ASL = "intel_asl-book.mp4"
DEFAULT_FACE = {"BoundingBox", "Landmarks", "Pose", "Quality", "Confidence"}


@pytest.fixture(scope="module")
def aws() -> Iterator[None]:
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        serialised_moto(mp)
        with mock_aws():
            yield


@pytest.fixture(scope="module")
def s3(aws, model_env):
    import boto3

    if not VIDEOS.is_dir():
        pytest.skip(f"the shared videos are not at {VIDEOS} (set FACEBANK_SHARED to the shared/ folder)")
    pytest.importorskip("av", reason="PyAV decodes the videos")
    from facebank.settings import Settings

    settings = Settings.from_env(model_env)
    try:
        models.fetch([PERSON_DETECTOR], model_dir=settings.resolved_model_dir, mirror=settings.model_mirror)
    except models.ModelError as exc:
        pytest.skip(f"MoveNet unavailable (no mirror at {settings.model_mirror}, offline): {exc}")
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    for name in (CLASSROOM, HEAD_POSE, ONE_BY_ONE, CAR, ASL):
        client.put_object(Bucket=BUCKET, Key=name, Body=(VIDEOS / name).read_bytes())
    return client


@pytest.fixture
def ctx(s3, tmp_path) -> Context:
    context = embedded_ctx(tmp_path / "data", video_segment_s=2, video_sample_fps=5.0)
    context.submitted = []  # type: ignore[attr-defined]
    context.submit_video_job = context.submitted.append  # type: ignore[attr-defined]
    return context


def video_of(key: str) -> dict:
    return {"S3Object": {"Bucket": BUCKET, "Name": key}}


def track(ctx: Context, key: str, **extra) -> tuple[dict, list[dict]]:
    job_id = call(ctx, "StartPersonTracking", Video=video_of(key), **extra)["JobId"]
    run_all(ctx)
    return get_all(ctx, "GetPersonTracking", job_id, "Persons")


def spans(persons: list[dict]) -> dict[int, tuple[int, int]]:
    """First and last Timestamp of each Index."""
    out: dict[int, tuple[int, int]] = {}
    for p in persons:
        first, last = out.get(p["Person"]["Index"], (p["Timestamp"], p["Timestamp"]))
        out[p["Person"]["Index"]] = (min(first, p["Timestamp"]), max(last, p["Timestamp"]))
    return out


def count_scores(video: str, persons: list[dict], timestamps: set[int]) -> tuple[float, float]:
    """Per-frame person-count recall and precision of the job's items against the labels."""
    found: dict[int, int] = {}
    for p in persons:
        found[p["Timestamp"]] = found.get(p["Timestamp"], 0) + 1
    matched = true = reported = 0
    for ts in timestamps:
        expected = people_in_view(video, ts / 1000)
        if expected is None:
            continue
        matched += min(expected, found.get(ts, 0))
        true += expected
        reported += found.get(ts, 0)
    return (matched / true if true else 1.0), (matched / reported if reported else 1.0)


def sampled_timestamps(video: str) -> set[int]:
    from facebank.engine.video import sample_frames

    with open(VIDEOS / video, "rb") as f:
        return {ts for ts, _ in sample_frames(f, 5.0)}


# --- the labelled clips


def test_two_people_facing_the_camera_are_two_indexes_with_their_faces(ctx):
    response, persons = track(ctx, HEAD_POSE, JobTag="head-pose")
    assert response["JobStatus"] == "SUCCEEDED" and response["JobTag"] == "head-pose"
    assert response["Video"] == video_of(HEAD_POSE)
    assert response["VideoMetadata"]["FrameWidth"] == 480 and response["VideoMetadata"]["DurationMillis"] > 4000
    timestamps = sampled_timestamps(HEAD_POSE)
    assert spans(persons).keys() == {0, 1}  # one Index each, joined across the 2 s segments
    assert {p["Timestamp"] for p in persons} == timestamps  # both, in every sampled frame
    assert len(persons) == 2 * len(timestamps)
    assert count_scores(HEAD_POSE, persons, timestamps) == (1.0, 1.0)
    # The two stand side by side and keep their side: each Index keeps to its half of the frame.
    for index in (0, 1):
        centres = [
            p["Person"]["BoundingBox"]["Left"] + p["Person"]["BoundingBox"]["Width"] / 2
            for p in persons
            if p["Person"]["Index"] == index
        ]
        assert max(centres) < 0.5 or min(centres) > 0.5, centres
    for p in persons:  # faces visible in every frame: each person's own face, inside the body box
        box, face = p["Person"]["BoundingBox"], p["Person"]["Face"]
        assert set(face) == DEFAULT_FACE
        centre_x = face["BoundingBox"]["Left"] + face["BoundingBox"]["Width"] / 2
        assert box["Left"] <= centre_x <= box["Left"] + box["Width"]
        assert 0 < box["Width"] <= 1 and 0 < box["Height"] <= 1 and box["Left"] >= 0 and box["Top"] >= 0


def test_four_seated_people_are_four_indexes(ctx):
    response, persons = track(ctx, CLASSROOM)
    timestamps = sampled_timestamps(CLASSROOM)
    assert response["JobStatus"] == "SUCCEEDED" and spans(persons).keys() == {0, 1, 2, 3}
    assert count_scores(CLASSROOM, persons, timestamps) == (1.0, 1.0)
    assert sum("Face" in p["Person"] for p in persons) >= 0.9 * len(persons)  # small faces, mostly found


def test_one_signer_is_one_index(ctx):
    _, persons = track(ctx, ASL)
    assert spans(persons).keys() == {0}
    assert count_scores(ASL, persons, sampled_timestamps(ASL)) == (1.0, 1.0)
    assert all(set(p["Person"]["Face"]) == DEFAULT_FACE for p in persons)


@pytest.mark.slow  # 30 s of 768 x 432 video
def test_nobody_on_the_car_video(ctx):
    response, persons = track(ctx, CAR)
    assert (response["JobStatus"], persons) == ("SUCCEEDED", [])
    assert "NextToken" not in response


@pytest.mark.slow  # 139 s of 768 x 432 video, about 700 sampled frames
def test_each_visit_is_one_index_and_nobody_is_seen_between_visits(ctx):
    """Six people come one at a time, mostly seen from behind (faces in about 13 % of frames)."""
    response, persons = track(ctx, ONE_BY_ONE)
    assert response["JobStatus"] == "SUCCEEDED"
    by_index = spans(persons)
    visit_of = {}
    for index, (first, last) in by_index.items():
        inside = [
            v
            for v, (start, end) in enumerate(VISITS_S)
            if start - LABEL_SLACK_S <= first / 1000 and last / 1000 <= end + LABEL_SLACK_S
        ]
        assert len(inside) == 1, f"Index {index} seen {first}-{last} ms, outside every single visit"
        visit_of[index] = inside[0]
    assert sorted(visit_of.values()) == list(range(len(VISITS_S)))  # every visit found, one Index each
    for p in persons:  # never two at once
        assert sum(q["Timestamp"] == p["Timestamp"] for q in persons) == 1
    recall, precision = count_scores(ONE_BY_ONE, persons, sampled_timestamps(ONE_BY_ONE))
    assert recall >= 0.99 and precision >= 0.99, (recall, precision)
    with_face = sum("Face" in p["Person"] for p in persons)
    assert 0 < with_face < len(persons) / 2  # seen mostly from behind: a face only now and then


# --- sorting, pages, job semantics


def test_index_order_puts_each_persons_most_confident_detections_first():
    from facebank.operations.person_tracking import SCORE, result_orders

    def item(ts: int, index: int, score: float) -> dict:
        return {"Timestamp": ts, "Person": {"Index": index, "BoundingBox": {}}, SCORE: score}

    items = [item(0, 1, 0.5), item(200, 0, 0.4), item(0, 0, 0.9), item(200, 1, 0.7), item(400, 0, 0.4)]
    orders = result_orders(items)
    assert [(i["Timestamp"], i["Person"]["Index"]) for i in orders["TIMESTAMP"]] == [
        (0, 0),
        (0, 1),
        (200, 0),
        (200, 1),
        (400, 0),
    ]
    assert [(i["Timestamp"], i["Person"]["Index"]) for i in orders["INDEX"]] == [
        (0, 0),
        (200, 0),
        (400, 0),
        (200, 1),
        (0, 1),
    ]  # Index 0: 0.9, then the two 0.4 by time; Index 1: 0.7 before 0.5
    assert all(SCORE not in i for order in orders.values() for i in order)  # not in the response


def test_sort_by_index_and_pages(ctx):
    job_id = call(ctx, "StartPersonTracking", Video=video_of(CLASSROOM))["JobId"]
    pending = call(ctx, "GetPersonTracking", JobId=job_id)
    assert pending["JobStatus"] == "IN_PROGRESS" and pending["Persons"] == []
    run_all(ctx)
    _, by_time = get_all(ctx, "GetPersonTracking", job_id, "Persons")
    _, by_index = get_all(ctx, "GetPersonTracking", job_id, "Persons", SortBy="INDEX")
    _, paged = get_all(ctx, "GetPersonTracking", job_id, "Persons", SortBy="INDEX", MaxResults=5)
    assert by_time == sorted(by_time, key=lambda p: (p["Timestamp"], p["Person"]["Index"]))
    # INDEX: by Index, each person's items by detection confidence (not a member of the response)
    assert [p["Person"]["Index"] for p in by_index] == sorted(p["Person"]["Index"] for p in by_index)
    assert paged == by_index and len(by_index) == 4 * len(sampled_timestamps(CLASSROOM))
    assert sorted(map(json.dumps, by_time)) == sorted(map(json.dumps, by_index))
    first = call(ctx, "GetPersonTracking", JobId=job_id, MaxResults=5)
    with pytest.raises(ApiError) as other_sort:
        call(ctx, "GetPersonTracking", JobId=job_id, NextToken=first["NextToken"], SortBy="INDEX")
    assert other_sort.value.code == "InvalidPaginationTokenException"


def test_unknown_or_other_kind_of_job_is_resource_not_found(ctx):
    with pytest.raises(ApiError) as unknown:
        call(ctx, "GetPersonTracking", JobId="0" * 32)
    assert unknown.value.code == "ResourceNotFoundException"
    faces_job = call(ctx, "StartFaceDetection", Video=video_of(CLASSROOM))["JobId"]
    persons_job = call(ctx, "StartPersonTracking", Video=video_of(CLASSROOM))["JobId"]
    for name, job_id in (("GetPersonTracking", faces_job), ("GetFaceDetection", persons_job)):
        with pytest.raises(ApiError) as other_kind:
            call(ctx, name, JobId=job_id)
        assert other_kind.value.code == "ResourceNotFoundException"


def test_bad_input_is_refused_at_start(ctx):
    with pytest.raises(ApiError) as missing:
        call(ctx, "StartPersonTracking", Video=video_of("no-such-video.mp4"))
    assert missing.value.code == "InvalidS3ObjectException"
    with pytest.raises(ApiError) as role:
        channel = {"SNSTopicArn": "arn:aws:sns:us-east-1:123456789012:t", "RoleArn": "not-a-role"}
        call(ctx, "StartPersonTracking", Video=video_of(CLASSROOM), NotificationChannel=channel)
    assert role.value.code == "ValidationException"  # botocore's RoleArn pattern, as Rekognition
    with pytest.raises(ApiError) as sort:
        call(ctx, "GetPersonTracking", JobId="0" * 32, SortBy="NAME")
    assert sort.value.code == "ValidationException"
    assert ctx.storage.jobs.active_jobs() == []


def test_client_request_token_gives_the_same_job(ctx):
    first = call(ctx, "StartPersonTracking", Video=video_of(CLASSROOM), ClientRequestToken="tok-1")["JobId"]
    again = call(ctx, "StartPersonTracking", Video=video_of(CLASSROOM), ClientRequestToken="tok-1")["JobId"]
    assert first == again and len(ctx.submitted) == 1  # type: ignore[attr-defined]
    with pytest.raises(ApiError) as mismatch:
        call(ctx, "StartPersonTracking", Video=video_of(HEAD_POSE), ClientRequestToken="tok-1")
    assert mismatch.value.code == "IdempotentParameterMismatchException"


def test_a_file_that_is_not_a_video_fails_the_job_with_a_message(ctx, s3):
    s3.put_object(Bucket=BUCKET, Key="not-a-video.mp4", Body=b"these bytes are no video")
    response, persons = track(ctx, "not-a-video.mp4")
    assert response["JobStatus"] == "FAILED" and response["StatusMessage"] and persons == []


def test_completion_is_published_to_the_topic(ctx):
    import boto3

    sns, sqs = boto3.client("sns", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="persons-done")["TopicArn"]
    queue = sqs.create_queue(QueueName="persons-done")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    channel = {"SNSTopicArn": topic, "RoleArn": "arn:aws:iam::123456789012:role/rekognition-publish"}
    response, _ = track(ctx, CLASSROOM, NotificationChannel=channel, JobTag="people")
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    (done,) = (json.loads(json.loads(m["Body"])["Message"]) for m in messages)
    assert (done["JobId"], done["Status"], done["API"]) == (response["JobId"], "SUCCEEDED", "StartPersonTracking")
    assert done["JobTag"] == "people" and done["Video"] == {"S3ObjectName": CLASSROOM, "S3Bucket": BUCKET}
