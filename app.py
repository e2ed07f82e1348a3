#!/usr/bin/env python3
"""CDK app: `cdk synth` / `cdk deploy` the facebank stack into your own AWS account.

Context (``-c key=value`` or cdk.json): stackName (facebank), pack (mobile), architecture (arm64 |
x86_64), memorySize (2048), logRetentionDays (30), imageBuckets (comma-separated; default any
bucket), modelLayerDir / depsLayerDir (default layers/build/models, layers/build/deps) and
skipLayerBuild (true: synthesise with tiny placeholder layers; also FACEBANK_SKIP_LAYER_BUILD=1).
Build the layers first:

    python layers/build.py models --pack mobile --out layers/build/models
    python layers/build.py deps --arch arm64 --out layers/build/deps
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aws_cdk as cdk

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra.stack import FacebankStack, LayerError

TRUE = {"1", "true", "yes", "on"}


def _flag(value) -> bool:
    return value is True or str(value).strip().lower() in TRUE


def build(app: cdk.App) -> FacebankStack:
    ctx = app.node.try_get_context
    buckets = [b.strip() for b in str(ctx("imageBuckets") or "").split(",") if b.strip()]
    stack_name = ctx("stackName") or "facebank"
    return FacebankStack(
        app,
        "Facebank",
        stack_name=stack_name,
        pack=ctx("pack") or "mobile",
        architecture=ctx("architecture") or "arm64",
        memory_size=int(ctx("memorySize") or 2048),
        log_retention_days=int(ctx("logRetentionDays") or 30),
        model_layer_dir=ctx("modelLayerDir"),
        deps_layer_dir=ctx("depsLayerDir"),
        use_placeholder_layers=_flag(ctx("skipLayerBuild")) or _flag(os.environ.get("FACEBANK_SKIP_LAYER_BUILD", "")),
        image_buckets=buckets or None,
        description="facebank: self-hosted Amazon Rekognition-compatible face API",
    )


def main() -> None:
    app = cdk.App()  # outdir: CDK_OUTDIR, as set by the cdk CLI
    try:
        build(app)
    except (LayerError, ValueError) as exc:
        sys.exit(f"facebank: cannot synthesise: {exc}")
    app.synth()


if __name__ == "__main__":
    main()
