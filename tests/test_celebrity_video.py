"""StartCelebrityRecognition / GetCelebrityRecognition through the protocol, on the video job
framework (test_video_jobs' harness: jobs run synchronously, S3 and SNS under moto), with a clip
made from shared/faces photos: two people of the gallery and one stranger, shown at known times."""

from __future__ import annotations

import json
import shutil

import pytest
from support import FACES, dev_people, require_faces
from test_video_jobs import (  # noqa: F401 - aws, s3 and ctx are fixtures
    BUCKET,
    ApiError,
    aws,
    call,
    ctx,
    get_all,
    run_all,
    s3,
    sampled,
    video_of,
)
from video_clips import Shown, make_clip

from facebank.operations.celebrities import import_gallery
from facebank.storage.celebrities import celebrity_id

POWELL_SHOWN = (1000, 3000)  # left third
OBAMA_SHOWN = (2000, 4000)  # middle third
STRANGER_SHOWN = (0, 4000)  # right third: Drew Barrymore, not in the gallery
DURATION = 4600


def celebrity_clip_bytes() -> bytes:
    """Colin Powell (left third), Barack Obama (middle) and Drew Barrymore (right) at *_SHOWN."""
    require_faces()
    people = dev_people()
    shown = [
        Shown(FACES / people["colin_powell"][0], 20, 90, *POWELL_SHOWN, height=180),
        Shown(FACES / people["barack_obama"][0], 230, 90, *OBAMA_SHOWN, height=180),
        Shown(FACES / people["drew_barrymore"][0], 440, 90, *STRANGER_SHOWN, height=180),
    ]
    return make_clip(shown, DURATION)


def gallery_dir(root):
    """Colin Powell and Barack Obama from photos the clip does not show, and Madonna (not in it)."""
    people = dev_people()
    for identity, name in (("colin_powell", "Colin Powell"), ("barack_obama", "Barack Obama"), ("madonna", "Madonna")):
        (root / name).mkdir(parents=True)
        for path in people[identity][1:4]:
            shutil.copy(FACES / path, root / name / path.split("/")[-1])
        (root / name / "info.json").write_text(json.dumps({"Urls": [f"www.example.org/{identity}"]}))
    return root


def check_celebrity_items(items: list[dict]) -> None:
    """Each celebrity named where and when shown, with the gallery's fields; nobody else."""
    ids = {"Colin Powell": celebrity_id("Colin Powell"), "Barack Obama": celebrity_id("Barack Obama")}
    seen: dict[str, set[int]] = {}
    for item in items:
        celebrity = item["Celebrity"]
        seen.setdefault(celebrity["Name"], set()).add(item["Timestamp"])
        assert celebrity["Id"] == ids[celebrity["Name"]]
        assert celebrity["Urls"] == [f"www.example.org/{celebrity['Name'].lower().replace(' ', '_')}"]
        assert 80 <= celebrity["Confidence"] <= 100
        assert celebrity["BoundingBox"] == celebrity["Face"]["BoundingBox"]
        assert set(celebrity["Face"]) == {"BoundingBox", "Landmarks", "Pose", "Quality", "Confidence"}
        third = {"Colin Powell": 0, "Barack Obama": 1}[celebrity["Name"]]
        assert third / 3 <= celebrity["BoundingBox"]["Left"] < (third + 1) / 3  # where that person is shown
        assert "KnownGender" not in celebrity  # none given in info.json: left out, not guessed
    # every sampled frame (5 fps) in which a celebrity is shown names them, and no other frame;
    # the stranger on the right and Madonna (not in the clip) never appear
    assert seen == {"Colin Powell": sampled(*POWELL_SHOWN), "Barack Obama": sampled(*OBAMA_SHOWN)}


@pytest.fixture(scope="module")
def celebrity_clip(s3) -> str:  # noqa: F811 - the imported fixture
    s3.put_object(Bucket=BUCKET, Key="celebrities.mp4", Body=celebrity_clip_bytes())
    return "celebrities.mp4"


@pytest.fixture
def gallery(ctx, tmp_path):  # noqa: F811 - the imported fixture
    assert not import_gallery(gallery_dir(tmp_path / "gallery"), ctx).failed


def test_celebrities_are_named_where_and_when_they_are_shown(ctx, gallery, celebrity_clip):  # noqa: F811
    job_id = call(ctx, "StartCelebrityRecognition", Video=video_of(celebrity_clip), JobTag="celebs")["JobId"]
    pending = call(ctx, "GetCelebrityRecognition", JobId=job_id)
    assert pending["JobStatus"] == "IN_PROGRESS" and pending["Celebrities"] == []
    run_all(ctx)
    response, items = get_all(ctx, "GetCelebrityRecognition", job_id, "Celebrities")
    assert response["JobStatus"] == "SUCCEEDED" and response["JobTag"] == "celebs"
    assert response["VideoMetadata"]["DurationMillis"] == DURATION
    check_celebrity_items(items)
    assert [i["Timestamp"] for i in items] == sorted(i["Timestamp"] for i in items)

    _, by_id = get_all(ctx, "GetCelebrityRecognition", job_id, "Celebrities", SortBy="ID")
    assert by_id == sorted(items, key=lambda i: (i["Celebrity"]["Id"], i["Timestamp"]))


def test_pages_and_tokens(ctx, gallery, celebrity_clip):  # noqa: F811
    job_id = call(ctx, "StartCelebrityRecognition", Video=video_of(celebrity_clip))["JobId"]
    run_all(ctx)
    _, everything = get_all(ctx, "GetCelebrityRecognition", job_id, "Celebrities", SortBy="ID")
    first, paged = get_all(ctx, "GetCelebrityRecognition", job_id, "Celebrities", SortBy="ID", MaxResults=7)
    assert len(first["Celebrities"]) == 7 and paged == everything
    with pytest.raises(ApiError) as e:  # a token of another SortBy
        call(ctx, "GetCelebrityRecognition", JobId=job_id, NextToken=first["NextToken"], SortBy="TIMESTAMP")
    assert e.value.code == "InvalidPaginationTokenException"
    other = call(ctx, "StartFaceDetection", Video=video_of(celebrity_clip))["JobId"]
    with pytest.raises(ApiError) as e:  # a face-detection job is not a celebrity job
        call(ctx, "GetCelebrityRecognition", JobId=other)
    assert e.value.code == "ResourceNotFoundException"
    with pytest.raises(ApiError) as e:
        call(ctx, "GetCelebrityRecognition", JobId="0" * 32)
    assert e.value.code == "ResourceNotFoundException"


def test_an_empty_gallery_names_nobody_and_completion_is_published(ctx, celebrity_clip):  # noqa: F811
    import boto3

    sns, sqs = boto3.client("sns", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="celebrities-done")["TopicArn"]
    queue = sqs.create_queue(QueueName="celebrities-done")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    channel = {"SNSTopicArn": topic, "RoleArn": "arn:aws:iam::123456789012:role/rekognition-publish"}
    job_id = call(ctx, "StartCelebrityRecognition", Video=video_of(celebrity_clip), NotificationChannel=channel)[
        "JobId"
    ]
    run_all(ctx)
    response = call(ctx, "GetCelebrityRecognition", JobId=job_id)
    assert response["JobStatus"] == "SUCCEEDED" and response["Celebrities"] == []
    [raw] = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    message = json.loads(json.loads(raw["Body"])["Message"])
    assert (message["JobId"], message["Status"], message["API"]) == (job_id, "SUCCEEDED", "StartCelebrityRecognition")
