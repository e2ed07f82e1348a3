"""Person tracking through a real `facebank serve` with an unmodified boto3 client (issue 15): the
worker pool, the default sampling rate, S3 on a moto server and two of the real shared clips."""

from __future__ import annotations

import pytest
from test_video_server import BUCKET, HEAD_POSE, clips, video_server, wait_done  # noqa: F401 - fixtures

CLASSROOM = "intel_classroom.mp4"


def all_persons(client, job_id: str, **extra) -> list[dict]:
    response = client.get_person_tracking(JobId=job_id, MaxResults=7, **extra)
    persons = response["Persons"]
    while "NextToken" in response:
        response = client.get_person_tracking(JobId=job_id, MaxResults=7, NextToken=response["NextToken"], **extra)
        persons += response["Persons"]
    return persons


@pytest.mark.parametrize(("clip", "people"), [(CLASSROOM, 4), (HEAD_POSE, 2)])
def test_boto3_tracks_the_people_of_a_real_clip(video_server, clips, clip, people):  # noqa: F811
    client = video_server.client()
    job_id = client.start_person_tracking(Video={"S3Object": {"Bucket": BUCKET, "Name": clip}}, JobTag="people")[
        "JobId"
    ]
    done = wait_done(client, client.get_person_tracking, job_id)
    assert (done["JobStatus"], done["JobTag"]) == ("SUCCEEDED", "people")
    assert done["VideoMetadata"]["FrameWidth"] == 480
    by_time = all_persons(client, job_id)
    by_index = all_persons(client, job_id, SortBy="INDEX")
    assert {p["Person"]["Index"] for p in by_time} == set(range(people))
    timestamps = {p["Timestamp"] for p in by_time}
    assert len(timestamps) >= 10 and len(by_time) == people * len(timestamps)  # everyone, in every sample
    assert [p["Person"]["Index"] for p in by_index] == sorted(p["Person"]["Index"] for p in by_time)
    assert sorted(by_index, key=lambda p: (p["Timestamp"], p["Person"]["Index"])) == by_time
    for p in by_time:
        box = p["Person"]["BoundingBox"]
        assert box["Left"] >= 0 and box["Left"] + box["Width"] <= 1 + 1e-6 and box["Height"] > 0
    assert sum("Face" in p["Person"] for p in by_time) >= 0.9 * len(by_time)  # faces toward the camera
