"""StartPersonTracking / GetPersonTracking on the AWS pipeline, in this process on moto
(test_aws_video's harness: Start*/Get* through their Lambda handlers with API Gateway events, the
video worker pumped from the moto queues with SQS events), on a real clip of shared/videos; the
completion message arrives through SNS, and every AWS call is checked against the function's
synthesised IAM policy. The worker finds MoveNet in its model dir as it does in the model layer
(layers/build.py models ships it; tests/test_infra.py checks the built layer)."""

from __future__ import annotations

import pytest
from test_aws_video import VIDEO_BUCKET, get_all, video_aws  # noqa: F401 - video_aws is a fixture
from test_person_tracking import DEFAULT_FACE, HEAD_POSE, VIDEOS, count_scores, spans

from facebank import models
from facebank.engine.packs import PERSON_DETECTOR

SEGMENT_S = 2  # the clip is longer than two segments: tracks are joined across the boundaries


@pytest.fixture(scope="module")
def person_env(video_aws, model_env):  # noqa: F811 - the imported fixture
    if not VIDEOS.is_dir():
        pytest.skip(f"the shared videos are not at {VIDEOS} (set FACEBANK_SHARED to the shared/ folder)")
    pytest.importorskip("av", reason="PyAV decodes the videos")
    from facebank.settings import Settings

    settings = Settings.from_env(model_env)
    try:
        models.fetch([PERSON_DETECTOR], model_dir=settings.resolved_model_dir, mirror=settings.model_mirror)
    except models.ModelError as exc:
        pytest.skip(f"MoveNet unavailable (no mirror at {settings.model_mirror}, offline): {exc}")
    return video_aws


def sampled_timestamps(fps: float) -> set[int]:
    """The frames the job samples at its recorded rate (the default, 4 fps, unless pinned)."""
    from facebank.engine.video import sample_frames

    with open(VIDEOS / HEAD_POSE, "rb") as f:
        return {ts for ts, _ in sample_frames(f, fps)}


def test_person_tracking_job_through_the_functions_and_the_worker(person_env):
    env = person_env
    video = env.put_video(f"persons/{HEAD_POSE}", (VIDEOS / HEAD_POSE).read_bytes())
    request = {"Video": video, "NotificationChannel": env.channel(), "JobTag": "persons-1"}
    with env.configured(FACEBANK_VIDEO_SEGMENT_S=str(SEGMENT_S)):
        job_id = env.start("StartPersonTracking", request)
        status, pending = env.api("GetPersonTracking", {"JobId": job_id})
        assert status == 200 and pending["JobStatus"] == "IN_PROGRESS" and pending["Persons"] == []
        [job] = env.pump(job_id).values()
    assert job.status == "SUCCEEDED", job.status_message
    assert job.segments_total >= 3  # > 4 s of video in 2 s segments
    segments = sorted(d.message["segment"] for d in env.steps(job_id) if d.message["type"] == "segment")
    assert segments == list(range(job.segments_total))

    first, persons = get_all(env, "GetPersonTracking", job_id, "Persons")
    assert first["JobStatus"] == "SUCCEEDED" and first["JobTag"] == "persons-1" and first["Video"] == video
    assert first["VideoMetadata"]["FrameWidth"] == 480 and first["VideoMetadata"]["DurationMillis"] > 4000
    timestamps = sampled_timestamps(job.params["sample_fps"])
    # Two people side by side throughout: one Index each across every segment, both in every sampled frame.
    assert spans(persons).keys() == {0, 1}
    assert {p["Timestamp"] for p in persons} == timestamps and len(persons) == 2 * len(timestamps)
    assert count_scores(HEAD_POSE, persons, timestamps) == (1.0, 1.0)
    assert all(set(p["Person"]["Face"]) == DEFAULT_FACE for p in persons)
    assert [p["Timestamp"] for p in persons] == sorted(p["Timestamp"] for p in persons)
    _, by_index = get_all(env, "GetPersonTracking", job_id, "Persons", SortBy="INDEX")
    indexes = [p["Person"]["Index"] for p in by_index]
    assert indexes == sorted(indexes)  # by Index (within one, most confident first: test_person_tracking)

    def when_who(p: dict) -> tuple[int, int]:
        return p["Timestamp"], p["Person"]["Index"]

    assert sorted(by_index, key=when_who) == sorted(persons, key=when_who)  # the same items

    [note] = [n for n in env.notifications() if n["JobId"] == job_id]
    assert (note["Status"], note["API"], note["JobTag"]) == ("SUCCEEDED", "StartPersonTracking", "persons-1")
    assert note["Video"] == {"S3ObjectName": f"persons/{HEAD_POSE}", "S3Bucket": VIDEO_BUCKET}
    assert env.check_iam() == {"StartPersonTracking", "VideoWorker", "GetPersonTracking"}


def test_get_person_tracking_of_another_kind_of_job_or_an_unknown_one_is_resource_not_found(person_env):
    env = person_env
    video = env.put_video(f"faces/{HEAD_POSE}", (VIDEOS / HEAD_POSE).read_bytes())
    face_job = env.start("StartFaceDetection", {"Video": video})
    for job_id in (face_job, "0" * 32):
        status, body = env.api("GetPersonTracking", {"JobId": job_id})
        assert (status, body["__type"]) == (400, "ResourceNotFoundException"), body
    assert env.pump(face_job)[face_job].status == "SUCCEEDED"  # the queues are left empty
    assert {"StartFaceDetection", "GetPersonTracking"} <= env.check_iam()
