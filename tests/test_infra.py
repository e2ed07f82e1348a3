"""The CDK stack synthesises with placeholder layers and has the shape we promise: one Python 3.12
function per operation, IAM auth on every method, read-only image access, retention, throttling."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

cdk = pytest.importorskip("aws_cdk", reason="aws-cdk-lib not installed (pip install aws-cdk-lib constructs)")
from aws_cdk.assertions import Match, Template

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facebank.operations import OPERATIONS
from infra.stack import FacebankStack, LayerError, check_size, snake

XRAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}  # added by Tracing.ACTIVE


def _app(tmp_path, **context) -> cdk.App:
    base = json.loads((ROOT / "cdk.json").read_text())["context"]
    return cdk.App(outdir=str(tmp_path / "cdk.out"), context={**base, "skipLayerBuild": True, **context})


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Template:
    import app as cdk_app

    stack = cdk_app.build(_app(tmp_path_factory.mktemp("synth")))
    return Template.from_stack(stack)


def _by_type(template: Template, kind: str) -> dict:
    return template.find_resources(kind)


def _function(template: Template, operation: str) -> tuple[str, dict]:
    [(lid, fn)] = [
        (lid, r) for lid, r in _by_type(template, "AWS::Lambda::Function").items()
        if r["Properties"].get("Handler") == f"functions.{snake(operation)}.handler"
    ]  # fmt: skip
    return lid, fn


def test_one_python312_arm64_function_per_operation(template):
    functions = _by_type(template, "AWS::Lambda::Function")
    handlers = sorted(f["Properties"]["Handler"] for f in functions.values())
    assert handlers == sorted(f"functions.{snake(op)}.handler" for op in OPERATIONS)
    for operation in OPERATIONS:
        assert (ROOT / "functions" / f"{snake(operation)}.py").is_file()
        _, fn = _function(template, operation)
        props = fn["Properties"]
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["arm64"]
        assert props["MemorySize"] == 2048
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert len(props["Layers"]) == 2
        env = props["Environment"]["Variables"]
        assert env["ORT_DISABLE_TELEMETRY"] == "1"
        assert env["FACEBANK_MODEL_DIR"] == "/opt/models"
        assert env["POWERTOOLS_SERVICE_NAME"] == "facebank"


def test_every_method_requires_iam(template):
    methods = _by_type(template, "AWS::ApiGateway::Method")
    assert len(methods) == len(OPERATIONS)
    for method in methods.values():
        assert method["Properties"]["AuthorizationType"] == "AWS_IAM"
        assert method["Properties"]["HttpMethod"] == "POST"


def test_resources_named_after_operations(template):
    parts = sorted(r["Properties"]["PathPart"] for r in _by_type(template, "AWS::ApiGateway::Resource").values())
    assert parts == sorted(OPERATIONS)


def _actions(statement) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


@pytest.mark.parametrize("operation", ["DetectFaces", "CompareFaces"])
def test_image_functions_only_read_s3_objects(template, operation):
    if operation not in OPERATIONS:
        pytest.skip(f"{operation} not registered")
    _, fn = _function(template, operation)
    role = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = [
        p for p in _by_type(template, "AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
    ]  # fmt: skip
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    actions = set().union(*(_actions(s) for s in statements))
    assert actions == {"s3:GetObject", "s3:GetObjectVersion"} | XRAY
    assert not any(a.startswith("dynamodb:") for a in actions)
    for s in statements:
        assert s["Effect"] == "Allow"


def test_log_retention(template):
    groups = _by_type(template, "AWS::Logs::LogGroup")
    assert len(groups) == len(OPERATIONS) + 1  # one per function + API access logs
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == 30
    for operation in OPERATIONS:
        _, fn = _function(template, operation)
        assert "LoggingConfig" in fn["Properties"]


def test_stage_throttling_and_access_logs(template):
    template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "MethodSettings": Match.array_with(
                [Match.object_like({"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100})]
            ),
            "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value(), "Format": Match.any_value()}),
            "TracingEnabled": True,
        },
    )
    assert "ApiUrl" in template.find_outputs("*")


def test_oversized_layer_is_refused(tmp_path):
    big = tmp_path / "big-models"
    (big / "models").mkdir(parents=True)
    with open(big / "models" / "huge.onnx", "wb") as f:
        f.truncate(260 * 1024 * 1024)  # sparse: no disk used, apparent size counts
    with pytest.raises(LayerError, match=r"over Lambda's .*250 MiB.* limit"):
        FacebankStack(_app(tmp_path), "Big", use_placeholder_layers=True, model_layer_dir=big)


def test_missing_layer_names_build_command(tmp_path):
    with pytest.raises(LayerError, match=r"layers/build.py models --pack mobile"):
        FacebankStack(_app(tmp_path), "Missing", model_layer_dir=tmp_path / "nope", deps_layer_dir=tmp_path / "nope")


def test_check_size_sums_parts():
    check_size({"a": 100 * 2**20, "b": 150 * 2**20})  # exactly 250 MiB is allowed
    with pytest.raises(LayerError, match="function code 1.0 MB"):
        check_size({"function code": 10**6, "layer": 250 * 2**20})


def test_context_selects_architecture_memory_retention(tmp_path):
    import app as cdk_app

    stack = cdk_app.build(_app(tmp_path, architecture="x86_64", memorySize="1024", logRetentionDays="7"))
    template = Template.from_stack(stack)
    for fn in _by_type(template, "AWS::Lambda::Function").values():
        assert fn["Properties"]["Architectures"] == ["x86_64"]
        assert fn["Properties"]["MemorySize"] == 1024
    for group in _by_type(template, "AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 7
