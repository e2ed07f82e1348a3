"""FacebankStack: the Rekognition-compatible face API in your own AWS account.

The root stack holds what keeps data, under the logical ids of the one-stack layout (so an upgrade
keeps it: docs/deploy.md), plus the shared layers; every feature is a nested stack of its own
(infra/platform.py ``FeatureStack``), so no template nears CloudFormation's 500-resource limit:

* root: DynamoDB tables ``<prefix>collections|faces|users|ingest|jobs|celebrities`` (the key
  schemas ``facebank/storage`` expects; on-demand, point-in-time recovery, encrypted), the
  embeddings bucket (segments under ``vectors/``, job results under ``jobs/``), the ingest bucket,
  the access-log bucket; the model and dependency layers; the outputs;
* ``Shards``: the shard-search functions (infra/shards.py);
* ``ImageApi``, ``CollectionsAndUsers``, ``Celebrities``: one function per registered operation
  (infra/operations.py), each with its own role granting exactly what ``infra/access.py`` lists;
* ``Video``: stored-video queues, Start*/Get* functions and the worker (infra/video.py);
* ``StreamConsumers``: the stream processors' consumer function and its failure queue
  (infra/streams.py); ``StreamProcessors``: their seven operations;
* ``Ingest``: S3 events -> SQS (dead-letter queue, alarm) -> the ingest function (infra/ingest.py);
* ``Compaction``: scheduled segment compaction (infra/compaction.py);
* ``Api``: the REST API, ``POST /<Operation>`` with AWS_IAM on every method (infra/api.py).

Layers: the pack's verified model files (mounted at /opt/models) and the Python dependencies
(manylinux wheels for the target architecture), built at synth by ``layers/build.py`` through CDK
local bundling and cached (``infra/layers.py``), or taken from prebuilt directories. Synth refuses
to continue when a layer cannot be built or when function + layers would exceed Lambda's 250 MB
unzipped limit, so a bad deploy fails on the laptop, not in CloudFormation.
"""

from __future__ import annotations

import os
from pathlib import Path

from aws_cdk import CfnOutput, Duration, NestedStack, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from facebank.engine.packs import model_layer_files
from facebank.engine.packs import pack as get_pack
from facebank.operations import OPERATIONS
from infra.api import Api
from infra.celebrities import celebrity_outputs, celebrity_table
from infra.compaction import Compaction
from infra.ingest import Ingest, notify_ingest_queue, own_ingest_bucket_name
from infra.layers import (
    LayerBuild,
    LayerError,
    check_deps_layer,
    check_model_layer,
    check_size,
    code_size,
    deps_layer_build,
    model_layer_build,
    placeholder_layer,
    staged_code,
    tree_size,
)
from infra.nag import acknowledge_stack
from infra.operations import OperationFunctions
from infra.parameters import StackParameters
from infra.platform import ARCHITECTURES, PITR_DAYS, Platform, bucket, layer, removal_policy, staged_dir, table
from infra.shards import ShardSearch
from infra.streams import StreamConsumerStack
from infra.video import VideoJobs

__all__ = ["FacebankStack", "LayerError", "StackParameters"]


class FacebankStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        params: StackParameters | None = None,
        # Shorthands (tests, scripts):
        pack: str | None = None,
        model_layer_dir: str | os.PathLike | None = None,
        deps_layer_dir: str | os.PathLike | None = None,
        use_placeholder_layers: bool | None = None,
        **kwargs,
    ) -> None:
        params = params or StackParameters()
        if pack is not None:
            params = params.with_runtime(pack=pack)
        if model_layer_dir is not None:
            params.model_layer_dir = str(model_layer_dir)
        if deps_layer_dir is not None:
            params.deps_layer_dir = str(deps_layer_dir)
        if use_placeholder_layers is not None:
            params.skip_layer_build = use_placeholder_layers
        params.validate()
        super().__init__(scope, construct_id, stack_name=params.stack_name, **kwargs)
        # Server access logs delivered by bucket policy, not ACLs (buckets here disable ACLs). Set on
        # the stack so it holds however the app is built (cdk.json sets it too).
        self.node.set_context("@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy", True)
        self.params = params
        self.model_pack = get_pack(params.runtime.pack)
        self.table_prefix = f"{params.stack_name}-"
        self._storage()
        model_layer, deps_layer, sizes = self._layers()
        platform = Platform(
            root=self,
            params=params,
            model_pack=self.model_pack,
            code_path=staged_code(),
            tables=self.tables,
            vectors_bucket=self.vectors_bucket,
            ingest_bucket_name=params.ingest_bucket or own_ingest_bucket_name(params.stack_name),
            deps_layer=deps_layer,
            model_layer=model_layer,
            layer_sizes=sizes,
        )
        self.platform = platform
        self.shards = ShardSearch(platform)  # first: the searches' fan-out names its functions
        self.features = [OperationFunctions(platform, f) for f in ("images", "collections", "celebrities")]
        self.video = VideoJobs(platform)
        # The stream consumer's stack (infra/streams.py, issue 26), before the stream processor
        # operations: it sets platform.stream_consumer, which StartStreamProcessor's function is
        # granted lambda:InvokeFunction on. It shares the video worker's PyAV layer.
        self.stream_consumer = StreamConsumerStack(platform, self.video.layer)
        self.stream_processors = OperationFunctions(platform, "streams")
        self.ingest = Ingest(platform)
        if self.own_ingest_bucket is not None:
            notify_ingest_queue(self.own_ingest_bucket, self.ingest, params.runtime.ingest_prefix)
        self.compaction = Compaction(platform)
        self.api = Api(platform, {op: platform.functions[op] for op in OPERATIONS})
        self._outputs()
        acknowledge_stack(self, [])
        for nested in self.nested_stacks:
            acknowledge_stack(nested, [fn for fn in platform.functions.values() if Stack.of(fn) is nested])

    @property
    def nested_stacks(self) -> list[NestedStack]:
        return [c for c in self.node.children if isinstance(c, NestedStack)]

    @property
    def functions(self) -> dict[str, lambda_.Function]:
        return self.platform.functions

    # --- stateful: the root stack, the one-stack layout's logical ids --------------------------

    def _storage(self) -> None:
        removal, prefix = removal_policy(self.params), self.table_prefix
        # Key schemas: facebank/storage/dynamodb.py, dynamodb_jobs.py (create_tables builds the same).
        self.tables = {
            "collections": table(self, "CollectionsTable", f"{prefix}collections", "collection_id", removal=removal),
            "faces": table(self, "FacesTable", f"{prefix}faces", "collection_id", "face_id", removal=removal),
            # "expires": the request ledger's entries (facebank/storage/dynamodb.py) age out by TTL.
            "users": table(
                self, "UsersTable", f"{prefix}users", "collection_id", "user_id", removal=removal, ttl="expires"
            ),
            "ingest": table(self, "IngestLedgerTable", f"{prefix}ingest", "object_key", removal=removal, ttl="expires"),
            "jobs": table(self, "JobsTable", f"{prefix}jobs", "job_id", removal=removal),
            "celebrities": celebrity_table(self, prefix, removal),
            # facebank/storage/dynamodb_streams.py: the stream processors and their runs' checkpoints
            "streams": table(self, "StreamsTable", f"{prefix}streams", "name", removal=removal),
        }
        self.access_logs = bucket(
            self,
            "AccessLogsBucket",
            removal=removal,
            access_logs=None,
            logs_prefix=None,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(max(self.params.log_retention_days, 1)))],
        )
        # Versioned so a point-in-time restore of the tables can be matched by the segments of
        # that moment (compaction deletes segments); old versions expire with the PITR window.
        self.vectors_bucket = bucket(
            self,
            "EmbeddingsBucket",
            removal=removal,
            access_logs=self.access_logs,
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
        self.own_ingest_bucket: s3.Bucket | None = None
        if not self.params.ingest_bucket:
            self.own_ingest_bucket = bucket(
                self,
                "IngestBucket",
                removal=removal,
                access_logs=self.access_logs,
                logs_prefix="ingest/",
                bucket_name=own_ingest_bucket_name(self.params.stack_name),
            )

    # --- layers ---------------------------------------------------------------------------------

    def _layers(self) -> tuple[lambda_.LayerVersion, lambda_.LayerVersion, dict[str, int]]:
        """Model and dependency layers, built at synth (cached) unless prebuilt or placeholder
        directories are given; function code + layers must fit Lambda's unzipped limit."""
        params, model_pack = self.params, self.model_pack
        placeholder = params.skip_layer_build
        model_dir = Path(params.model_layer_dir) if params.model_layer_dir else None
        deps_dir = Path(params.deps_layer_dir) if params.deps_layer_dir else None
        model_files = model_layer_files(model_pack.name)  # the pack's and the person detector
        if model_dir and not placeholder:
            check_model_layer(model_dir, model_pack.name, model_files)
        if deps_dir and not placeholder:
            check_deps_layer(deps_dir, params.architecture)
        if placeholder:
            model_dir = model_dir or placeholder_layer("models")
            deps_dir = deps_dir or placeholder_layer("python")
        sources: dict[str, Path | LayerBuild] = {
            "model layer": model_dir or model_layer_build(model_pack.name, model_files),
            "dependency layer": deps_dir or deps_layer_build(params.architecture),
        }
        for what, src in sources.items():
            if isinstance(src, Path) and not src.is_dir():
                raise LayerError(f"{what} directory {src} is missing: see layers/build.py --help")
        sizes = {"function code": code_size()}
        # Given directories are measured before CDK copies them, so an oversized one fails at once.
        sizes |= {what: tree_size(src) for what, src in sources.items() if isinstance(src, Path)}
        check_size(sizes)
        model_layer = layer(
            self,
            "ModelLayer",
            sources["model layer"],
            description=f"facebank model files for pack {model_pack.name} (mounted at /opt/models)",
            compatible_architectures=list(ARCHITECTURES.values()),
        )
        deps_layer = layer(
            self,
            "DependencyLayer",
            sources["dependency layer"],
            description=f"facebank Python dependencies ({params.architecture}, Python 3.12)",
            compatible_architectures=[ARCHITECTURES[params.architecture]],
        )
        # Built layers are measured as staged: what CDK zips and uploads.
        for what, built in (("model layer", model_layer), ("dependency layer", deps_layer)):
            if isinstance(sources[what], LayerBuild) and (staged := staged_dir(built)) is not None:
                sizes[what] = tree_size(staged)
        check_size(sizes)
        return model_layer, deps_layer, sizes

    def _outputs(self) -> None:
        CfnOutput(
            self,
            "ApiUrl",
            value=self.api.api.url,
            description="facebank.client(ApiUrl); POST <ApiUrl><Operation>, SigV4 execute-api",
        )
        CfnOutput(
            self,
            "IngestBucketName",
            value=self.platform.ingest_bucket_name,
            description="put <CollectionId>/<ExternalImageId>.jpg|png here to index it",
        )
        CfnOutput(self, "IngestDeadLetterQueueUrl", value=self.ingest.dead_letters.queue_url)
        CfnOutput(self, "EmbeddingsBucketName", value=self.vectors_bucket.bucket_name)
        CfnOutput(self, "TablePrefix", value=self.table_prefix)
        CfnOutput(self, "VideoQueueUrl", value=self.video.queue.queue_url)
        CfnOutput(self, "JobsTableName", value=self.tables["jobs"].table_name)
        CfnOutput(self, "StreamsTableName", value=self.tables["streams"].table_name)
        celebrity_outputs(self, self.tables["celebrities"], self.model_pack.name)
