"""Stored-video jobs through a real `facebank serve` (worker pool, --sns-endpoint-url, restarts)
with an unmodified boto3 client, S3/SNS/SQS/IAM on a moto server, and the real clips of
shared/videos (MANIFEST.tsv gives their content)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import boto3
import pytest
from support import SHARED, Server
from video_sample_flow import SampleVideoFlow

from facebank.storage import open_embedded

VIDEOS = SHARED / "videos"
BUCKET = "clips"
HEAD_POSE = "intel_head-pose-face-detection-female-and-male.mp4"
ASL = "intel_asl-book.mp4"
CAR = "intel_car-detection.mp4"
ONE_BY_ONE = "intel_one-by-one-person-detection.mp4"
VISITS_S = [(8, 20), (23, 44), (50, 70), (74, 86), (92, 118), (125, 137)]  # MANIFEST.tsv, +-2 s


def require_videos() -> Path:
    if not (VIDEOS / "MANIFEST.tsv").is_file():
        pytest.skip(f"videos not found at {VIDEOS} (set FACEBANK_SHARED to the shared/ folder)")
    return VIDEOS


def aws_env() -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def moto(service: str, url: str, kind: str = "client"):
    make = boto3.client if kind == "client" else boto3.resource
    return make(
        service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@pytest.fixture(scope="module")
def clips(s3_server) -> list[str]:
    """The shared clips, uploaded to the moto S3."""
    folder = require_videos()
    s3 = moto("s3", s3_server)
    s3.create_bucket(Bucket=BUCKET)
    with open(folder / "MANIFEST.tsv") as f:
        names = [row["file"] for row in csv.DictReader(f, delimiter="\t")]
    for name in names:
        s3.upload_file(str(folder / name), BUCKET, name)
    return names


def start_server(model_env, s3_server, data_dir: Path, workers: int = 2) -> Server:
    flags = ["--s3-endpoint-url", s3_server, "--sns-endpoint-url", s3_server, "--video-workers", str(workers)]
    return Server({**model_env, **aws_env()}, data_dir, flags)


@pytest.fixture(scope="module")
def video_server(model_env, s3_server, tmp_path_factory):
    server = start_server(model_env, s3_server, tmp_path_factory.mktemp("video") / "data")
    yield server
    server.stop()


def wait_done(client, get, job_id: str, timeout: float = 300) -> dict:
    """Poll Get* until the job ends (what a client without a NotificationChannel does)."""
    deadline = time.monotonic() + timeout
    while True:
        response = get(JobId=job_id)
        if response["JobStatus"] != "IN_PROGRESS":
            return response
        assert time.monotonic() < deadline, f"job {job_id} still IN_PROGRESS"
        time.sleep(0.2)


def all_faces(client, job_id: str) -> list[dict]:
    response = client.get_face_detection(JobId=job_id)
    faces = response["Faces"]
    while "NextToken" in response:
        response = client.get_face_detection(JobId=job_id, NextToken=response["NextToken"])
        faces += response["Faces"]
    return faces


def test_amazons_sample_flow_gets_real_face_detections(video_server, s3_server, clips):
    """RekognitionVideo.do_face_detection with its SNS topic + SQS queue + IAM role channel."""
    rekognition = video_server.client()
    video = SampleVideoFlow({"S3Object": {"Bucket": BUCKET, "Name": HEAD_POSE}}, HEAD_POSE, rekognition)
    video.create_notification_channel(
        "doc-example-video-rekognition",
        moto("iam", s3_server, "resource"),
        moto("sns", s3_server, "resource"),
        moto("sqs", s3_server, "resource"),
    )
    faces = video.do_face_detection()
    # Two people facing the camera in every frame: two faces at every sampled timestamp.
    by_time: dict[int, int] = {}
    for face in faces:
        by_time[face.timestamp] = by_time.get(face.timestamp, 0) + 1
        assert face.bounding_box and face.confidence > 50 and len(face.landmarks) == 5
        assert set(face.pose) == {"Roll", "Yaw", "Pitch"} and set(face.quality) == {"Brightness", "Sharpness"}
    assert len(by_time) >= 4 * 4  # 4.48 s at the default 4 fps: 18 samples
    assert set(by_time.values()) == {2}
    assert [f.timestamp for f in faces] == sorted(f.timestamp for f in faces)


def test_real_clips_give_their_labelled_faces(video_server, clips):
    client = video_server.client()
    jobs = {
        name: client.start_face_detection(Video={"S3Object": {"Bucket": BUCKET, "Name": name}})["JobId"]
        for name in (ASL, CAR, ONE_BY_ONE)
    }
    # The API answers while jobs run (two workers, the third job queued).
    assert client.get_face_detection(JobId=jobs[ONE_BY_ONE])["JobStatus"] == "IN_PROGRESS"
    assert client.list_collections()["CollectionIds"] is not None
    done = {name: wait_done(client, client.get_face_detection, job_id) for name, job_id in jobs.items()}
    assert {r["JobStatus"] for r in done.values()} == {"SUCCEEDED"}
    metadata = done[ONE_BY_ONE]["VideoMetadata"]
    assert (metadata["FrameWidth"], metadata["FrameHeight"], metadata["FrameRate"]) == (768, 432, 10.0)
    assert metadata["Codec"] == "h264" and abs(metadata["DurationMillis"] - 139_400) <= 100

    assert all_faces(client, jobs[CAR]) == []  # cars seen from above: no face
    asl = all_faces(client, jobs[ASL])
    assert len(asl) == len({f["Timestamp"] for f in asl}) >= 14  # one face in every sampled frame (3.6 s)
    seen = [f["Timestamp"] for f in all_faces(client, jobs[ONE_BY_ONE])]
    assert seen and all(any((a - 2) * 1000 <= t <= (b + 2) * 1000 for a, b in VISITS_S) for t in seen)
    visits_with_faces = sum(any((a - 2) * 1000 <= t <= (b + 2) * 1000 for t in seen) for a, b in VISITS_S)
    assert visits_with_faces >= 5  # bench/video.py: 5 of the 6 visits show a face (one is seen from behind)


def test_a_job_interrupted_by_a_stop_resumes_when_serve_starts_again(model_env, s3_server, clips, tmp_path):
    data_dir = tmp_path / "data"
    first = start_server(model_env, s3_server, data_dir, workers=1)
    client = first.client()
    job_id = client.start_face_detection(Video={"S3Object": {"Bucket": BUCKET, "Name": ONE_BY_ONE}})["JobId"]
    assert first.stop() == 0  # SIGTERM while the 139 s clip is being analysed
    storage = open_embedded(data_dir)
    interrupted = storage.jobs.get_job(job_id)
    storage.metadata.close()
    assert interrupted.status == "IN_PROGRESS"  # left for the next start, not failed nor lost

    second = start_server(model_env, s3_server, data_dir, workers=1)
    try:
        done = wait_done(second.client(), second.client().get_face_detection, job_id)
        assert done["JobStatus"] == "SUCCEEDED"
        seen = [f["Timestamp"] for f in all_faces(second.client(), job_id)]
        assert seen and all(any((a - 2) * 1000 <= t <= (b + 2) * 1000 for a, b in VISITS_S) for t in seen)
    finally:
        second.stop()
    log = (data_dir.parent / f"server-{second.port}.log").read_text()
    assert f"resuming video job {job_id}" in log
