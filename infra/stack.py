"""FacebankStack: one Lambda function per Rekognition operation behind an IAM-authorised REST API.

Layout of what is deployed:

* function code: ``facebank/`` and ``functions/`` only (handler ``functions.<snake>.handler``);
* model layer: ``layers/build/models`` (``python layers/build.py models``), mounted at
  ``/opt/models`` and found through ``FACEBANK_MODEL_DIR``;
* dependency layer: ``layers/build/deps`` (``python layers/build.py deps --arch <arch>``), i.e.
  ``python/`` with numpy, onnxruntime, pillow, ... for the Lambda Python 3.12 runtime.

Synth refuses to continue when a layer directory is missing or when function + layers would exceed
Lambda's 250 MB unzipped limit, so a bad deploy fails on the laptop instead of in CloudFormation.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from facebank.engine.packs import pack as get_pack
from facebank.operations import OPERATIONS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_LAYER = ROOT / "layers" / "build" / "models"
DEFAULT_DEPS_LAYER = ROOT / "layers" / "build" / "deps"
LAYER_MARKER = "facebank-layer.json"  # written by layers/build.py

# Lambda: function code plus all its layers, unzipped, must fit in 250 MB (262,144,000 bytes).
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024

# CloudWatch Logs accepts only these retention periods.
RETENTION_DAYS = {
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
}

ARCHITECTURES = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}

# Function code = facebank/ and functions/ from the repository root, nothing else. Glob rules are
# applied in order, the last match wins: drop everything (``*`` does not match dotfiles, hence
# ``.*``), re-include the two packages, then drop byte code and dotfiles inside them again.
CODE_EXCLUDE = [
    "*",
    ".*",
    "!facebank",
    "!facebank/**",
    "!functions",
    "!functions/**",
    "**/__pycache__",
    "**/*.pyc",
    "**/.*",
]
CODE_DIRS = ("facebank", "functions")


class LayerError(RuntimeError):
    """A layer directory is missing, for the wrong architecture, or too large; says how to fix it."""


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


def placeholder_layers() -> tuple[Path, Path]:
    """Tiny stand-in layer directories, so the stack synthesises (tests, reviews) without building."""
    base = Path(tempfile.mkdtemp(prefix="facebank-placeholder-layers-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    for sub, inner in (("models", "models"), ("deps", "python")):
        (base / sub / inner).mkdir(parents=True)
        (base / sub / inner / "PLACEHOLDER").write_text(
            "placeholder layer: not deployable, build with layers/build.py\n"
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


class FacebankStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        pack: str = "mobile",
        architecture: str = "arm64",
        memory_size: int = 2048,
        log_retention_days: int = 30,
        model_layer_dir: str | os.PathLike | None = None,
        deps_layer_dir: str | os.PathLike | None = None,
        use_placeholder_layers: bool = False,
        image_buckets: list[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, not {architecture!r}")
        if log_retention_days not in RETENTION_DAYS:
            raise ValueError(f"logRetentionDays must be one of {sorted(RETENTION_DAYS)}, not {log_retention_days}")
        model_pack = get_pack(pack)

        # --- layers -------------------------------------------------------------------------
        if use_placeholder_layers:
            placeholder_models, placeholder_deps = placeholder_layers()
            model_dir = Path(model_layer_dir) if model_layer_dir else placeholder_models
            deps_dir = Path(deps_layer_dir) if deps_layer_dir else placeholder_deps
        else:
            model_dir = Path(model_layer_dir or DEFAULT_MODEL_LAYER)
            deps_dir = Path(deps_layer_dir or DEFAULT_DEPS_LAYER)
            check_model_layer(model_dir, model_pack.name, model_pack.files)
            check_deps_layer(deps_dir, architecture)
        for path, what in ((model_dir, "model"), (deps_dir, "dependency")):
            if not path.is_dir():
                raise LayerError(f"{what} layer directory {path} is missing: see layers/build.py --help")
        check_size(
            {"function code": code_size(), "model layer": tree_size(model_dir), "dependency layer": tree_size(deps_dir)}
        )

        arch = ARCHITECTURES[architecture]
        runtime = lambda_.Runtime.PYTHON_3_12
        model_layer = lambda_.LayerVersion(
            self,
            "ModelLayer",
            code=lambda_.Code.from_asset(str(model_dir)),
            description=f"facebank model files for pack {model_pack.name} (mounted at /opt/models)",
            compatible_runtimes=[runtime],
            compatible_architectures=list(ARCHITECTURES.values()),
        )
        deps_layer = lambda_.LayerVersion(
            self,
            "DependencyLayer",
            code=lambda_.Code.from_asset(str(deps_dir)),
            description=f"facebank Python dependencies ({architecture}, Python 3.12)",
            compatible_runtimes=[runtime],
            compatible_architectures=[arch],
        )
        code = lambda_.Code.from_asset(str(ROOT), exclude=CODE_EXCLUDE)

        # --- functions ----------------------------------------------------------------------
        # DetectFaces and CompareFaces read the caller's images (Image.S3Object) with the function's
        # role: the bucket is chosen by the caller per request, so the grant cannot name it up
        # front. Read-only object access is all they get; narrow it with the `imageBuckets` context
        # (comma-separated bucket names) when callers' buckets are known.
        if image_buckets:
            image_resources = [f"arn:{self.partition}:s3:::{b}/*" for b in image_buckets]
        else:
            image_resources = ["*"]
        self.functions: dict[str, lambda_.Function] = {}
        for operation in sorted(OPERATIONS):
            module = snake(operation)
            if not (ROOT / "functions" / f"{module}.py").is_file():
                raise LayerError(f"operation {operation} has no Lambda entry point functions/{module}.py")
            log_group = logs.LogGroup(self, f"{operation}Logs")
            log_group.node.default_child.retention_in_days = log_retention_days
            fn = lambda_.Function(
                self,
                f"{operation}Function",
                description=f"facebank {operation} (Rekognition-compatible)",
                runtime=runtime,
                architecture=arch,
                handler=f"functions.{module}.handler",
                code=code,
                layers=[deps_layer, model_layer],
                memory_size=memory_size,
                # API Gateway REST integrations time out at 29 s; a cold start loads the models.
                timeout=Duration.seconds(30),
                tracing=lambda_.Tracing.ACTIVE,
                log_group=log_group,
                environment={
                    "ORT_DISABLE_TELEMETRY": "1",
                    "FACEBANK_MODEL_DIR": "/opt/models",
                    "FACEBANK_PACK": model_pack.name,
                    "POWERTOOLS_SERVICE_NAME": "facebank",
                },
            )
            fn.add_to_role_policy(
                iam.PolicyStatement(actions=["s3:GetObject", "s3:GetObjectVersion"], resources=image_resources)
            )
            self.functions[operation] = fn

        # --- API ----------------------------------------------------------------------------
        # Rekognition requests are JSON with images base64-encoded inside, so no binary media
        # types are needed. API Gateway accepts up to 10 MB, Lambda 6 MB: larger images must be
        # passed as S3Object (the handler answers ImageTooLargeException otherwise).
        access_logs = logs.LogGroup(self, "ApiAccessLogs")
        access_logs.node.default_child.retention_in_days = log_retention_days
        api = apigw.RestApi(
            self,
            "Api",
            description="facebank: Amazon Rekognition-compatible face API (SigV4, service execute-api)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # Access logging needs API Gateway's account-level CloudWatch role.
            cloud_watch_role=True,
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                throttling_rate_limit=50,
                throttling_burst_limit=100,
                tracing_enabled=True,
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
        for operation, fn in self.functions.items():
            api.root.add_resource(operation).add_method(
                "POST", apigw.LambdaIntegration(fn), authorization_type=apigw.AuthorizationType.IAM
            )
        self.api = api
        CfnOutput(self, "ApiUrl", value=api.url, description="POST <ApiUrl><Operation>, SigV4-signed for execute-api")
