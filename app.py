#!/usr/bin/env python3
"""CDK app: `cdk synth` / `cdk deploy` the facebank stack into your own AWS account.

Parameters come from CDK context (``cdk -c key=value``, or cdk.json, which holds feature flags and
no defaults). Each is declared once: the deployment's in ``infra/parameters.py``, the run-time
settings a deployment may choose (``pack``, ``maxVideoJobs``, ``videoSegmentSeconds``,
``shardRows``, ``ingestPrefix``, ``facebank:notificationTopics``) in ``facebank/settings.py``.
``python -m infra.parameters`` lists them all with their defaults (docs/deploy.md shows the list).

``npx cdk deploy`` is the one command: synthesis builds the two Lambda layers itself with
``layers/build.py``, without Docker (infra/layers.py): the dependency layer from PyPI's manylinux
wheels at constraints.txt's versions, the model layer from the verified model cache
(``FACEBANK_MODEL_DIR``, default ``~/.cache/facebank/models``), upstream or, offline, the directory
in ``FACEBANK_MODEL_MIRROR``. Builds are cached in layers/build/ by a hash of their inputs, so a
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

from infra.parameters import StackParameters
from infra.stack import FacebankStack, LayerError

TRUE = {"1", "true", "yes", "on"}


def parameters(app: cdk.App) -> StackParameters:
    params = StackParameters.from_context(app.node.try_get_context)
    if os.environ.get("FACEBANK_SKIP_LAYER_BUILD", "").strip().lower() in TRUE:
        params.skip_layer_build = True
    return params


def build(app: cdk.App) -> FacebankStack:
    return FacebankStack(
        app,
        "Facebank",
        params=parameters(app),
        description="facebank: self-hosted Amazon Rekognition-compatible face API",
    )


def cdk_json_context() -> dict:
    """cdk.json's context (feature flags). The cdk CLI passes it itself; running ``python app.py``
    directly does not read cdk.json, so the app supplies it (values from the CLI take precedence)."""
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
        stack = build(app)
    except (LayerError, ValueError) as exc:
        sys.exit(f"facebank: cannot synthesise: {exc}")
    if stack.params.nag:
        add_nag(app)
    app.synth()


if __name__ == "__main__":
    main()
