#!/usr/bin/env python3
"""CDK app: `cdk synth` / `cdk deploy` the facebank stack into your own AWS account.

Context (``-c key=value`` or cdk.json), with defaults:

  stackName (facebank)              CloudFormation stack name; also the table prefix "<stackName>-"
  pack (facebank's default pack)    model pack: open (permissive), fused or mobile
  architecture (arm64)              arm64 | x86_64 (the dependency layer is built to match)
  memorySize (2048)                 MB for functions that decode images or score vectors
  lightMemorySize (512)             MB for metadata-only functions (Describe/List/Delete..., users)
  memory ({})                       per function, e.g. '{"DetectFaces": 3008, "Ingest": 2048}'
  logRetentionDays (30)             CloudWatch Logs retention (a value Logs accepts)
  removalPolicy (retain)            retain | destroy: tables, buckets and log groups on `cdk destroy`
  imageBuckets ("")                 comma-separated buckets S3Object images may be read from, besides
                                    the ingest bucket; "*" for any bucket the role can reach
  ingestBucket ("")                 an existing bucket to index from (default: the stack creates one)
  ingestPrefix ("")                 key prefix for indexing, e.g. "faces/" (ends with "/")
  ingestConcurrency (5)             most concurrent ingest functions
  compactionMinutes (60)            segment compaction period
  throttleRate / throttleBurst (50 / 100)   API stage throttling, requests per second
  apiCloudWatchRole (true)          create API Gateway's account-level logging role
  modelLayerDir / depsLayerDir / videoLayerDir   prebuilt layer directories to deploy instead of
                                    building them at synth (`python layers/build.py models|deps|video
                                    --out DIR`); default unset
  facebank:notificationTopics       comma-separated SNS topic ARN patterns video jobs may notify
                                    (default: arn:<partition>:sns:<region>:<account>:*, this account)
  maxVideoJobs (20)                 concurrent IN_PROGRESS video jobs (LimitExceededException above)
  videoSegmentSeconds (120)         seconds of video one worker invocation analyses
  videoConcurrency (20)             most video workers at once (segments analysed in parallel)
  shardFunctions (40)               shard-search functions searches fan out to (docs/collections.md)
  shardRows (500000)                most faces per shard: compaction and rebalancing keep shards this size
  skipLayerBuild (false)            true: tiny placeholder layers (tests, reviews; not deployable);
                                    also FACEBANK_SKIP_LAYER_BUILD=1
  nag (true)                        run cdk-nag's AwsSolutions checks at synth (if cdk-nag is
                                    installed): an unacknowledged finding fails synthesis

``npx cdk deploy`` is the one command: synthesis builds the two Lambda layers itself with
``layers/build.py``, without Docker (infra/layers.py): the dependency layer from PyPI's manylinux
wheels at constraints.txt's versions, the model layer from upstream or, offline, from the directory
in FACEBANK_MODEL_MIRROR. Builds are cached in layers/build/ by a hash of their inputs, so a
later synth reuses them.

``CDK_OUTDIR=DIR python app.py`` synthesises into DIR (the cdk CLI sets CDK_OUTDIR itself).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import aws_cdk as cdk

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra.stack import FacebankStack, LayerError, Settings

TRUE = {"1", "true", "yes", "on"}


def _flag(value, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value is True or str(value).strip().lower() in TRUE


def _list(value) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [b.strip() for b in str(value or "").split(",") if b.strip()]


def _memory(value) -> dict[str, int]:
    if not value:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:  # Name=MB,Name=MB
            value = dict(part.split("=", 1) for part in value.split(",") if part.strip())
    return {str(k).strip(): int(v) for k, v in dict(value).items()}


def settings(ctx) -> Settings:
    def get(key, default):
        value = ctx(key)
        return default if value is None or value == "" else value

    return Settings(
        pack=get("pack", None),
        architecture=get("architecture", "arm64"),
        memory_size=int(get("memorySize", 2048)),
        light_memory_size=int(get("lightMemorySize", 512)),
        memory=_memory(ctx("memory")),
        log_retention_days=int(get("logRetentionDays", 30)),
        removal_policy=str(get("removalPolicy", "retain")).lower(),
        image_buckets=_list(ctx("imageBuckets")) or None,
        ingest_bucket=get("ingestBucket", None),
        ingest_prefix=get("ingestPrefix", ""),
        ingest_concurrency=int(get("ingestConcurrency", 5)),
        compaction_minutes=int(get("compactionMinutes", 60)),
        throttle_rate=int(get("throttleRate", 50)),
        throttle_burst=int(get("throttleBurst", 100)),
        api_cloudwatch_role=_flag(ctx("apiCloudWatchRole"), default=True),
        notification_topics=_list(ctx("facebank:notificationTopics")) or None,
        max_video_jobs=int(get("maxVideoJobs", 20)),
        video_segment_seconds=int(get("videoSegmentSeconds", 120)),
        video_concurrency=int(get("videoConcurrency", 20)),
        shard_functions=int(get("shardFunctions", 40)),
        shard_rows=int(get("shardRows", 500_000)),
    )


def build(app: cdk.App) -> FacebankStack:
    ctx = app.node.try_get_context
    stack_name = ctx("stackName") or "facebank"
    return FacebankStack(
        app,
        "Facebank",
        stack_name=stack_name,
        settings=settings(ctx),
        model_layer_dir=ctx("modelLayerDir") or None,
        deps_layer_dir=ctx("depsLayerDir") or None,
        video_layer_dir=ctx("videoLayerDir") or None,
        use_placeholder_layers=_flag(ctx("skipLayerBuild")) or _flag(os.environ.get("FACEBANK_SKIP_LAYER_BUILD", "")),
        description="facebank: self-hosted Amazon Rekognition-compatible face API",
    )


def cdk_json_context() -> dict:
    """cdk.json's context (defaults and feature flags). The cdk CLI passes it itself; running
    ``python app.py`` directly does not read cdk.json, so the app supplies it (values from the CLI
    take precedence over these)."""
    return json.loads((Path(__file__).resolve().parent / "cdk.json").read_text()).get("context", {})


def add_nag(app: cdk.App) -> bool:
    """cdk-nag's AwsSolutions pack as a CDK validation plugin (findings we accept are acknowledged
    with reasons in infra/nag.py). False when cdk-nag is not installed (it is a dev dependency)."""
    try:
        from cdk_nag import AwsSolutionsChecks
    except ImportError:
        print("facebank: cdk-nag not installed, AwsSolutions checks skipped (pip install -e '.[dev]')", file=sys.stderr)
        return False
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return True


def main() -> None:
    app = cdk.App(context=cdk_json_context())  # outdir: CDK_OUTDIR, as set by the cdk CLI
    try:
        build(app)
    except (LayerError, ValueError) as exc:
        sys.exit(f"facebank: cannot synthesise: {exc}")
    if _flag(app.node.try_get_context("nag"), default=True):
        add_nag(app)
    app.synth()


if __name__ == "__main__":
    main()
