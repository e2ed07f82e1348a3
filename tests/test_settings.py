"""Each setting is declared once (facebank/settings.py): the environment, the `facebank serve` flags
with their help text, the CDK context and the functions' environment are all read from that one
declaration; the region and account a server is configured with reach its ARNs."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pytest

from facebank import cli
from facebank.settings import Settings, add_flags, declared, help_text, with_flags

ROOT = Path(__file__).resolve().parent.parent


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facebank serve")
    add_flags(parser)
    return parser


def test_every_serve_flag_has_help_with_its_default():
    parser = serve_parser()
    flags = {opt for action in parser._actions for opt in action.option_strings} - {"-h", "--help"}
    assert {"--host", "--port", "--log-level", "--data-dir", "--pack", "--mirror", "--video-workers"} <= flags
    for action in parser._actions:
        if action.option_strings != ["-h", "--help"]:
            assert re.search(r"\(default: [^)]+\)$", action.help or ""), action.option_strings
    assert help_text("port") == "TCP port to listen on (default: 8080)"
    assert help_text("video_workers").endswith("(default: FACEBANK_VIDEO_WORKERS or 1)")
    assert help_text("region").endswith("(default: FACEBANK_REGION, AWS_REGION, AWS_DEFAULT_REGION or us-east-1)")


def test_serve_help_lists_the_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("(default: 127.0.0.1)", "(default: 8080)", "(default: INFO)", "(default: FACEBANK_PACK or open)"):
        assert text in out


def test_flags_override_the_environment_and_absent_flags_keep_it():
    env = Settings.from_env({"FACEBANK_VIDEO_WORKERS": "3", "FACEBANK_PACK": "mobile", "FACEBANK_REGION": "eu-west-1"})
    kept = with_flags(env, serve_parser().parse_args([]))
    assert (kept.video_workers, kept.pack, kept.region, kept.port) == (3, "mobile", "eu-west-1", 8080)
    args = serve_parser().parse_args(
        ["--video-workers", "2", "--port", "9001", "--data-dir", "~/fb", "--region", "ap-south-1"]
    )
    got = with_flags(env, args)
    assert (got.video_workers, got.port, got.region) == (2, 9001, "ap-south-1")
    assert got.data_dir == Path("~/fb").expanduser()
    with pytest.raises(SystemExit):  # argparse: not an integer
        serve_parser().parse_args(["--port", "eighty"])


def test_region_and_account_settings():
    assert (Settings.from_env({}).region, Settings.from_env({}).account_id) == ("us-east-1", "000000000000")
    # FACEBANK_REGION first, then the AWS SDK's variables (Lambda sets AWS_REGION itself).
    assert Settings.from_env({"AWS_REGION": "eu-west-1"}).region == "eu-west-1"
    assert Settings.from_env({"AWS_DEFAULT_REGION": "eu-north-1", "FACEBANK_REGION": "ca-central-1"}).region == (
        "ca-central-1"
    )
    assert Settings.from_env({"FACEBANK_ACCOUNT_ID": "123456789012"}).account_id == "123456789012"


def test_environment_values_are_typed_with_the_variable_named_on_error():
    got = Settings.from_env(
        {"FACEBANK_SHARD_ROWS": "1000", "FACEBANK_COMPACT_MIN_AGE_S": "1.5", "FACEBANK_DATA_DIR": "/d"}
    )
    assert (got.shard_rows, got.compact_min_age_s, got.data_dir) == (1000, 1.5, Path("/d"))
    with pytest.raises(ValueError, match=r"FACEBANK_SHARD_ROWS='many' is not an integer"):
        Settings.from_env({"FACEBANK_SHARD_ROWS": "many"})


def test_cdk_context_and_function_environment_come_from_the_same_declaration():
    context = {"maxVideoJobs": 7, "videoSegmentSeconds": "60", "facebank:notificationTopics": ["arn:a", "arn:b"]}
    got = Settings.from_context(context.get)
    assert (got.max_video_jobs, got.video_segment_s, got.notification_topics) == (7, 60, ("arn:a", "arn:b"))
    assert got.shard_rows == Settings().shard_rows  # not in the context: the declared default
    env = got.environment("max_video_jobs", "video_segment_s", "notification_topics")
    assert env == {
        "FACEBANK_MAX_VIDEO_JOBS": "7",
        "FACEBANK_VIDEO_SEGMENT_S": "60",
        "FACEBANK_NOTIFICATION_TOPICS": "arn:a,arn:b",
    }
    assert Settings.from_env(env).max_video_jobs == 7  # what the function reads back
    with pytest.raises(ValueError, match="maxVideoJobs='lots' is not an integer"):
        Settings.from_context({"maxVideoJobs": "lots"}.get)


def test_every_setting_is_declared_with_help_and_a_source():
    for field, spec in declared():
        assert len(spec.help) > 8, field.name
        assert spec.env or spec.flag or spec.context, f"{field.name} cannot be set"
        assert all(name.startswith(("FACEBANK_", "AWS_")) for name in spec.env), field.name


def test_a_default_is_written_once():
    """max_video_jobs's 20 (issue 22: it was spelled in six places): only its declaration has it;
    app.py, cdk.json and infra/ derive it."""
    from facebank.settings import default_of

    assert default_of("max_video_jobs") == Settings().max_video_jobs == 20
    pattern = re.compile(r"(max_video_jobs|maxVideoJobs|MAX_VIDEO_JOBS)[^0-9]{0,30}\b20\b")
    files = [ROOT / "app.py", ROOT / "cdk.json", *(ROOT / "facebank").rglob("*.py"), *(ROOT / "infra").rglob("*.py")]
    hits = [str(f.relative_to(ROOT)) for f in files for _ in pattern.finditer(f.read_text())]
    assert hits == ["facebank/settings.py"]
    assert "maxVideoJobs" not in (ROOT / "cdk.json").read_text()  # cdk.json holds no defaults


def test_arns_carry_the_configured_region_and_account(tmp_path, model_env):
    """`facebank serve` with FACEBANK_ACCOUNT_ID and --region: CreateCollection's ARN says them
    (serve verifies the models at start, so this skips, with the reason, where they are unavailable)."""
    from support import Server

    env = {**model_env, "FACEBANK_ACCOUNT_ID": "123456789012"}
    env.pop("FACEBANK_REGION", None)
    server = Server(env, tmp_path / "data", ["--region", "eu-central-1"])
    try:
        client = server.client()
        arn = client.create_collection(CollectionId="arns")["CollectionArn"]
        assert arn == "arn:aws:rekognition:eu-central-1:123456789012:collection/arns"
    finally:
        server.stop()
        shutil.rmtree(tmp_path / "data", ignore_errors=True)
