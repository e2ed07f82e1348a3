"""The stored-video settings, read by Settings.from_env (the only reader of FACEBANK_*)."""

from __future__ import annotations

import pytest

from facebank.settings import Settings


def test_video_settings_from_the_environment():
    defaults = Settings.from_env({})
    assert (defaults.video_sample_fps, defaults.video_workers, defaults.max_video_jobs) == (4.0, 1, 20)
    assert (defaults.video_segment_s, defaults.notification_topics, defaults.sns_endpoint_url) == (120, (), None)
    env = {
        "FACEBANK_VIDEO_SAMPLE_FPS": "2.5",
        "FACEBANK_VIDEO_WORKERS": "2",
        "FACEBANK_MAX_VIDEO_JOBS": "3",
        "FACEBANK_NOTIFICATION_TOPICS": "arn:aws:sns:us-east-1:111122223333:*, arn:aws:sns:*:444455556666:done",
        "FACEBANK_SNS_ENDPOINT_URL": "http://127.0.0.1:5050",
    }
    got = Settings.from_env(env)
    assert (got.video_sample_fps, got.video_workers, got.max_video_jobs) == (2.5, 2, 3)
    assert got.notification_topics == ("arn:aws:sns:us-east-1:111122223333:*", "arn:aws:sns:*:444455556666:done")
    assert got.sns_endpoint_url == "http://127.0.0.1:5050"
    with pytest.raises(ValueError, match="FACEBANK_VIDEO_WORKERS"):
        Settings.from_env({"FACEBANK_VIDEO_WORKERS": "two"})
