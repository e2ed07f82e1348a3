"""Composition roots: the one place that turns ``Settings`` into an operation ``Context``.

``facebank serve`` (cli.py) uses ``embedded_context``; every Lambda function (aws/runtime.py) uses
``aws_context``. Storage adapters and boto3 are imported inside the factories, so building a
Context costs nothing until an operation first needs storage or S3.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from facebank.operations import Context
from facebank.settings import Settings
from facebank.storage import Storage, open_aws, open_embedded

if TYPE_CHECKING:
    from facebank.storage.celebrities import CelebrityGallery
    from facebank.stream_runner import StreamRunner
    from facebank.video_runner import VideoRunner


def s3_client(endpoint_url: str | None = None) -> Any:
    """The S3 client for S3Object images; endpoint None means boto3's own resolution
    (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or the real S3)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url, config=Config(retries={"max_attempts": 3, "mode": "standard"}))


def embedded_context(settings: Settings) -> Context:
    """SQLite + segment files under ``settings.data_dir``."""
    if settings.data_dir is None:
        raise ValueError("embedded storage needs a data directory (--data-dir or FACEBANK_DATA_DIR)")
    data_dir = settings.data_dir

    def open_storage() -> Storage:
        return open_embedded(data_dir)

    ctx = Context(
        settings,
        open_storage=open_storage,
        open_s3=lambda: s3_client(settings.s3_endpoint_url),
        open_sns=lambda: sns_client(settings.sns_endpoint_url, settings.region),
        open_celebrities=lambda: embedded_gallery(data_dir),
    )
    from facebank.video_runner import VideoRunner  # threads start only when a job is submitted

    ctx.submit_video_job = VideoRunner(ctx, settings.video_workers).submit
    from facebank.stream_runner import StreamRunner, kinesis_client, parse_streams  # threads start on Start

    ctx.start_stream_processor = StreamRunner(
        ctx, parse_streams(settings.streams), lambda region: kinesis_client(settings.kinesis_endpoint_url, region)
    ).start
    return ctx


def video_runner(ctx: Context) -> VideoRunner | None:
    """The embedded Context's video runner (for ``facebank serve`` to resume and stop it)."""
    submit = ctx.submit_video_job
    runner = getattr(submit, "__self__", None)
    from facebank.video_runner import VideoRunner

    return runner if isinstance(runner, VideoRunner) else None


def stream_runner(ctx: Context) -> StreamRunner | None:
    """The embedded Context's stream runner (for ``facebank serve`` to resume and stop it)."""
    runner = getattr(ctx.start_stream_processor, "__self__", None)
    from facebank.stream_runner import StreamRunner

    return runner if isinstance(runner, StreamRunner) else None


def sns_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """The SNS client video jobs publish completions with; endpoint None means boto3's own
    resolution (AWS_ENDPOINT_URL_SNS, AWS_ENDPOINT_URL, or the real SNS)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sns",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}),
    )


def aws_context(settings: Settings) -> Context:
    """DynamoDB tables ``<table_prefix>*`` and the vector bucket named by the stack's environment.
    Functions without storage (DetectFaces, CompareFaces) get a Context that never opens it."""
    bucket = settings.vector_bucket

    def open_storage() -> Storage:
        if not bucket:
            raise RuntimeError("no storage configured for this function: FACEBANK_VECTOR_BUCKET is not set")
        return open_aws(
            bucket=bucket,
            table_prefix=settings.table_prefix,
            ingest_table=settings.ingest_table,
            region_name=settings.region,
        )

    def submit_video_job(job_id: str) -> None:
        from facebank.aws.video_queue import submit  # SQS: only the Start* functions submit jobs

        submit(settings, job_id)

    def open_searcher() -> Any:
        if not settings.shard_function:
            return None  # search the shards in this process
        from facebank.aws.shard_client import LambdaShards

        return LambdaShards.from_settings(settings)

    ctx = Context(
        settings,
        open_storage=open_storage,
        open_s3=lambda: s3_client(settings.s3_endpoint_url),
        open_sns=lambda: sns_client(settings.sns_endpoint_url, settings.region),
        submit_video_job=submit_video_job,
        open_celebrities=lambda: aws_gallery(settings),
        open_searcher=open_searcher,
    )

    def start_stream_processor(name: str) -> None:
        from facebank.aws.stream_client import start  # Lambda: only StartStreamProcessor invokes the consumer

        start(settings, ctx.storage.streams, name)

    ctx.start_stream_processor = start_stream_processor
    return ctx


def embedded_gallery(data_dir: Path) -> CelebrityGallery:
    """The celebrity gallery beside the embedded stores: data_dir/celebrities.sqlite3."""
    from facebank.storage.celebrities import open_embedded_gallery

    return open_embedded_gallery(data_dir)


def aws_gallery(settings: Settings) -> CelebrityGallery:
    """The stack's celebrity table (FACEBANK_CELEBRITY_TABLE)."""
    from facebank.storage.celebrities import open_aws_gallery

    if not settings.celebrity_table:
        raise RuntimeError("no celebrity gallery configured for this function: FACEBANK_CELEBRITY_TABLE is not set")
    return open_aws_gallery(settings.celebrity_table, region_name=settings.region)
