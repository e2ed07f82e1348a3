"""Stream processors in `facebank serve` (issue 26): an unmodified boto3 client runs the lifecycle
against the server with a file source (--stream NAME=FILE, read at its own frame rate as a camera
delivers it) and reads the records from a moto Kinesis data stream (--kinesis-endpoint-url) with a
plain get_records consumer, as Amazon's sample consumers do."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import pytest
from support import SHARED, Server

VIDEOS = SHARED / "videos"
HEAD_POSE = "intel_head-pose-face-detection-female-and-male.mp4"  # two people facing the camera, 4.5 s
REGION, ACCOUNT = "us-east-1", "123456789012"  # moto's account: the output ARN names the stream there
ROLE = f"arn:aws:iam::{ACCOUNT}:role/rekognition-streams"


def require_clip() -> Path:
    clip = VIDEOS / HEAD_POSE
    if not clip.is_file():
        pytest.skip(f"{HEAD_POSE} not found in {VIDEOS} (set FACEBANK_SHARED to the shared/ folder)")
    return clip


def kvs_arn(name: str) -> str:
    return f"arn:aws:kinesisvideo:{REGION}:{ACCOUNT}:stream/{name}/1700000000000"


def aws_env() -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


def kinesis(url: str):
    return boto3.client(
        "kinesis", endpoint_url=url, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def looped(clip: Path, times: int, out: Path) -> Path:
    """The clip played ``times`` times in a row (one file, timestamps running on): a camera that
    keeps delivering for the length of a test, with the clip's real people in it."""
    import av

    with av.open(str(clip)) as src, av.open(str(out), "w") as dst:
        inp = src.streams.video[0]
        stream = dst.add_stream("libx264", rate=inp.average_rate)
        stream.width, stream.height, stream.pix_fmt = inp.width, inp.height, "yuv420p"
        stream.options = {"g": "12", "bf": "0"}  # a keyframe a second, no B-frames: as cameras send
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(inp)]
        for _ in range(times):
            for rgb in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    return out


def first_frame_jpeg(clip: Path) -> bytes:
    import io

    import av

    with av.open(str(clip)) as src:
        frame = next(src.decode(video=0))
    out = io.BytesIO()
    frame.to_image().save(out, "JPEG", quality=95)
    return out.getvalue()


def wait_status(client, name: str, statuses: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        described = client.describe_stream_processor(Name=name)
        if described["Status"] in statuses:
            return described
        assert time.monotonic() < deadline, f"{name} still {described['Status']}, waited for {statuses}"
        time.sleep(0.1)  # polling, as a client does: bounded by the deadline


class Consumer:
    """A plain Kinesis consumer: one shard iterator from TRIM_HORIZON, get_records in a loop."""

    def __init__(self, client, stream: str):
        self.client = client
        shard = client.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
        self.iterator = client.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        self.records: list[dict] = []

    def read_until(self, enough, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not enough(self.records):
            assert time.monotonic() < deadline, f"{len(self.records)} records so far"
            response = self.client.get_records(ShardIterator=self.iterator, Limit=1000)
            self.iterator = response["NextShardIterator"]
            self.records += [json.loads(r["Data"]) for r in response["Records"]]
            if not response["Records"]:
                time.sleep(0.2)  # polling, as the KCL does: bounded by the deadline
        return self.records


NUMBER = (int, float)
BOX = {"Width": NUMBER, "Top": NUMBER, "Height": NUMBER, "Left": NUMBER}


def check_shape(value, shape, where: str = "record") -> None:
    """The documented record ("Reference: Kinesis face recognition record"): exactly its keys, its types."""
    if isinstance(shape, dict):
        assert isinstance(value, dict) and set(value) == set(shape), f"{where}: {sorted(value)} != {sorted(shape)}"
        for key, sub in shape.items():
            check_shape(value[key], sub, f"{where}.{key}")
    elif isinstance(shape, list):
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            check_shape(item, shape[0], f"{where}[{i}]")
    else:
        assert isinstance(value, shape) and not isinstance(value, bool), f"{where}: {value!r}"


RECORD = {
    "InputInformation": {
        "KinesisVideo": {
            "StreamArn": str,
            "FragmentNumber": str,
            "ServerTimestamp": NUMBER,
            "ProducerTimestamp": NUMBER,
            "FrameOffsetInSeconds": NUMBER,
        }
    },
    "StreamProcessorInformation": {"Status": str},
    "FaceSearchResponse": [
        {
            "DetectedFace": {
                "BoundingBox": BOX,
                "Confidence": NUMBER,
                "Landmarks": [{"Type": str, "X": NUMBER, "Y": NUMBER}],
                "Pose": {"Pitch": NUMBER, "Roll": NUMBER, "Yaw": NUMBER},
                "Quality": {"Brightness": NUMBER, "Sharpness": NUMBER},
            },
            "MatchedFaces": [
                {
                    "Similarity": NUMBER,
                    "Face": {
                        "BoundingBox": BOX,
                        "Confidence": NUMBER,
                        "ExternalImageId": str,
                        "FaceId": str,
                        "ImageId": str,
                    },
                }
            ],
        }
    ],
}


@pytest.fixture(scope="module")
def camera(tmp_path_factory) -> Path:
    """The head-pose clip looped to 90 s: longer than any test here runs it."""
    return looped(require_clip(), 20, tmp_path_factory.mktemp("camera") / "camera.mp4")


def start_server(model_env, moto_url: str, data_dir: Path, streams: dict[str, Path]) -> Server:
    flags = ["--kinesis-endpoint-url", moto_url, "--account-id", ACCOUNT]
    for name, path in streams.items():
        flags += ["--stream", f"{name}={path}"]
    return Server({**model_env, **aws_env()}, data_dir, flags)


def create(client, name: str, video: str, output: str, collection: str) -> None:
    client.create_stream_processor(
        Name=name,
        Input={"KinesisVideoStream": {"Arn": kvs_arn(video)}},
        Output={"KinesisDataStream": {"Arn": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{output}"}},
        RoleArn=ROLE,
        Settings={"FaceSearch": {"CollectionId": collection, "FaceMatchThreshold": 85.0}},
    )


def test_lifecycle_records_known_face_stop_and_restart(model_env, s3_server, camera, tmp_path):
    data_dir = tmp_path / "data"
    out = kinesis(s3_server)
    out.create_stream(StreamName="faces-out", ShardCount=1)
    server = start_server(model_env, s3_server, data_dir, {"cam1": camera})
    try:
        client = server.client()
        client.create_collection(CollectionId="streams")
        indexed = client.index_faces(
            CollectionId="streams", Image={"Bytes": first_frame_jpeg(camera)}, ExternalImageId="cam-person", MaxFaces=1
        )["FaceRecords"][0]["Face"]
        create(client, "door", "cam1", "faces-out", "streams")
        started = time.time()
        client.start_stream_processor(Name="door")
        wait_status(client, "door", {"RUNNING"})

        consumer = Consumer(out, "faces-out")
        # 12.5 fps clip at 4 samples a second, two faces in every frame: a record per sample.
        records = consumer.read_until(lambda rs: len(rs) >= 8)
        for record in records:
            check_shape(record, RECORD)
            video = record["InputInformation"]["KinesisVideo"]
            assert video["StreamArn"] == kvs_arn("cam1") and video["FragmentNumber"].isdigit()
            assert started - 1 < video["ProducerTimestamp"] <= video["ServerTimestamp"] + 0.5 < time.time() + 1
            assert 0 <= video["FrameOffsetInSeconds"] < 1.5
            assert record["StreamProcessorInformation"] == {"Status": "RUNNING"}
            assert len(record["FaceSearchResponse"]) == 2  # the two people of the clip
            matched = [f for f in record["FaceSearchResponse"] if f["MatchedFaces"]]
            assert len(matched) <= 1  # the indexed person, never the other one
            for face in matched:
                assert [m["Face"]["FaceId"] for m in face["MatchedFaces"]] == [indexed["FaceId"]]
                assert face["MatchedFaces"][0]["Face"]["ExternalImageId"] == "cam-person"
                assert face["MatchedFaces"][0]["Similarity"] >= 85
        assert sum(1 for r in records for f in r["FaceSearchResponse"] if f["MatchedFaces"]) >= len(records) // 2
        times = [
            (
                r["InputInformation"]["KinesisVideo"]["ProducerTimestamp"],
                r["InputInformation"]["KinesisVideo"]["FrameOffsetInSeconds"],
            )
            for r in records
        ]
        assert [a + b for a, b in times] == sorted(a + b for a, b in times)
        numbers = [int(r["InputInformation"]["KinesisVideo"]["FragmentNumber"]) for r in records]
        assert numbers == sorted(numbers)

        client.stop_stream_processor(Name="door")
        assert client.describe_stream_processor(Name="door")["Status"] in ("STOPPING", "STOPPED")
        wait_status(client, "door", {"STOPPED"}, timeout=10)
        stopped_at = time.time()
        consumer.read_until(lambda rs: True)
        count = len(consumer.read_until(lambda rs: True))
        # A stopped processor writes nothing more.
        assert all(r["InputInformation"]["KinesisVideo"]["ServerTimestamp"] < stopped_at for r in consumer.records)
        client.start_stream_processor(Name="door")
        wait_status(client, "door", {"RUNNING"})
        consumer.read_until(lambda rs: len(rs) >= count + 2)
    finally:
        assert server.stop() == 0  # SIGTERM while "door" is RUNNING: it stays RUNNING for the next start

    restarted_at = time.time()
    again = start_server(model_env, s3_server, data_dir, {"cam1": camera})
    try:
        client = again.client()
        assert client.describe_stream_processor(Name="door")["Status"] in ("RUNNING", "STARTING")
        wait_status(client, "door", {"RUNNING"})
        consumer.read_until(
            lambda rs: any(r["InputInformation"]["KinesisVideo"]["ServerTimestamp"] > restarted_at for r in rs)
        )
        client.stop_stream_processor(Name="door")
        wait_status(client, "door", {"STOPPED"}, timeout=10)
        client.delete_stream_processor(Name="door")
    finally:
        again.stop()
    log = (data_dir.parent / f"server-{again.port}.log").read_text()
    assert "resuming stream processor door" in log


def test_an_input_without_a_source_or_that_ends_fails_with_the_reason(model_env, s3_server, tmp_path):
    clip = require_clip()
    out = kinesis(s3_server)
    out.create_stream(StreamName="faces-short", ShardCount=1)
    server = start_server(model_env, s3_server, tmp_path / "data", {"short": clip})
    try:
        client = server.client()
        client.create_collection(CollectionId="streams")
        create(client, "unmapped", "nowhere", "faces-short", "streams")
        create(client, "short", "short", "faces-short", "streams")
        client.start_stream_processor(Name="unmapped")
        client.start_stream_processor(Name="short")
        failed = wait_status(client, "unmapped", {"FAILED"})
        assert "--stream nowhere=URL" in failed["StatusMessage"]
        ended = wait_status(client, "short", {"FAILED"})  # 4.5 s of video, read as a camera sends it
        assert "ended" in ended["StatusMessage"] and HEAD_POSE in ended["StatusMessage"]
    finally:
        server.stop()
