"""The platform every feature construct builds on: factories with public names (table, bucket,
layer, queue with dead-letter queue and alarm, function) and ``Platform``, what the root stack
shares with the feature stacks (tables, buckets, layers, code, parameters).

A feature (infra/operations.py, video.py, ingest.py, compaction.py, shards.py, api.py) is a
``FeatureStack``: a CloudFormation nested stack holding its functions, queues and rules. Stateful
resources (tables, buckets) stay in the root stack under their original logical ids, so an upgrade
from the one-stack layout keeps the data (docs/deploy.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from aws_cdk import Aws, CfnParameter, Duration, Fn, NestedStack, RemovalPolicy, Stack, Stage
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from facebank.engine.packs import Pack
from facebank.settings import variables
from infra.access import Access
from infra.layers import LayerBuild, LocalLayerBundling, bundled_layer_code
from infra.nag import acknowledge_role
from infra.parameters import StackParameters

PITR_DAYS = 35  # point-in-time recovery window; noncurrent segment versions are kept as long
VECTOR_PREFIX = "vectors/"
RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURES = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}
LAYER_MODEL_DIR = "/opt/models"  # where Lambda mounts the model layer's models/
EMBEDDINGS_ARN = "EmbeddingsBucketArn"  # a feature stack's parameter: IAM statements and nag findings name it

# What a function holds besides its segment cache (MB): the Python runtime with numpy, boto3 and
# Powertools; the models and onnxruntime's arena where it loads them.
RUNTIME_MB = 256
MODELS_MB = 512
ID_BYTES = 4 * 36  # a cached row's face id: numpy unicode, 36 characters


def shard_mb(shard_rows: int, dimension: int = 128) -> int:
    """A cached shard's size: float32 vectors of the pack's dimension plus ids."""
    return -(-shard_rows * (4 * dimension + ID_BYTES) // (1 << 20))


def segment_cache_mb(memory_mb: int, *, models: bool, shard_rows: int, dimension: int = 128) -> int:
    """The segment cache bound for a function of memory_mb: what is left after the runtime (and
    models), minus room to load one more shard-sized segment (reading one briefly holds the
    object's bytes and the decoded copy beside the cache: about twice its size)."""
    reserve = RUNTIME_MB + (MODELS_MB if models else 0) + 2 * shard_mb(shard_rows, dimension)
    return max(64, memory_mb - reserve)


# --- factories


def removal_policy(params: StackParameters) -> RemovalPolicy:
    return RemovalPolicy.DESTROY if params.removal_policy == "destroy" else RemovalPolicy.RETAIN


def table(
    scope: Construct,
    id_: str,
    table_name: str,
    partition: str,
    sort: str | None = None,
    *,
    removal: RemovalPolicy,
    ttl: str | None = None,
) -> dynamodb.Table:
    """On-demand, point-in-time recovery, encrypted; retained tables are deletion-protected too."""
    return dynamodb.Table(
        scope,
        id_,
        table_name=table_name,
        partition_key=dynamodb.Attribute(name=partition, type=dynamodb.AttributeType.STRING),
        sort_key=dynamodb.Attribute(name=sort, type=dynamodb.AttributeType.STRING) if sort else None,
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True, recovery_period_in_days=PITR_DAYS
        ),
        encryption=dynamodb.TableEncryption.AWS_MANAGED,
        removal_policy=removal,
        deletion_protection=removal == RemovalPolicy.RETAIN,
        time_to_live_attribute=ttl,
    )


def bucket(
    scope: Construct,
    id_: str,
    *,
    removal: RemovalPolicy,
    access_logs: s3.IBucket | None,
    logs_prefix: str | None,
    **kwargs,
) -> s3.Bucket:
    """Private, encrypted, TLS only, ACLs disabled; server access logs to ``access_logs``."""
    return s3.Bucket(
        scope,
        id_,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        encryption=s3.BucketEncryption.S3_MANAGED,
        enforce_ssl=True,
        minimum_tls_version=1.2,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        removal_policy=removal,
        auto_delete_objects=removal == RemovalPolicy.DESTROY,
        server_access_logs_bucket=access_logs if logs_prefix else None,
        server_access_logs_prefix=logs_prefix,
        **kwargs,
    )


def layer(
    scope: Construct,
    id_: str,
    source: Path | LayerBuild,
    *,
    description: str,
    compatible_architectures: list[lambda_.Architecture],
) -> lambda_.LayerVersion:
    """A layer from a directory, or built at synth by layers/build.py (infra/layers.py)."""
    bundling: LocalLayerBundling | None = None
    if isinstance(source, LayerBuild):
        code, bundling = bundled_layer_code(source, RUNTIME)
    else:
        code = lambda_.Code.from_asset(str(source))
    try:
        return lambda_.LayerVersion(
            scope,
            id_,
            code=code,
            description=description,
            compatible_runtimes=[RUNTIME],
            compatible_architectures=compatible_architectures,
        )
    except RuntimeError as exc:  # CDK reports a bundling failure as its own RuntimeError
        if bundling is not None and bundling.failure is not None:
            raise bundling.failure from exc
        raise


def staged_dir(built: lambda_.LayerVersion) -> Path | None:
    """The directory CDK bundled a layer into, or None when this synth does not bundle its stack
    (`cdk destroy`, `cdk deploy OtherStack`): then there is nothing to measure."""
    asset = built.node.find_child("Code")
    if not isinstance(asset, s3_assets.Asset) or not Stack.of(built).bundling_required:
        return None
    path = Path(asset.asset_path)
    stage = Stage.of(built)
    if not path.is_absolute() and stage is not None:  # relative to the cloud assembly
        path = Path(stage.outdir) / path
    return path if path.is_dir() else None


@dataclass
class QueuePair:
    queue: sqs.Queue
    dead_letters: sqs.Queue
    alarm: cloudwatch.Alarm


def queue_with_dead_letters(
    scope: Construct,
    id_: str,
    *,
    visibility_timeout: Duration,
    max_receives: int,
    alarm_description: str,
    dead_letters_consumed: bool = False,
) -> QueuePair:
    """``<id>Queue`` (SSE, TLS only, 4 days) whose messages move to ``<id>DeadLetterQueue`` (14 days)
    after max_receives failures, and ``<id>DeadLettersAlarm`` when any arrive there. A dead-letter
    queue that a function consumes gets the same visibility timeout, and alarms on messages
    received (the consumer empties it), else on messages visible."""
    dead_letters = sqs.Queue(
        scope,
        f"{id_}DeadLetterQueue",
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=Duration.days(14),
        visibility_timeout=visibility_timeout if dead_letters_consumed else None,
    )
    queue = sqs.Queue(
        scope,
        f"{id_}Queue",
        encryption=sqs.QueueEncryption.SQS_MANAGED,  # S3 can publish to SSE-SQS queues (not to aws/sqs KMS)
        enforce_ssl=True,
        visibility_timeout=visibility_timeout,
        retention_period=Duration.days(4),
        dead_letter_queue=sqs.DeadLetterQueue(queue=dead_letters, max_receive_count=max_receives),
    )
    period = Duration.minutes(5)
    metric = (
        dead_letters.metric_number_of_messages_received(period=period)
        if dead_letters_consumed
        else dead_letters.metric_approximate_number_of_messages_visible(period=period)
    )
    alarm = cloudwatch.Alarm(
        scope,
        f"{id_}DeadLettersAlarm",
        alarm_description=alarm_description,
        metric=metric,
        threshold=0,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=1,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
    return QueuePair(queue, dead_letters, alarm)


@dataclass(frozen=True)
class ShardFanOut:
    """What a function whose access has ``shards`` gets: the shard functions' name prefix and
    count, and lambda:InvokeFunction on exactly their ARNs (infra/shards.py)."""

    prefix: str
    slots: int
    function_arns: tuple[str, ...]


@dataclass(frozen=True)
class StreamConsumer:
    """What StartStreamProcessor's function gets (``Access.stream_consumer``): lambda:InvokeFunction
    on the stream consumer function and the environment that names it. Set on the Platform by the
    stream consumer's stack (infra/streams.py) before the stream processor operations are built."""

    function_arn: str
    environment: dict[str, str]


@dataclass
class Platform:
    """What the root stack shares with every feature stack."""

    root: Stack
    params: StackParameters
    model_pack: Pack
    code_path: Path
    tables: dict[str, dynamodb.Table]
    vectors_bucket: s3.Bucket
    ingest_bucket_name: str
    deps_layer: lambda_.ILayerVersion
    model_layer: lambda_.ILayerVersion
    layer_sizes: dict[str, int]
    shard_fan_out: ShardFanOut | None = None
    stream_consumer: StreamConsumer | None = None
    # Every function, by name, with its role, access and memory (tests and the API read them).
    functions: dict[str, lambda_.Function] = field(default_factory=dict)
    roles: dict[str, iam.Role] = field(default_factory=dict)
    function_access: dict[str, Access] = field(default_factory=dict)
    _code: dict[str, lambda_.Code] = field(default_factory=dict)

    @property
    def table_prefix(self) -> str:
        return f"{self.params.stack_name}-"

    @property
    def removal(self) -> RemovalPolicy:
        return removal_policy(self.params)

    @property
    def architecture(self) -> lambda_.Architecture:
        return ARCHITECTURES[self.params.architecture]

    def code(self, scope: Construct) -> lambda_.Code:
        """The function code asset, one per stack (CDK binds an asset to one stack)."""
        stack = Stack.of(scope)
        key = stack.node.path
        if key not in self._code:
            self._code[key] = lambda_.Code.from_asset(str(self.code_path))
        return self._code[key]

    def embeddings_arn(self, scope: Construct) -> str:
        """The embeddings bucket's ARN as ``scope``'s stack sees it: in a feature stack the parameter
        ``EmbeddingsBucketArn``, so IAM statements (and cdk-nag's findings on them) name it plainly."""
        stack = Stack.of(scope)
        if not isinstance(stack, NestedStack):
            return self.vectors_bucket.bucket_arn
        param = stack.node.try_find_child(EMBEDDINGS_ARN)
        if param is None:
            param = CfnParameter(stack, EMBEDDINGS_ARN, type="String", description="the embeddings bucket's ARN")
            stack.set_parameter(EMBEDDINGS_ARN, self.vectors_bucket.bucket_arn)
        return cast(CfnParameter, param).value_as_string

    def objects_arn(self, scope: Construct, prefix: str) -> str:
        return Fn.join("", [self.embeddings_arn(scope), f"/{prefix}*"])

    def image_resources(self) -> list[str]:
        """Objects S3Object images may be read from: the ingest bucket plus `imageBuckets`."""
        buckets = list(self.params.image_buckets)
        if "*" in buckets:
            return ["*"]
        return [f"arn:{Aws.PARTITION}:s3:::{b}/*" for b in [self.ingest_bucket_name, *buckets]]

    def memory(self, name: str, access: Access) -> int:
        p = self.params
        return int(p.memory.get(name, p.memory_size if access.heavy else p.light_memory_size))

    def log_group(self, scope: Construct, id_: str) -> logs.LogGroup:
        group = logs.LogGroup(scope, id_, removal_policy=self.removal)
        cast(logs.CfnLogGroup, group.node.default_child).retention_in_days = self.params.log_retention_days
        return group

    def grant(self, scope: Construct, role: iam.Role, access: Access, image_resources: list[str]) -> None:
        """The tables, the vectors/ prefix and the images the access table lists."""
        for table_key, actions in access.tables().items():
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=[f"dynamodb:{a}" for a in sorted(actions)], resources=[self.tables[table_key].table_arn]
                )
            )
        object_actions = sorted(f"s3:{a}" for a in access.vectors if a != "ListBucket")
        if object_actions:
            role.add_to_policy(
                iam.PolicyStatement(actions=object_actions, resources=[self.objects_arn(scope, VECTOR_PREFIX)])
            )
        if "ListBucket" in access.vectors:
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[self.embeddings_arn(scope)],
                    conditions={"StringLike": {"s3:prefix": f"{VECTOR_PREFIX}*"}},
                )
            )
        if access.images:
            role.add_to_policy(
                iam.PolicyStatement(actions=["s3:GetObject", "s3:GetObjectVersion"], resources=image_resources)
            )

    def environment(self, access: Access, memory: int) -> dict[str, str]:
        env = {
            "ORT_DISABLE_TELEMETRY": "1",
            "POWERTOOLS_SERVICE_NAME": "facebank",
            "POWERTOOLS_METRICS_NAMESPACE": "facebank",
        } | variables(pack=self.model_pack.name)
        if access.models:
            env |= variables(model_dir=LAYER_MODEL_DIR)
        if access.storage:
            runtime = self.params.runtime
            cache = segment_cache_mb(
                memory, models=access.models, shard_rows=runtime.shard_rows, dimension=self.model_pack.dimension
            )
            env |= variables(
                vector_bucket=self.vectors_bucket.bucket_name,
                table_prefix=self.table_prefix,
                account_id=Aws.ACCOUNT_ID,
                segment_cache_mb=cache,
            ) | runtime.environment("shard_rows")
        if access.celebrities:
            env |= variables(celebrity_table=self.tables["celebrities"].table_name)
        fan_out = self.shard_fan_out
        if access.shards and fan_out is not None:
            env |= variables(shard_function=fan_out.prefix, shard_slots=fan_out.slots)
        if "PutItem" in access.streams:  # CreateStreamProcessor: the deployment's limit
            env |= self.params.runtime.environment("max_stream_processors")
        if access.stream_consumer and self.stream_consumer is not None:
            env |= self.stream_consumer.environment
        return env

    def function(
        self,
        scope: Construct,
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
        """A function with its own log group and role: least privilege from infra/access.py, no
        managed policy; the environment its access needs."""
        log_group = self.log_group(scope, f"{name}Logs")
        role = iam.Role(
            scope,
            f"{name}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"facebank {name}: least privilege (infra/access.py)",
        )
        log_group.grant_write(role)
        self.grant(scope, role, access, image_resources)
        fan_out = self.shard_fan_out
        if access.shards and fan_out is not None:
            role.add_to_policy(
                iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=list(fan_out.function_arns))
            )
        if access.stream_consumer and self.stream_consumer is not None:
            role.add_to_policy(
                iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[self.stream_consumer.function_arn])
            )
        memory = self.memory(memory_key or name, access)
        fn = lambda_.Function(
            scope,
            f"{name}Function",
            description=description,
            runtime=RUNTIME,
            architecture=self.architecture,
            handler=handler,
            code=self.code(scope),
            layers=layers or ([self.deps_layer, self.model_layer] if access.models else [self.deps_layer]),
            memory_size=memory,
            function_name=function_name,
            timeout=timeout,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            role=role,
            environment=self.environment(access, memory) | (extra_env or {}),
        )
        self.roles[name] = role
        self.functions[name] = fn
        self.function_access[name] = access
        vector_objects = access.vectors - {"ListBucket"}
        acknowledge_role(
            Stack.of(scope),
            role,
            image_resources if access.images else [],
            self.objects_arn(scope, VECTOR_PREFIX) if vector_objects else None,
        )
        return fn


class FeatureStack(NestedStack):
    """One feature's nested stack (its own CloudFormation template, well under 500 resources)."""

    def __init__(self, platform: Platform, construct_id: str, *, description: str) -> None:
        super().__init__(platform.root, construct_id, description=description)
        self.platform = platform
