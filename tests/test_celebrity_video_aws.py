"""StartCelebrityRecognition / GetCelebrityRecognition on the AWS pipeline, in this process on moto
(test_aws_video's harness: Start*/Get* through their Lambda handlers, the video worker pumped from
the moto queues), with the gallery written by `facebank celebrities import --aws`; every AWS call
checked against the function's synthesised IAM policy."""

from __future__ import annotations

import pytest
from test_aws_video import TABLE_PREFIX, get_all, video_aws  # noqa: F401 - video_aws is a fixture
from test_celebrity_video import celebrity_clip_bytes, check_celebrity_items, gallery_dir

from facebank import cli
from facebank.storage.celebrities import create_celebrity_table

TABLE = f"{TABLE_PREFIX}celebrities"


@pytest.fixture
def celebrities_env(video_aws, tmp_path):  # noqa: F811 - the imported fixture
    create_celebrity_table(video_aws.session.client("dynamodb"), TABLE)
    # check_celebrity_items expects a sample every 200 ms, as the embedded test pins (video_sample_fps=5.0);
    # Start records the rate in the job, so the worker samples at it too.
    with video_aws.configured(FACEBANK_CELEBRITY_TABLE=TABLE, FACEBANK_VIDEO_SAMPLE_FPS="5"):
        imported = cli.main(
            ["celebrities", "import", str(gallery_dir(tmp_path / "gallery")), "--aws", "--table", TABLE]
        )
        assert imported == 0
        video_aws.recorder.take()  # the operator's import is not a function's
        yield video_aws


def test_celebrity_job_through_the_functions_and_the_worker(celebrities_env):
    env = celebrities_env
    video = env.put_video("celebrities.mp4", celebrity_clip_bytes())
    job_id = env.start("StartCelebrityRecognition", {"Video": video, "NotificationChannel": env.channel()})
    records = env.pump(job_id)
    assert records[job_id].status == "SUCCEEDED", records[job_id].status_message
    first, items = get_all(env, "GetCelebrityRecognition", job_id, "Celebrities")
    assert first["JobStatus"] == "SUCCEEDED" and first["Video"] == video
    check_celebrity_items(items)
    assert [i["Timestamp"] for i in items] == sorted(i["Timestamp"] for i in items)
    _, by_id = get_all(env, "GetCelebrityRecognition", job_id, "Celebrities", SortBy="ID")
    assert by_id == sorted(items, key=lambda i: (i["Celebrity"]["Id"], i["Timestamp"]))
    [done] = [n for n in env.notifications() if n["JobId"] == job_id]
    assert (done["Status"], done["API"]) == ("SUCCEEDED", "StartCelebrityRecognition")
    assert env.check_iam() == {"StartCelebrityRecognition", "VideoWorker", "GetCelebrityRecognition"}
