"""The stack's parameters, each declared once: CDK context key, type, default and help.

Deployment-only parameters (architecture, memory, retention, ...) are the fields below; settings
the functions read at run time and a deployment may choose (``pack``, ``maxVideoJobs``,
``videoSegmentSeconds``, ``shardRows``, ``ingestPrefix``, ``facebank:notificationTopics``) are
declared in ``facebank/settings.py`` with their context key and arrive in ``runtime``. ``app.py``
reads both from CDK context (``cdk -c key=value`` or cdk.json, which holds no defaults) with
``StackParameters.from_context``; ``python -m infra.parameters`` prints them all with defaults.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from facebank.operations import OPERATIONS
from facebank.settings import Settings, declared

CONTEXT, HELP = "context", "help"

# CloudWatch Logs accepts only these retention periods.
RETENTION_DAYS = {
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
}  # fmt: skip
ARCHITECTURES = ("arm64", "x86_64")
REMOVAL_POLICIES = ("retain", "destroy")
FUNCTIONS = ("Ingest", "Compaction", "VideoWorker", "ShardSearch")  # besides one per operation


def parameter(default: Any, context: str, help: str) -> Any:  # noqa: A002 - argparse's word
    return field(default=default, metadata={CONTEXT: context, HELP: help})


@dataclass
class StackParameters:
    stack_name: str = parameter("facebank", "stackName", 'CloudFormation stack name; also the table prefix "<name>-"')
    architecture: str = parameter("arm64", "architecture", "arm64 | x86_64 (the dependency layer is built to match)")
    memory_size: int = parameter(2048, "memorySize", "MB for functions that decode images or score vectors")
    light_memory_size: int = parameter(512, "lightMemorySize", "MB for metadata-only functions")
    memory: dict[str, int] = parameter(
        None, "memory", 'per function MB, e.g. {"DetectFaces": 3008, "Ingest": 2048} (or DetectFaces=3008,...)'
    )
    log_retention_days: int = parameter(30, "logRetentionDays", "CloudWatch Logs retention (a value Logs accepts)")
    removal_policy: str = parameter(
        "retain", "removalPolicy", "retain | destroy: tables, buckets and log groups on `cdk destroy`"
    )
    image_buckets: list[str] = parameter(
        None,
        "imageBuckets",
        'comma-separated buckets S3Object images may be read from besides the ingest bucket; "*": any',
    )
    ingest_bucket: str = parameter("", "ingestBucket", "an existing bucket to index from (default: the stack's own)")
    ingest_concurrency: int = parameter(5, "ingestConcurrency", "most concurrent ingest functions")
    compaction_minutes: int = parameter(60, "compactionMinutes", "segment compaction period")
    throttle_rate: int = parameter(50, "throttleRate", "API stage throttling, requests per second")
    throttle_burst: int = parameter(100, "throttleBurst", "API stage throttling burst")
    api_cloudwatch_role: bool = parameter(True, "apiCloudWatchRole", "create API Gateway's account-level logging role")
    video_concurrency: int = parameter(20, "videoConcurrency", "most video workers at once")
    shard_functions: int = parameter(40, "shardFunctions", "shard-search functions searches fan out to")
    model_layer_dir: str = parameter("", "modelLayerDir", "a prebuilt model layer directory (layers/build.py)")
    deps_layer_dir: str = parameter("", "depsLayerDir", "a prebuilt dependency layer directory")
    video_layer_dir: str = parameter("", "videoLayerDir", "a prebuilt video worker layer directory")
    skip_layer_build: bool = parameter(
        False, "skipLayerBuild", "tiny placeholder layers (tests, reviews; not deployable)"
    )
    nag: bool = parameter(True, "nag", "run cdk-nag's AwsSolutions checks at synth (unacknowledged findings fail)")
    # The runtime settings a deployment chooses (facebank/settings.py, those with a context key).
    runtime: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        self.memory = dict(self.memory or {})
        self.image_buckets = list(self.image_buckets or [])

    @classmethod
    def from_context(cls, context: Callable[[str], Any]) -> StackParameters:
        values: dict[str, Any] = {}
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            key = f.metadata.get(CONTEXT)
            raw = context(key) if key else None
            if key is None or raw is None or raw == "":
                continue
            values[f.name] = _parse(hints[f.name], raw, key)
        return cls(**values, runtime=Settings.from_context(context))

    def with_runtime(self, **changes: Any) -> StackParameters:
        return replace(self, runtime=replace(self.runtime, **changes))

    def validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, not {self.architecture!r}")
        if self.log_retention_days not in RETENTION_DAYS:
            raise ValueError(f"logRetentionDays must be one of {sorted(RETENTION_DAYS)}, not {self.log_retention_days}")
        if self.removal_policy not in REMOVAL_POLICIES:
            raise ValueError(f"removalPolicy must be one of {sorted(REMOVAL_POLICIES)}, not {self.removal_policy!r}")
        for name, size in {
            "memorySize": self.memory_size,
            "lightMemorySize": self.light_memory_size,
            **self.memory,
        }.items():
            if not 128 <= int(size) <= 10240:
                raise ValueError(f"memory for {name} must be 128..10240 MB, not {size}")
        known = set(OPERATIONS) | set(FUNCTIONS)
        if unknown := sorted(set(self.memory) - known):
            raise ValueError(f"memory names unknown functions {unknown}; known: {sorted(known)}")
        if not 2 <= self.ingest_concurrency <= 1000:
            raise ValueError(f"ingestConcurrency must be 2..1000 (SQS event source), not {self.ingest_concurrency}")
        if self.compaction_minutes < 20:
            raise ValueError("compactionMinutes must be >= 20 (runs must not overlap; the timeout is 15 minutes)")
        if not 1 <= self.shard_functions <= 200:
            raise ValueError(f"shardFunctions must be 1..200, not {self.shard_functions}")
        if not 2 <= self.video_concurrency <= 1000:
            raise ValueError(f"videoConcurrency must be 2..1000 (SQS event source), not {self.video_concurrency}")
        self._validate_runtime()

    def _validate_runtime(self) -> None:
        rt = self.runtime
        if not 10_000 <= rt.shard_rows <= 5_000_000:
            raise ValueError(f"shardRows must be 10000..5000000, not {rt.shard_rows}")
        if rt.ingest_prefix and not re.fullmatch(r"[a-zA-Z0-9!_.*'()/-]+/", rt.ingest_prefix):
            raise ValueError(f"ingestPrefix must be a key prefix ending in '/', not {rt.ingest_prefix!r}")
        if not 10 <= rt.video_segment_s <= 600:
            raise ValueError(f"videoSegmentSeconds must be 10..600, not {rt.video_segment_s}")
        if rt.max_stream_processors < 1:
            raise ValueError(f"maxStreamProcessors must be at least 1, not {rt.max_stream_processors}")
        for topic in rt.notification_topics:
            if not re.fullmatch(r"arn:[a-z-*]+:sns:[a-z0-9-*]+:[0-9*]+:[A-Za-z0-9_*?-]+", topic):
                raise ValueError(f"facebank:notificationTopics must be SNS topic ARN patterns, not {topic!r}")


def _parse(kind: Any, raw: Any, key: str) -> Any:
    if kind is bool:
        return raw is True or str(raw).strip().lower() in {"1", "true", "yes", "on"}
    if kind is int:
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{key}={raw!r} is not an integer") from None
    if kind == list[str]:
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return [str(v).strip() for v in items if str(v).strip()]
    if kind == dict[str, int]:
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:  # Name=MB,Name=MB
                raw = dict(part.split("=", 1) for part in raw.split(",") if part.strip())
        return {str(k).strip(): int(v) for k, v in dict(raw).items()}
    return str(raw)


def describe() -> str:
    """Every context key with its default and help: the stack's and the runtime settings'."""
    rows = [(f.metadata[CONTEXT], repr(f.default) if f.default is not None else "-", f.metadata[HELP])
            for f in fields(StackParameters) if CONTEXT in f.metadata]  # fmt: skip
    for f, spec in declared():
        if spec.context:
            default = repr(f.default) if f.default is not None else "-"
            rows.append((spec.context, default, f"{spec.help} (functions: {spec.env[0]})"))
    return "\n".join(f"{key:28} {default:10} {text}" for key, default, text in rows)


if __name__ == "__main__":
    print(describe())
