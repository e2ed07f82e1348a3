"""FacebankStack: the Rekognition-compatible face API in your own AWS account.

What is deployed (``app.py`` reads the parameters from CDK context):

* one Lambda function per registered operation (``facebank.operations.OPERATIONS``), handler
  ``functions.<snake>.handler``, Python 3.12, arm64 by default, each with its own role granting
  exactly what ``infra/access.py`` lists for that operation;
* a REST API (regional, HTTPS): ``POST /<Operation>`` with AWS_IAM (SigV4, service execute-api)
  on every method, stage throttling, JSON access logs, X-Ray tracing;
* storage: DynamoDB tables ``<prefix>collections|faces|users`` (the key schemas
  ``facebank/storage/dynamodb.py`` expects) and the embeddings bucket (segments under
  ``vectors/``); on-demand, point-in-time recovery, encryption at rest, TLS only, no public access;
* S3-event indexing: ingest bucket (or an existing one) -> SQS (SSE, TLS only, dead-letter queue
  and an alarm on it) -> ingest function (``facebank/aws/ingest.py``) with its ledger table;
* scheduled segment compaction (EventBridge rule -> ``facebank/aws/compaction.py``);
* a bucket for the S3 server access logs of the buckets above.

Layers: the pack's verified model files (mounted at /opt/models) and the Python dependencies
(manylinux wheels for the target architecture), built at synth by ``layers/build.py`` through CDK
local bundling and cached (``infra/layers.py``), or taken from prebuilt directories. Synth refuses
to continue when a layer cannot be built or when function + layers would exceed Lambda's 250 MB
unzipped limit, so a bad deploy fails on the laptop, not in CloudFormation.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from aws_cdk import Aws, CfnOutput, Duration, Fn, RemovalPolicy, Stack, Stage
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from facebank.engine.packs import model_layer_files
from facebank.engine.packs import pack as get_pack
from facebank.operations import OPERATIONS
from infra.access import (
    COMPACTION_ACCESS,
    LEDGER_ACTIONS,
    Access,
    access_for,
    ingest_access,
)
from infra.celebrities import celebrity_environment, celebrity_table
from infra.layers import (
    LAYER_MARKER,
    LayerBuild,
    LayerError,
    LocalLayerBundling,
    bundled_layer_code,
    deps_layer_build,
    model_layer_build,
)
from infra.nag import acknowledge_role, acknowledge_stack
from infra.shards import SHARD_FUNCTION, add_sharded_search
from infra.video import VideoJobs

ROOT = Path(__file__).resolve().parent.parent

# Lambda: function code plus all its layers, unzipped, must fit in 250 MB (262,144,000 bytes).
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024

# CloudWatch Logs accepts only these retention periods.
RETENTION_DAYS = {
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
}  # fmt: skip

ARCHITECTURES = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}
REMOVAL_POLICIES = {"retain": RemovalPolicy.RETAIN, "destroy": RemovalPolicy.DESTROY}

# Ingest: object keys <prefix><CollectionId>/<ExternalImageId>.<ext>; S3 filters are case-sensitive.
INGEST_SUFFIXES = (".jpg", ".jpeg", ".png")
VECTOR_PREFIX = "vectors/"
API_TIMEOUT = Duration.seconds(30)  # the REST integration gives up at 29 s; a cold start loads the models
INGEST_TIMEOUT_S = 120
COMPACTION_TIMEOUT = Duration.minutes(15)
PITR_DAYS = 35  # point-in-time recovery window; noncurrent segment versions are kept as long

# Function code = facebank/ and functions/ from the repository root, nothing else (no byte code,
# no dotfiles).
CODE_DIRS = ("facebank", "functions")


def snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def tree_size(path: Path, skip=("__pycache__",), skip_suffixes=(".pyc",)) -> int:
    """Apparent (unzipped) size of a directory tree in bytes; sparse files count at full size."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            if not name.endswith(skip_suffixes):
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total


def code_size() -> int:
    return sum(tree_size(ROOT / d) for d in CODE_DIRS)


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def check_size(parts: dict[str, int], limit: int = LAMBDA_UNZIPPED_LIMIT) -> None:
    total = sum(parts.values())
    if total > limit:
        detail = ", ".join(f"{name} {mb(size)}" for name, size in parts.items())
        raise LayerError(
            f"function code plus layers is {mb(total)} unzipped ({detail}), over Lambda's "
            f"{mb(limit)} (250 MiB) limit: use a smaller model pack or trim the dependency layer"
        )


def staged_code() -> Path:
    """facebank/ and functions/ copied to a temporary directory: the function code asset. Pointing
    the asset at the repository root with exclude globs would make CDK walk every file below it
    (layers/build alone holds thousands), which dominated synthesis time."""
    base = Path(tempfile.mkdtemp(prefix="facebank-code-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for d in CODE_DIRS:
        shutil.copytree(ROOT / d, base / d, ignore=ignore)
    return base


def placeholder_layers() -> tuple[Path, Path]:
    """Tiny stand-in layer directories, so the stack synthesises (tests, reviews) without building."""
    base = Path(tempfile.mkdtemp(prefix="facebank-placeholder-layers-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    for sub, inner in (("models", "models"), ("deps", "python")):
        (base / sub / inner).mkdir(parents=True)
        (base / sub / inner / "PLACEHOLDER").write_text(
            "placeholder layer (skipLayerBuild): not deployable; synth without it builds the real one\n"
        )
    return base / "models", base / "deps"


def _marker(path: Path) -> dict:
    try:
        return json.loads((path / LAYER_MARKER).read_text())
    except (OSError, ValueError):
        return {}


def check_model_layer(path: Path, pack_name: str, files: list[str]) -> None:
    build = f"python layers/build.py models --pack {pack_name} --out {path}"
    if not path.is_dir():
        raise LayerError(f"model layer directory {path} is missing: build it with `{build}`")
    missing = [f for f in files if not (path / "models" / f).is_file()]
    if missing:
        raise LayerError(
            f"model layer {path} lacks {', '.join(missing)} for pack {pack_name!r}: rebuild it with `{build}`"
        )


def check_deps_layer(path: Path, arch: str) -> None:
    build = f"python layers/build.py deps --arch {arch} --out {path}"
    if not (path / "python").is_dir():
        raise LayerError(f"dependency layer directory {path}/python is missing: build it with `{build}`")
    built_for = _marker(path).get("arch")
    if built_for and built_for != arch:
        raise LayerError(
            f"dependency layer {path} was built for {built_for}, the stack is {arch}: rebuild it with `{build}`"
        )


@dataclass
class Settings:
    """The stack's parameters (``app.py`` fills them from CDK context; defaults in cdk.json)."""

    pack: str | None = None  # None: facebank's default pack (facebank.engine.packs.DEFAULT_PACK)
    architecture: str = "arm64"
    memory_size: int = 2048  # functions that decode images or score vectors
    light_memory_size: int = 512  # metadata-only functions
    memory: dict[str, int] = field(default_factory=dict)  # per function: {"DetectFaces": 3008, "Ingest": ...}
    log_retention_days: int = 30
    removal_policy: str = "retain"  # tables, buckets, log groups: retain | destroy
    image_buckets: list[str] | None = None  # buckets S3Object images may come from ("*": any)
    ingest_bucket: str | None = None  # an existing bucket to index from (else one is created)
    ingest_prefix: str = ""
    ingest_concurrency: int = 5
    compaction_minutes: int = 60
    throttle_rate: int = 50
    throttle_burst: int = 100
    api_cloudwatch_role: bool = True
    # Stored-video jobs (infra/video.py)
    notification_topics: list[str] | None = None  # SNS topic ARN patterns jobs may notify (default: own account)
    max_video_jobs: int = 20  # concurrent IN_PROGRESS jobs (Rekognition's default quota)
    video_segment_seconds: int = 120  # seconds of video per worker invocation
    video_concurrency: int = 20  # most concurrent video workers (segments analysed in parallel)
    shard_functions: int = 40  # shard-search functions (infra/shards.py): 20M faces / shard_rows
    shard_rows: int = 500_000  # most rows per shard (FACEBANK_SHARD_ROWS)

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
        known = set(OPERATIONS) | {"Ingest", "Compaction", "VideoWorker", SHARD_FUNCTION}
        if unknown := sorted(set(self.memory) - known):
            raise ValueError(f"memory names unknown functions {unknown}; known: {sorted(known)}")
        if not 2 <= self.ingest_concurrency <= 1000:
            raise ValueError(f"ingestConcurrency must be 2..1000 (SQS event source), not {self.ingest_concurrency}")
        if self.compaction_minutes < 20:
            raise ValueError("compactionMinutes must be >= 20 (runs must not overlap; the timeout is 15 minutes)")
        if not 1 <= self.shard_functions <= 200:
            raise ValueError(f"shardFunctions must be 1..200, not {self.shard_functions}")
        if not 10_000 <= self.shard_rows <= 5_000_000:
            raise ValueError(f"shardRows must be 10000..5000000, not {self.shard_rows}")
        if self.ingest_prefix and not re.fullmatch(r"[a-zA-Z0-9!_.*'()/-]+/", self.ingest_prefix):
            raise ValueError(f"ingestPrefix must be a key prefix ending in '/', not {self.ingest_prefix!r}")
        self._validate_video()

    def _validate_video(self) -> None:
        if not 2 <= self.video_concurrency <= 1000:
            raise ValueError(f"videoConcurrency must be 2..1000 (SQS event source), not {self.video_concurrency}")
        if not 10 <= self.video_segment_seconds <= 600:
            raise ValueError(f"videoSegmentSeconds must be 10..600, not {self.video_segment_seconds}")
        for topic in self.notification_topics or []:
            if not re.fullmatch(r"arn:[a-z-*]+:sns:[a-z0-9-*]+:[0-9*]+:[A-Za-z0-9_*?-]+", topic):
                raise ValueError(f"facebank:notificationTopics must be SNS topic ARN patterns, not {topic!r}")


class FacebankStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings | None = None,
        model_layer_dir: str | os.PathLike | None = None,
        deps_layer_dir: str | os.PathLike | None = None,
        video_layer_dir: str | os.PathLike | None = None,
        use_placeholder_layers: bool = False,
        # Shorthands for the Settings fields most used directly (tests, scripts):
        pack: str | None = None,
        architecture: str | None = None,
        memory_size: int | None = None,
        log_retention_days: int | None = None,
        image_buckets: list[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # Server access logs delivered by bucket policy, not ACLs (buckets here disable ACLs). Set on
        # the stack so it holds however the app is built (cdk.json sets it too).
        self.node.set_context("@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy", True)
        cfg = settings or Settings()
        for name, value in (
            ("pack", pack),
            ("architecture", architecture),
            ("memory_size", memory_size),
            ("log_retention_days", log_retention_days),
            ("image_buckets", image_buckets),
        ):
            if value is not None:
                setattr(cfg, name, value)
        cfg.validate()
        self.settings = cfg
        self.model_pack = get_pack(cfg.pack)
        self.removal = REMOVAL_POLICIES[cfg.removal_policy]
        self.arch = ARCHITECTURES[cfg.architecture]
        self.runtime = lambda_.Runtime.PYTHON_3_12
        self.table_prefix = f"{self.stack_name}-"

        self._layers(model_layer_dir, deps_layer_dir, use_placeholder_layers)
        self.code = lambda_.Code.from_asset(str(staged_code()))
        self._storage()
        self.tables["celebrities"] = celebrity_table(self)
        self.video = VideoJobs(self, "Video", topics=cfg.notification_topics)
        self._ingest_bucket_and_queue()
        self.roles: dict[str, iam.Role] = {}
        self.functions: dict[str, lambda_.Function] = {}
        self.function_access: dict[str, Access] = {}
        self.function_memory: dict[str, int] = {}
        self._operation_functions()
        self._ingest_function()
        self._compaction()
        self.video.add_worker(video_layer_dir, use_placeholder_layers)
        add_sharded_search(self)  # infra/shards.py: the shard function, fan-out grants, cache bounds
        self._api()
        self._outputs()
        acknowledge_stack(self)

    # --- layers -------------------------------------------------------------------------------

    def _layers(
        self,
        model_layer_dir: str | os.PathLike | None,
        deps_layer_dir: str | os.PathLike | None,
        use_placeholder_layers: bool,
    ) -> None:
        """Model and dependency layers, built at synth (cached) unless prebuilt or placeholder
        directories are given; function code + layers must fit Lambda's unzipped limit."""
        cfg, model_pack = self.settings, self.model_pack
        placeholder_models, placeholder_deps = placeholder_layers() if use_placeholder_layers else (None, None)
        model_dir = Path(model_layer_dir) if model_layer_dir else placeholder_models
        deps_dir = Path(deps_layer_dir) if deps_layer_dir else placeholder_deps
        model_files = model_layer_files(model_pack.name)  # the pack's and the person detector
        if model_layer_dir and not use_placeholder_layers:
            check_model_layer(Path(model_layer_dir), model_pack.name, model_files)
        if deps_layer_dir and not use_placeholder_layers:
            check_deps_layer(Path(deps_layer_dir), cfg.architecture)
        sources: dict[str, Path | LayerBuild] = {
            "model layer": model_dir or model_layer_build(model_pack.name, model_files),
            "dependency layer": deps_dir or deps_layer_build(cfg.architecture),
        }
        for what, src in sources.items():
            if isinstance(src, Path) and not src.is_dir():
                raise LayerError(f"{what} directory {src} is missing: see layers/build.py --help")
        self.layer_sizes = {"function code": code_size()}
        # Given directories are measured before CDK copies them, so an oversized one fails at once.
        self.layer_sizes |= {what: tree_size(src) for what, src in sources.items() if isinstance(src, Path)}
        check_size(self.layer_sizes)
        self.model_layer = self._layer(
            "ModelLayer",
            sources["model layer"],
            description=f"facebank model files for pack {model_pack.name} (mounted at /opt/models)",
            compatible_architectures=list(ARCHITECTURES.values()),
        )
        self.deps_layer = self._layer(
            "DependencyLayer",
            sources["dependency layer"],
            description=f"facebank Python dependencies ({cfg.architecture}, Python 3.12)",
            compatible_architectures=[self.arch],
        )
        # Built layers are measured as staged: what CDK zips and uploads.
        for what, layer in (("model layer", self.model_layer), ("dependency layer", self.deps_layer)):
            if isinstance(sources[what], LayerBuild) and (staged := self._staged_dir(layer)) is not None:
                self.layer_sizes[what] = tree_size(staged)
        check_size(self.layer_sizes)

    def _layer(
        self,
        id_: str,
        source: Path | LayerBuild,
        *,
        description: str,
        compatible_architectures: list[lambda_.Architecture],
    ) -> lambda_.LayerVersion:
        bundling: LocalLayerBundling | None = None
        if isinstance(source, LayerBuild):
            code, bundling = bundled_layer_code(source, self.runtime)
        else:
            code = lambda_.Code.from_asset(str(source))
        try:
            return lambda_.LayerVersion(
                self,
                id_,
                code=code,
                description=description,
                compatible_runtimes=[self.runtime],
                compatible_architectures=compatible_architectures,
            )
        except RuntimeError as exc:  # CDK reports a bundling failure as its own RuntimeError
            if bundling is not None and bundling.failure is not None:
                raise bundling.failure from exc
            raise

    def _staged_dir(self, layer: lambda_.LayerVersion) -> Path | None:
        """The directory CDK bundled ``layer`` into, or None when this synth does not bundle the
        stack (`cdk destroy`, `cdk deploy OtherStack`): then there is nothing to measure."""
        asset = layer.node.find_child("Code")
        if not isinstance(asset, s3_assets.Asset) or not self.bundling_required:
            return None
        path = Path(asset.asset_path)
        stage = Stage.of(self)
        if not path.is_absolute() and stage is not None:  # relative to the cloud assembly
            path = Path(stage.outdir) / path
        return path if path.is_dir() else None

    # --- storage ------------------------------------------------------------------------------

    def _table(self, id_: str, name: str, partition: str, sort: str | None = None, ttl: str | None = None):
        return dynamodb.Table(
            self,
            id_,
            table_name=f"{self.table_prefix}{name}",
            partition_key=dynamodb.Attribute(name=partition, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=sort, type=dynamodb.AttributeType.STRING) if sort else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True, recovery_period_in_days=PITR_DAYS
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            removal_policy=self.removal,
            # Retained tables are also protected from deletion outside CloudFormation.
            deletion_protection=self.removal == RemovalPolicy.RETAIN,
            time_to_live_attribute=ttl,
        )

    def _bucket(self, id_: str, *, logs_prefix: str | None, **kwargs) -> s3.Bucket:
        destroy = self.removal == RemovalPolicy.DESTROY
        return s3.Bucket(
            self,
            id_,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=self.removal,
            auto_delete_objects=destroy,
            server_access_logs_bucket=self.access_logs if logs_prefix else None,
            server_access_logs_prefix=logs_prefix,
            **kwargs,
        )

    def _storage(self) -> None:
        # Key schemas: facebank/storage/dynamodb.py (create_tables builds the same for tests).
        self.tables = {
            "collections": self._table("CollectionsTable", "collections", "collection_id"),
            "faces": self._table("FacesTable", "faces", "collection_id", "face_id"),
            # "expires": the request ledger's entries (facebank/storage/dynamodb.py) age out by TTL.
            "users": self._table("UsersTable", "users", "collection_id", "user_id", ttl="expires"),
        }
        self.ledger = self._table("IngestLedgerTable", "ingest", "object_key", ttl="expires")
        self.access_logs = self._bucket(
            "AccessLogsBucket",
            logs_prefix=None,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(max(self.settings.log_retention_days, 1)))],
        )
        # Versioned so a point-in-time restore of the tables can be matched by the segments of
        # that moment (compaction deletes segments); old versions expire with the PITR window.
        self.vectors_bucket = self._bucket(
            "EmbeddingsBucket",
            logs_prefix="embeddings/",
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-old-segment-versions",
                    noncurrent_version_expiration=Duration.days(PITR_DAYS),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
                s3.LifecycleRule(id="drop-expired-delete-markers", expired_object_delete_marker=True),
            ],
        )

    def _ingest_bucket_and_queue(self) -> None:
        cfg = self.settings
        self.ingest_dlq = sqs.Queue(
            self,
            "IngestDeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.ingest_queue = sqs.Queue(
            self,
            "IngestQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,  # S3 can publish to SSE-SQS queues (not to aws/sqs KMS)
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(6 * INGEST_TIMEOUT_S),  # AWS: 6x the function timeout
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.ingest_dlq, max_receive_count=5),
        )
        if cfg.ingest_bucket:
            # An existing bucket: CDK's notification custom resource adds our configurations and
            # leaves the bucket's other notifications in place.
            self.ingest_bucket = s3.Bucket.from_bucket_name(self, "IngestBucket", cfg.ingest_bucket)
            for event in (s3.EventType.OBJECT_CREATED, s3.EventType.OBJECT_REMOVED):
                for suffix in INGEST_SUFFIXES:
                    self.ingest_bucket.add_event_notification(
                        event,
                        s3n.SqsDestination(self.ingest_queue),
                        s3.NotificationKeyFilter(prefix=cfg.ingest_prefix or None, suffix=suffix),
                    )
            self.ingest_bucket_name = cfg.ingest_bucket
            return
        # A bucket of our own, notifying SQS natively (no custom resource, no Lambda with
        # s3:PutBucketNotification): S3 checks it may publish when the configuration is created,
        # so the queue policy must exist first and cannot reference the bucket. Hence a name made of
        # the stack name, account and region, and the ARN built from it.
        name = Fn.join("-", [self.stack_name.lower(), "ingest", Aws.ACCOUNT_ID, Aws.REGION])
        arn = f"arn:{Aws.PARTITION}:s3:::{name}"
        self.ingest_queue.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowIngestBucketNotifications",
                principals=[iam.ServicePrincipal("s3.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[self.ingest_queue.queue_arn],
                conditions={"ArnEquals": {"aws:SourceArn": arn}, "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            )
        )
        bucket = self._bucket("IngestBucket", logs_prefix="ingest/", bucket_name=name)
        prefix_rules = (
            [s3.CfnBucket.FilterRuleProperty(name="prefix", value=cfg.ingest_prefix)] if cfg.ingest_prefix else []
        )
        cfn = cast(s3.CfnBucket, bucket.node.default_child)
        cfn.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            queue_configurations=[
                s3.CfnBucket.QueueConfigurationProperty(
                    event=event,
                    queue=self.ingest_queue.queue_arn,
                    filter=s3.CfnBucket.NotificationFilterProperty(
                        s3_key=s3.CfnBucket.S3KeyFilterProperty(
                            rules=[
                                *prefix_rules,
                                s3.CfnBucket.FilterRuleProperty(name="suffix", value=suffix),
                            ]
                        )
                    ),
                )
                for event in ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
                for suffix in INGEST_SUFFIXES
            ]
        )
        bucket.node.add_dependency(self.ingest_queue.node.find_child("Policy"))
        self.ingest_bucket = bucket
        self.ingest_bucket_name = name

    # --- functions ----------------------------------------------------------------------------

    def _log_group(self, id_: str) -> logs.LogGroup:
        group = logs.LogGroup(self, id_, removal_policy=self.removal)
        cast(logs.CfnLogGroup, group.node.default_child).retention_in_days = self.settings.log_retention_days
        return group

    def _memory(self, name: str, access: Access) -> int:
        cfg = self.settings
        default = cfg.memory_size if access.heavy else cfg.light_memory_size
        return int(cfg.memory.get(name, default))

    def _image_resources(self) -> list[str]:
        """Objects S3Object images may be read from: the ingest bucket plus `imageBuckets`."""
        buckets = list(self.settings.image_buckets or [])
        if "*" in buckets:
            return ["*"]
        return [f"arn:{Aws.PARTITION}:s3:::{b}/*" for b in [self.ingest_bucket_name, *buckets]]

    def _grant(self, role: iam.Role, access: Access, image_resources: list[str]) -> None:
        for table_key, actions in access.tables().items():
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=[f"dynamodb:{a}" for a in sorted(actions)], resources=[self.tables[table_key].table_arn]
                )
            )
        object_actions = sorted(f"s3:{a}" for a in access.vectors if a != "ListBucket")
        if object_actions:
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=object_actions, resources=[self.vectors_bucket.arn_for_objects(f"{VECTOR_PREFIX}*")]
                )
            )
        if "ListBucket" in access.vectors:
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[self.vectors_bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": f"{VECTOR_PREFIX}*"}},
                )
            )
        if access.images:
            role.add_to_policy(
                iam.PolicyStatement(actions=["s3:GetObject", "s3:GetObjectVersion"], resources=image_resources)
            )
        self.video.grant(role, access)

    def _function(
        self,
        name: str,
        handler: str,
        access: Access,
        *,
        description: str,
        timeout: Duration,
        image_resources: list[str],
        extra_env: dict[str, str] | None = None,
        layers: list[lambda_.ILayerVersion] | None = None,
        memory_key: str | None = None,  # the `memory` entry that sizes it, if not its name
        function_name: str | None = None,
    ) -> lambda_.Function:
        log_group = self._log_group(f"{name}Logs")
        # Own role, no managed policy: logs to its own group only, plus the table in access.py.
        role = iam.Role(
            self,
            f"{name}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"facebank {name}: least privilege (infra/access.py)",
        )
        log_group.grant_write(role)
        self._grant(role, access, image_resources)
        env = {
            "ORT_DISABLE_TELEMETRY": "1",
            "POWERTOOLS_SERVICE_NAME": "facebank",
            "POWERTOOLS_METRICS_NAMESPACE": "facebank",
            "FACEBANK_PACK": self.model_pack.name,
        }
        if access.models:
            env["FACEBANK_MODEL_DIR"] = "/opt/models"
        if access.storage:
            env |= {
                "FACEBANK_VECTOR_BUCKET": self.vectors_bucket.bucket_name,
                "FACEBANK_TABLE_PREFIX": self.table_prefix,
                "FACEBANK_ACCOUNT_ID": Aws.ACCOUNT_ID,
            }
        env |= self.video.environment(access)
        env |= celebrity_environment(self, access)
        fn = lambda_.Function(
            self,
            f"{name}Function",
            description=description,
            runtime=self.runtime,
            architecture=self.arch,
            handler=handler,
            code=self.code,
            layers=layers or ([self.deps_layer, self.model_layer] if access.models else [self.deps_layer]),
            memory_size=self._memory(memory_key or name, access),
            function_name=function_name,
            timeout=timeout,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            role=role,
            environment=env | (extra_env or {}),
        )
        self.roles[name] = role
        self.functions[name] = fn
        self.function_access[name] = access
        self.function_memory[name] = self._memory(memory_key or name, access)
        vector_objects = access.vectors - {"ListBucket"}
        acknowledge_role(
            self,
            role,
            image_resources if access.images else [],
            self.vectors_bucket.arn_for_objects(f"{VECTOR_PREFIX}*") if vector_objects else None,
        )
        return fn

    def _operation_functions(self) -> None:
        # DetectFaces, CompareFaces, IndexFaces and Search*ByImage read the caller's S3Object images
        # with the function's role; the bucket is chosen per request, so the grant names the buckets
        # allowed up front: the ingest bucket plus the `imageBuckets` context ("*" for any).
        images = self._image_resources()
        self.operation_functions: dict[str, lambda_.Function] = {}
        for operation in sorted(OPERATIONS):
            module = snake(operation)
            if not (ROOT / "functions" / f"{module}.py").is_file():
                raise LayerError(f"operation {operation} has no Lambda entry point functions/{module}.py")
            try:
                access = access_for(operation)
            except KeyError as exc:
                raise LayerError(exc.args[0]) from None
            self.operation_functions[operation] = self._function(
                operation,
                f"functions.{module}.handler",
                access,
                description=f"facebank {operation} (Rekognition-compatible)",
                timeout=API_TIMEOUT,
                image_resources=images,
            )

    def _ingest_function(self) -> None:
        prefix = self.settings.ingest_prefix
        access = ingest_access()
        fn = self._function(
            "Ingest",
            "functions.ingest.handler",
            access,
            description="facebank: index/delete faces for ingest bucket objects (S3 -> SQS)",
            timeout=Duration.seconds(INGEST_TIMEOUT_S),
            image_resources=[f"arn:{Aws.PARTITION}:s3:::{self.ingest_bucket_name}/{prefix}*"],
            extra_env={
                "FACEBANK_INGEST_TABLE": self.ledger.table_name,
                "FACEBANK_INGEST_BUCKET": self.ingest_bucket_name,
                "FACEBANK_INGEST_PREFIX": prefix,
            },
        )
        self.roles["Ingest"].add_to_policy(
            iam.PolicyStatement(
                actions=[f"dynamodb:{a}" for a in sorted(LEDGER_ACTIONS)], resources=[self.ledger.table_arn]
            )
        )
        fn.add_event_source(
            event_sources.SqsEventSource(
                self.ingest_queue,
                batch_size=10,
                max_batching_window=Duration.seconds(2),
                report_batch_item_failures=True,
                max_concurrency=self.settings.ingest_concurrency,
            )
        )
        cloudwatch.Alarm(
            self,
            "IngestDeadLettersAlarm",
            alarm_description="facebank: ingest messages failed 5 times and are in the dead-letter queue",
            metric=self.ingest_dlq.metric_approximate_number_of_messages_visible(period=Duration.minutes(5)),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _compaction(self) -> None:
        fn = self._function(
            "Compaction",
            "functions.compact.handler",
            COMPACTION_ACCESS,
            description="facebank: merge small vector segments, drop vectors of deleted faces",
            timeout=COMPACTION_TIMEOUT,
            image_resources=[],
        )
        events.Rule(
            self,
            "CompactionSchedule",
            description="facebank: segment compaction",
            schedule=events.Schedule.rate(Duration.minutes(self.settings.compaction_minutes)),
            targets=[targets.LambdaFunction(fn, retry_attempts=0, max_event_age=Duration.minutes(15))],
        )
        fn.configure_async_invoke(retry_attempts=0)  # the next scheduled run catches up

    # --- API ----------------------------------------------------------------------------------

    def _api(self) -> None:
        cfg = self.settings
        # Rekognition requests are JSON with images base64-encoded inside, so no binary media
        # types are needed. API Gateway accepts up to 10 MB, Lambda 6 MB: larger images must be
        # passed as S3Object (facebank.client refuses them before sending).
        access_logs = self._log_group("ApiAccessLogs")
        api = apigw.RestApi(
            self,
            "Api",
            description="facebank: Amazon Rekognition-compatible face API (SigV4, service execute-api)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # Access and execution logging need API Gateway's account-level CloudWatch role; set
            # apiCloudWatchRole=false if your account already has one.
            cloud_watch_role=cfg.api_cloudwatch_role,
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                throttling_rate_limit=cfg.throttle_rate,
                throttling_burst_limit=cfg.throttle_burst,
                tracing_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # never log request bodies: they hold face images
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
            ),
        )
        for operation, fn in self.operation_functions.items():
            api.root.add_resource(operation).add_method(
                "POST", apigw.LambdaIntegration(fn), authorization_type=apigw.AuthorizationType.IAM
            )
        self.api = api

    def _outputs(self) -> None:
        CfnOutput(
            self,
            "ApiUrl",
            value=self.api.url,
            description="facebank.client(ApiUrl); POST <ApiUrl><Operation>, SigV4 execute-api",
        )
        CfnOutput(
            self,
            "IngestBucketName",
            value=self.ingest_bucket_name,
            description="put <CollectionId>/<ExternalImageId>.jpg|png here to index it",
        )
        CfnOutput(self, "IngestDeadLetterQueueUrl", value=self.ingest_dlq.queue_url)
        CfnOutput(self, "EmbeddingsBucketName", value=self.vectors_bucket.bucket_name)
        CfnOutput(self, "TablePrefix", value=self.table_prefix)
