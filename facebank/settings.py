"""Every setting facebank reads, each declared once, in one frozen object read once per process.

A setting is one field of ``Settings``: its name, type (the annotation), default, and in its
``setting(...)`` declaration the help text, the environment variable(s), the ``facebank serve`` flag
and the CDK context key. Everything else is derived from these declarations:

* ``Settings.from_env()``, the only reader of ``FACEBANK_*`` variables;
* the flags of ``facebank serve`` with their help text and defaults (``add_flags`` / ``with_flags``);
* the CDK app's context (``Settings.from_context``: ``app.py``, ``cdk -c key=value``) and the
  environment the stack gives its functions (``Settings.environment``).

Everything below the composition root (operations, engine, storage) receives values, never the
environment, so a test builds a ``Settings`` directly. Adding a setting is adding a field here.
"""

from __future__ import annotations

import argparse
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

SPEC = "facebank.setting"


@dataclass(frozen=True)
class Spec:
    """How a setting is set besides its default: environment variables (the first one set wins), a
    ``facebank serve`` flag, a CDK context key (the stack then passes it to the functions that use it)."""

    help: str
    env: tuple[str, ...] = ()
    flag: str | None = None
    context: str | None = None
    shown_default: str | None = None  # the default in help text, when the field's default is None


def setting(
    default: Any,
    help: str,  # noqa: A002 - argparse's word
    *,
    env: str | tuple[str, ...] = (),
    flag: str | None = None,
    context: str | None = None,
    shown_default: str | None = None,
) -> Any:
    spec = Spec(help, (env,) if isinstance(env, str) else env, flag, context, shown_default)
    return field(default=default, metadata={SPEC: spec})


def _default_model_dir(env: Mapping[str, str]) -> Path:
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "facebank" / "models"


@dataclass(frozen=True)
class Settings:
    # Models
    pack: str | None = setting(
        None, "model pack: open, fused or mobile", env="FACEBANK_PACK", flag="--pack", context="pack",
        shown_default="open",
    )  # fmt: skip
    model_dir: Path | None = setting(
        None, "verified model file cache", env="FACEBANK_MODEL_DIR", shown_default="~/.cache/facebank/models"
    )
    model_mirror: str | None = setting(
        None,
        "directory to take model files from instead of downloading",
        env="FACEBANK_MODEL_MIRROR",
        flag="--mirror",
        shown_default="none: download",
    )
    ort_threads: int = setting(1, "onnxruntime intra-op threads per inference", env="FACEBANK_ORT_THREADS")
    # facebank serve
    host: str = setting("127.0.0.1", "address to listen on", flag="--host")
    port: int = setting(8080, "TCP port to listen on", flag="--port")
    log_level: str = setting("INFO", "log level: DEBUG, INFO, WARNING or ERROR", flag="--log-level")
    # Embedded storage (facebank serve)
    data_dir: Path | None = setting(
        None, "embedded storage directory", env="FACEBANK_DATA_DIR", flag="--data-dir", shown_default="./facebank-data"
    )
    access_key_id: str | None = setting(None, "the one key pair serve accepts", env="FACEBANK_ACCESS_KEY_ID")
    secret_access_key: str | None = setting(None, "its secret", env="FACEBANK_SECRET_ACCESS_KEY")
    s3_endpoint_url: str | None = setting(
        None, "S3 endpoint for S3Object images", flag="--s3-endpoint-url", shown_default="boto3's own"
    )
    # ARNs (collections): the region and account the server says it is in
    region: str = setting(
        "us-east-1",
        "region in ARNs and of the AWS clients",
        env=("FACEBANK_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        flag="--region",
    )
    account_id: str = setting("000000000000", "account in ARNs", env="FACEBANK_ACCOUNT_ID", flag="--account-id")
    # AWS storage (Lambda)
    vector_bucket: str | None = setting(None, "embeddings bucket", env="FACEBANK_VECTOR_BUCKET")
    table_prefix: str = setting("facebank-", "DynamoDB table name prefix", env="FACEBANK_TABLE_PREFIX")
    # Ingest and compaction functions
    ingest_table: str | None = setting(None, "ingest ledger table", env="FACEBANK_INGEST_TABLE")
    ingest_bucket: str = setting("", "bucket the ingest function indexes from", env="FACEBANK_INGEST_BUCKET")
    ingest_prefix: str = setting(
        "", "key prefix for indexing, e.g. faces/", env="FACEBANK_INGEST_PREFIX", context="ingestPrefix"
    )
    compact_min_age_s: float = setting(
        300.0, "segments younger than this are not compacted (s)", env="FACEBANK_COMPACT_MIN_AGE_S"
    )
    # Limits and caches
    segment_cache_mb: int = setting(4096, "vector segment cache bound (MB)", env="FACEBANK_SEGMENT_CACHE_MB")
    max_faces_per_collection: int = setting(
        20_000_000, "most faces in one collection", env="FACEBANK_MAX_FACES_PER_COLLECTION"
    )
    # Celebrity gallery (AWS; embedded keeps it in data_dir/celebrities.sqlite3)
    celebrity_table: str | None = setting(None, "celebrity gallery table (AWS)", env="FACEBANK_CELEBRITY_TABLE")
    # Stored-video jobs (docs/video.md)
    video_sample_fps: float = setting(
        4.0, "frames analysed per second of video (docs/video.md)", env="FACEBANK_VIDEO_SAMPLE_FPS"
    )
    video_workers: int = setting(
        1, "video jobs analysed at once by serve", env="FACEBANK_VIDEO_WORKERS", flag="--video-workers"
    )
    video_segment_s: int = setting(
        120, "seconds of video per analysis segment", env="FACEBANK_VIDEO_SEGMENT_S", context="videoSegmentSeconds"
    )
    max_video_jobs: int = setting(
        20,
        "video jobs IN_PROGRESS at once (Rekognition's quota; LimitExceededException above)",
        env="FACEBANK_MAX_VIDEO_JOBS",
        context="maxVideoJobs",
    )
    max_stream_processors: int = setting(
        100,
        "stream processors one deployment holds (CreateStreamProcessor: LimitExceededException above)",
        env="FACEBANK_MAX_STREAM_PROCESSORS",
        context="maxStreamProcessors",
    )
    sns_endpoint_url: str | None = setting(
        None,
        "SNS endpoint for video job notifications",
        env="FACEBANK_SNS_ENDPOINT_URL",
        flag="--sns-endpoint-url",
        shown_default="boto3's own",
    )
    video_queue_url: str | None = setting(None, "the video worker's queue (AWS)", env="FACEBANK_VIDEO_QUEUE_URL")
    notification_topics: tuple[str, ...] = setting(
        (),
        "comma-separated SNS topic ARN patterns video jobs may notify (empty: any; the stack's default: "
        "arn:<partition>:sns:<region>:<account>:*, its own account)",
        env="FACEBANK_NOTIFICATION_TOPICS",
        context="facebank:notificationTopics",
    )
    # Stream processors (docs/streams.md)
    streams: tuple[str, ...] = setting(
        (),
        "a stream processor input: NAME=URL, NAME the Kinesis video stream named in its Input ARN, URL a file, "
        "RTSP, HTTP or HLS source (repeat the flag; the variable: comma-separated)",
        env="FACEBANK_STREAMS",
        flag="--stream",
    )
    kinesis_endpoint_url: str | None = setting(
        None,
        "Kinesis Data Streams endpoint stream processors write their records to",
        env="FACEBANK_KINESIS_ENDPOINT_URL",
        flag="--kinesis-endpoint-url",
        shown_default="boto3's own",
    )
    stream_sample_fps: float = setting(
        4.0, "frames analysed per second of a live stream (docs/streams.md)", env="FACEBANK_STREAM_SAMPLE_FPS"
    )
    stream_consumer_function: str | None = setting(
        None,
        "the stream consumer Lambda function StartStreamProcessor invokes (AWS; infra/streams.py)",
        env="FACEBANK_STREAM_CONSUMER_FUNCTION",
    )
    # Sharded search (facebank/search/shards.py, facebank/aws/shard_search.py)
    shard_rows: int = setting(
        500_000,
        "most rows per shard (compaction and rebalancing)",
        env="FACEBANK_SHARD_ROWS",
        context="shardRows",
    )
    shard_function: str | None = setting(
        None, "shard functions' name prefix (None: in-process)", env="FACEBANK_SHARD_FUNCTION"
    )
    shard_slots: int = setting(1, "shard functions <prefix>0 .. <prefix><slots - 1>", env="FACEBANK_SHARD_SLOTS")
    shard_concurrency: int = setting(64, "shard invocations in flight per search", env="FACEBANK_SHARD_CONCURRENCY")

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir if self.model_dir is not None else _default_model_dir(os.environ)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f, spec in declared():
            for name in spec.env:
                if raw := env.get(name):
                    values[f.name] = parse(f.name, raw, name)
                    break
        settings = cls(**values)
        if settings.model_dir is None:
            settings = replace(settings, model_dir=_default_model_dir(env))
        return settings

    @classmethod
    def from_context(cls, context: Callable[[str], Any]) -> Settings:
        """The settings a CDK app's context sets (``cdk -c maxVideoJobs=10`` or cdk.json); the others
        keep their defaults. ``context`` is ``app.node.try_get_context``."""
        values: dict[str, Any] = {}
        for f, spec in declared():
            raw = context(spec.context) if spec.context else None
            if raw is None or raw == "":
                continue
            if isinstance(raw, list):
                raw = ",".join(str(v) for v in raw)
            values[f.name] = parse(f.name, str(raw), spec.context or f.name)
        return cls(**values)

    def environment(self, *names: str) -> dict[str, str]:
        """The named settings as a function's environment (their first variable), as from_env reads them."""
        return variables(**{name: getattr(self, name) for name in names})


# --- derived from the declarations


def variables(**values: Any) -> dict[str, str]:
    """A function's environment from setting names (``vector_bucket=...``): each value under its
    setting's variable, as ``from_env`` reads it back (the stack passes values it computes, such as
    resource names, without spelling the variables again)."""
    out = {}
    for name, value in values.items():
        spec = spec_of(name)
        if not spec.env:
            raise ValueError(f"setting {name} has no environment variable")
        out[spec.env[0]] = ",".join(value) if isinstance(value, tuple | list) else str(value)
    return out


def declared() -> Iterable[tuple[Any, Spec]]:
    """(dataclass field, its Spec) for every setting, in declaration order."""
    return [(f, f.metadata[SPEC]) for f in fields(Settings)]


def spec_of(name: str) -> Spec:
    [spec] = [s for f, s in declared() if f.name == name]
    return spec


def default_of(name: str) -> Any:
    [default] = [f.default for f, _ in declared() if f.name == name]
    return default


def _types() -> dict[str, Any]:
    return typing.get_type_hints(Settings)


def parse(name: str, raw: str, source: str) -> Any:
    """A setting's value from text (an environment variable, a flag, a CDK context value)."""
    kind = _types()[name]
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"{source}={raw!r} is not a{'n integer' if kind is int else ' number'}") from None
    if kind == Path | None:
        return Path(raw).expanduser()
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def help_text(name: str) -> str:
    """The setting's help with where its value comes from and its default."""
    spec, default = spec_of(name), default_of(name)
    shown = (
        spec.shown_default
        if default is None
        else (",".join(default) or '""')
        if isinstance(default, tuple)
        else default
    )
    if default == "":
        shown = '""'
    source = f"{', '.join(spec.env)} or {shown}" if spec.env else shown
    return f"{spec.help} (default: {source})"


def add_flags(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """The settings' flags (all declared ones, or those named), with help text and defaults. A flag of
    a setting with an environment variable defaults to None: the environment's value then stands."""
    chosen = set(names) if names is not None else None
    types = _types()
    for f, spec in declared():
        if spec.flag is None or (chosen is not None and f.name not in chosen):
            continue
        kind = types[f.name]
        if kind == tuple[str, ...]:  # repeatable: each occurrence adds a value
            parser.add_argument(spec.flag, action="append", default=None, metavar="VALUE", help=help_text(f.name))
            continue
        parser.add_argument(
            spec.flag,
            default=None if spec.env else f.default,
            type=kind if kind in (int, float) else str,
            metavar=f.name.upper() if kind in (int, float) else None,
            help=help_text(f.name),
        )


def with_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """Command-line flags over the environment's settings (a flag left out keeps the env value)."""
    values: dict[str, Any] = {}
    for f, spec in declared():
        if spec.flag is None:
            continue
        value = getattr(args, spec.flag.lstrip("-").replace("-", "_"), None)
        if isinstance(value, list):  # a repeatable flag: its values, not split further
            values[f.name] = tuple(value)
        elif value is not None:
            values[f.name] = parse(f.name, value, spec.flag) if isinstance(value, str) else value
    return replace(settings, **values)
