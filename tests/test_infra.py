"""The CDK stack, synthesised offline with placeholder layers, has the shape issue 6 promises: one
Python 3.12 function per operation, IAM auth on every method, least-privilege roles, encrypted and
private storage, S3 -> SQS (DLQ) -> Lambda ingest, scheduled compaction; cfn-lint finds no error
and every cdk-nag AwsSolutions finding is acknowledged with a reason (infra/nag.py).

Synthesis is slow-ish (jsii), so each configuration is synthesised once per session
(``synth(context)``, cached) and every test reads the same template. One test synthesises with the
real layers, built at synth from an empty cache as on a fresh clone (PyPI wheels, the model mirror).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
cdk = pytest.importorskip("aws_cdk", reason="aws-cdk-lib not installed (pip install -e '.[dev]')")
from aws_cdk.assertions import Match, Template  # noqa: E402 - after the importorskip

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facebank.operations import OPERATIONS  # noqa: E402 - after the sys.path insert
from infra.access import (  # noqa: E402
    COMPACTION_ACCESS,
    INGEST_OPERATIONS,
    LEDGER_ACTIONS,
    OPERATION_ACCESS,
    VIDEO_WORKER_ACCESS,
    access_for,
)
from infra.layers import check_size  # noqa: E402
from infra.operations import snake  # noqa: E402
from infra.parameters import StackParameters  # noqa: E402
from infra.stack import FacebankStack, LayerError  # noqa: E402

XRAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}  # added by Tracing.ACTIVE
LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}
EXTRA_FUNCTIONS = {
    "Ingest": "functions.ingest.handler",
    "Compaction": "functions.compact.handler",
    "VideoWorker": "functions.video_worker.handler",
    "StreamConsumer": "functions.stream_consumer.handler",
}
SHARD_FUNCTIONS = 40  # infra/shards.py, shardFunctions' default: 20M faces in shards of 500K
VARIANT = {
    "architecture": "x86_64",
    "memorySize": "3008",
    "lightMemorySize": "256",
    "memory": '{"DescribeCollection": 1024}',
    "logRetentionDays": "7",
    "removalPolicy": "destroy",
    "ingestBucket": "my-photos",
    "ingestPrefix": "faces/",
    "imageBuckets": "team-images,other-images",
    "stackName": "fb-test",
    "facebank:notificationTopics": "arn:aws:sns:eu-west-1:111122223333:video-*,arn:aws:sns:eu-west-1:111122223333:ops",
    "videoConcurrency": "50",
}


def nested_templates(outdir: Path, root: dict) -> dict[str, tuple[Path, dict]]:
    """Nested stack logical id -> (its template file, template), found through the asset manifest."""
    assets = json.loads(next(outdir.glob("*.assets.json")).read_text())["files"]
    out = {}
    for lid, resource in root["Resources"].items():
        if resource["Type"] == "AWS::CloudFormation::Stack":
            asset_hash = (
                resource["Properties"]["TemplateURL"]["Fn::Join"][1][-1].rsplit("/", 1)[-1].removesuffix(".json")
            )
            path = outdir / assets[asset_hash]["source"]["path"]
            out[lid] = (path, json.loads(path.read_text()))
    return out


def flatten(outdir: Path, root: dict) -> dict:
    """The root template with every nested stack's resources in it, their parameters replaced by
    what the root passes and the root's references to nested outputs by the outputs' values: the
    shape one big stack would have, so the checks below read functions and grants wherever they live."""
    nested = nested_templates(outdir, root)

    def walk(value, params: dict, stack_id: str | None):
        if isinstance(value, list):
            return [walk(v, params, stack_id) for v in value]
        if not isinstance(value, dict):
            return value
        if stack_id is not None and set(value) == {"Ref"} and value["Ref"] in params:
            return walk(params[value["Ref"]], {}, None)  # the root's expression
        getatt = value.get("Fn::GetAtt")
        if stack_id is None and isinstance(getatt, list) and getatt[0] in nested and getatt[1].startswith("Outputs."):
            _, template = nested[getatt[0]]
            output = template["Outputs"][getatt[1].removeprefix("Outputs.")]["Value"]
            return walk(output, root["Resources"][getatt[0]]["Properties"].get("Parameters", {}), getatt[0])
        return {k: walk(v, params, stack_id) for k, v in value.items()}

    resources = {k: walk(v, {}, None) for k, v in root["Resources"].items() if k not in nested}
    for lid, (_, template) in nested.items():
        params = root["Resources"][lid]["Properties"].get("Parameters", {})
        for rid, resource in template["Resources"].items():
            assert rid not in resources, f"logical id {rid} in two templates"
            resources[rid] = walk(resource, params, lid)
    outputs = {k: walk(v, {}, None) for k, v in root.get("Outputs", {}).items()}
    return {**root, "Resources": resources, "Outputs": outputs}


@functools.cache
def _synth(context_json: str) -> tuple[dict, dict]:
    """(template, cdk-nag validation report) of app.py's stack with this context, nag enabled; the
    template is the root with its nested stacks flattened in (``flatten``), the report also names
    every template file and each one's resource count."""
    import app as cdk_app

    outdir = tempfile.mkdtemp(prefix="facebank-synth-")
    context = {**cdk_app.cdk_json_context(), "skipLayerBuild": True, **json.loads(context_json)}
    application = cdk.App(outdir=outdir, context=context)
    stack = cdk_app.build(application)
    assert cdk_app.add_nag(application), "cdk-nag is a dev dependency (pip install -e '.[dev]')"
    try:
        application.synth()
    except Exception as exc:  # noqa: BLE001 - the validation report says which finding is not acknowledged
        report = Path(outdir, "validation-report.json")
        detail = report.read_text() if report.is_file() else ""
        raise AssertionError(f"synthesis failed: {exc}\n{detail[:5000]}") from None
    root_file = Path(outdir, f"{stack.artifact_id}.template.json")
    root = json.loads(root_file.read_text())
    files = [root_file] + [path for path, _ in nested_templates(Path(outdir), root).values()]
    report = json.loads(Path(outdir, "validation-report.json").read_text())
    return flatten(Path(outdir), root), report | {
        "outdir": outdir,
        "root": root,
        "template_file": str(root_file),
        "template_files": [str(f) for f in files],
        "resource_counts": {f.name: len(json.loads(f.read_text())["Resources"]) for f in files},
    }


def synth(**context) -> tuple[dict, dict]:
    return _synth(json.dumps(context, sort_keys=True))


@pytest.fixture(scope="module")
def template() -> dict:
    return synth()[0]


@pytest.fixture(scope="module")
def variant() -> dict:
    return synth(**VARIANT)[0]


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def function(template: dict, handler: str) -> tuple[str, dict]:
    [(lid, fn)] = [
        (k, v)
        for k, v in resources(template, "AWS::Lambda::Function").items()
        if v["Properties"].get("Handler") == handler
    ]
    return lid, fn


def op_handler(operation: str) -> str:
    return f"functions.{snake(operation)}.handler"


def table_names(template: dict) -> dict[str, str]:
    """logical id -> short table name (collections, faces, users, ingest)."""
    out = {}
    for lid, t in resources(template, "AWS::DynamoDB::Table").items():
        out[lid] = t["Properties"]["TableName"].rsplit("-", 1)[-1]
    return out


def _resource_key(template: dict, resource) -> str:
    """A readable name for a policy resource: table:<name>, vectors/*, vectors-bucket, log, queue, ..."""
    tables = table_names(template)
    if resource == "*":
        return "*"
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        lid = resource["Fn::GetAtt"][0]
        if lid in tables:
            return f"table:{tables[lid]}"
        kind = template["Resources"][lid]["Type"]
        if kind == "AWS::S3::Bucket" and lid.startswith("EmbeddingsBucket"):
            return "vectors-bucket"
        if kind == "AWS::SQS::Queue" and lid.startswith("Video"):
            return "video-dlq" if lid.startswith("VideoDeadLetterQueue") else "video-queue"
        if kind == "AWS::Lambda::Function" and lid.startswith("ShardSearch"):
            return "shard-function"
        return {"AWS::Logs::LogGroup": "log", "AWS::SQS::Queue": "queue"}.get(kind, lid)
    text = json.dumps(resource)
    if "EmbeddingsBucket" in text and "/vectors/*" in text:
        return "vectors/*"
    if "EmbeddingsBucket" in text and "/jobs/*" in text:
        return "jobs/*"
    if ":sns:" in text:
        return "sns-topics"
    if ":kinesisvideo:" in text:
        return "video-streams"
    if ":kinesis:" in text:
        return "data-streams"
    if ":function:" in text and "-StreamConsumer" in text:
        return "stream-consumer"
    if "-ingest" in text or "my-photos" in text:
        return "ingest-objects"
    return text


def grants(template: dict, handler: str) -> set[tuple[str, str]]:
    """{(action, resource key)} the function's role is allowed, over all its policies."""
    _, fn = function(template, handler)
    role = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    out = set()
    for policy in resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role} not in policy["Properties"]["Roles"]:
            continue
        for s in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert s["Effect"] == "Allow"
            actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
            res = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
            out |= {(a, _resource_key(template, r)) for a in actions for r in res}
    managed = template["Resources"][role]["Properties"].get("ManagedPolicyArns")
    assert not managed, f"{handler} has managed policies {managed}"
    return out


def expected_grants(access, image_key: str | None = "ingest-objects") -> set[tuple[str, str]]:
    out = {(a, "log") for a in LOGS} | {(a, "*") for a in XRAY}
    for table, actions in access.tables().items():
        out |= {(f"dynamodb:{a}", f"table:{table}") for a in actions}
    for a in access.vectors:
        out.add(("s3:ListBucket", "vectors-bucket") if a == "ListBucket" else (f"s3:{a}", "vectors/*"))
    out |= {(f"s3:{a}", "jobs/*") for a in access.results}
    if access.video_queue:
        out.add(("sqs:SendMessage", "video-queue"))
    if access.images and image_key:
        out |= {("s3:GetObject", image_key), ("s3:GetObjectVersion", image_key)}
    if access.shards:
        out.add(("lambda:InvokeFunction", "shard-function"))
    if access.stream_consumer:  # StartStreamProcessor hands the processor to the consumer (infra/streams.py)
        out.add(("lambda:InvokeFunction", "stream-consumer"))
    return out


# --- functions


def test_one_python312_arm64_function_per_operation(template):
    handlers = sorted(f["Properties"]["Handler"] for f in resources(template, "AWS::Lambda::Function").values())
    shards = ["functions.shard_search.handler"] * SHARD_FUNCTIONS
    assert handlers == sorted([op_handler(op) for op in OPERATIONS] + list(EXTRA_FUNCTIONS.values()) + shards)
    for operation in OPERATIONS:
        _, fn = function(template, op_handler(operation))
        props = fn["Properties"]
        access = access_for(operation)
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["arm64"]
        assert props["MemorySize"] == (2048 if access.heavy else 512)
        assert props["Timeout"] == 30
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert len(props["Layers"]) == (2 if access.models else 1)  # the video jobs' Start*/Get* need no models
        env = props["Environment"]["Variables"]
        assert env["ORT_DISABLE_TELEMETRY"] == "1"
        assert ("FACEBANK_MODEL_DIR" in env) == access.models
        assert access.models or env["FACEBANK_PACK"]
        assert env["POWERTOOLS_SERVICE_NAME"] == "facebank"
        assert ("FACEBANK_VECTOR_BUCKET" in env) == access.storage, operation
        if access.storage:
            assert env["FACEBANK_TABLE_PREFIX"] == "facebank-"
            assert env["FACEBANK_ACCOUNT_ID"] == {"Ref": "AWS::AccountId"}


def test_every_operation_has_a_function_module_and_an_access_entry():
    """Adding an operation without its functions/<op>.py or its infra/access.py entry fails here."""
    import importlib

    for operation in OPERATIONS:
        module = importlib.import_module(f"functions.{snake(operation)}")
        assert module.handler.__name__ == f"{operation}_handler"
        assert (ROOT / "functions" / f"{snake(operation)}.py").read_text().count("\n") <= 3  # a one-liner
        assert operation in OPERATION_ACCESS, f"{operation}: add it to infra/access.py"


def test_an_operation_without_entry_point_stops_synthesis(tmp_path, monkeypatch):
    monkeypatch.setitem(OPERATIONS, "FrobnicateFaces", lambda request, ctx: {})
    with pytest.raises(LayerError, match=r"FrobnicateFaces has no Lambda entry point functions/frobnicate_faces.py"):
        FacebankStack(cdk.App(outdir=str(tmp_path)), "Frob", use_placeholder_layers=True)


def test_an_operation_without_access_entry_is_refused():
    with pytest.raises(KeyError, match="infra/access.py"):
        access_for("FrobnicateFaces")


# --- API


def test_every_method_requires_iam(template):
    methods = resources(template, "AWS::ApiGateway::Method")
    assert len(methods) == len(OPERATIONS)
    for method in methods.values():
        assert method["Properties"]["AuthorizationType"] == "AWS_IAM"
        assert method["Properties"]["HttpMethod"] == "POST"
        assert method["Properties"]["Integration"]["Type"] == "AWS_PROXY"


def test_resources_named_after_operations(template):
    parts = sorted(r["Properties"]["PathPart"] for r in resources(template, "AWS::ApiGateway::Resource").values())
    assert parts == sorted(OPERATIONS)


def test_stage_throttling_logs_and_tracing(template):
    Template.from_json(template).has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": "v1",
            "MethodSettings": Match.array_with(
                [
                    Match.object_like(
                        {
                            "ThrottlingRateLimit": 50,
                            "ThrottlingBurstLimit": 100,
                            "LoggingLevel": "ERROR",
                            "DataTraceEnabled": False,
                        }
                    )
                ]
            ),
            "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value(), "Format": Match.any_value()}),
            "TracingEnabled": True,
        },
    )
    [api] = resources(template, "AWS::ApiGateway::RestApi").values()
    assert api["Properties"]["EndpointConfiguration"] == {"Types": ["REGIONAL"]}
    assert {"ApiUrl", "IngestBucketName", "IngestDeadLetterQueueUrl"} <= set(template["Outputs"])


# --- least privilege


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_function_roles_grant_exactly_the_access_table(template, operation):
    assert grants(template, op_handler(operation)) == expected_grants(access_for(operation))


@pytest.mark.parametrize("operation", ["DetectFaces", "CompareFaces"])
def test_image_functions_only_read_s3_objects(template, operation):
    actions = {a for a, _ in grants(template, op_handler(operation))}
    assert actions == {"s3:GetObject", "s3:GetObjectVersion"} | XRAY | LOGS
    assert not any(a.startswith("dynamodb:") for a in actions)


@pytest.mark.parametrize("operation", [op for op in OPERATIONS if op.startswith(("Search", "List", "Describe"))])
def test_search_list_describe_functions_are_read_only(template, operation):
    assert access_for(operation).read_only
    for action, resource in grants(template, op_handler(operation)):
        if action.startswith("dynamodb:"):
            assert action.split(":")[1] in {"GetItem", "BatchGetItem", "Query", "Scan"}, (action, resource)
        if action.startswith("s3:"):
            assert action in {"s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"}, (action, resource)


def test_ingest_and_compaction_roles(template):
    ingest = (
        expected_grants(functools.reduce(lambda a, b: a | b, (OPERATION_ACCESS[o] for o in INGEST_OPERATIONS)))
        | {(f"dynamodb:{a}", "table:ingest") for a in LEDGER_ACTIONS}
        | {
            (f"sqs:{a}", "queue")
            for a in ("ChangeMessageVisibility", "DeleteMessage", "GetQueueAttributes", "GetQueueUrl", "ReceiveMessage")
        }
    )
    assert grants(template, EXTRA_FUNCTIONS["Ingest"]) == ingest
    assert grants(template, EXTRA_FUNCTIONS["Compaction"]) == expected_grants(COMPACTION_ACCESS)


def test_list_bucket_is_limited_to_the_vectors_prefix(template):
    for policy in resources(template, "AWS::IAM::Policy").values():
        for s in policy["Properties"]["PolicyDocument"]["Statement"]:
            if s["Action"] == "s3:ListBucket":
                assert s["Condition"] == {"StringLike": {"s3:prefix": "vectors/*"}}


def test_image_buckets_context_scopes_image_reads(variant):
    keys = {r for a, r in grants(variant, op_handler("DetectFaces")) if a == "s3:GetObject"}
    assert len(keys) == 3
    assert "ingest-objects" in keys  # the existing ingest bucket's objects
    assert any(":s3:::team-images/*" in k for k in keys) and any(":s3:::other-images/*" in k for k in keys)
    ingest = {r for a, r in grants(variant, EXTRA_FUNCTIONS["Ingest"]) if a == "s3:GetObject"}
    assert ingest == {"ingest-objects"}
    read_images = ["s3:GetObject", "s3:GetObjectVersion"]
    [statement] = [
        s
        for p in resources(variant, "AWS::IAM::Policy").values()
        if "IngestRole" in json.dumps(p)
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Action"] == read_images
    ]
    assert "my-photos/faces/*" in json.dumps(statement["Resource"])


# --- storage


def test_tables_match_the_dynamodb_adapter_and_are_protected(template):
    from facebank.storage.celebrities import create_celebrity_table
    from facebank.storage.dynamodb import TableNames, create_tables

    class Recorder:
        def __init__(self):
            self.calls = {}

        def create_table(self, TableName, **kwargs):
            self.calls[TableName] = kwargs

    from facebank.storage.dynamodb_jobs import create_jobs_table
    from facebank.storage.dynamodb_streams import create_streams_table

    recorder = Recorder()
    create_tables(recorder, TableNames.with_prefix("facebank-"), wait=False)
    create_celebrity_table(recorder, "facebank-celebrities", wait=False)
    create_jobs_table(recorder, "facebank-jobs", wait=False)
    create_streams_table(recorder, "facebank-streams", wait=False)
    tables = {t["Properties"]["TableName"]: t for t in resources(template, "AWS::DynamoDB::Table").values()}
    assert set(tables) == set(recorder.calls) | {"facebank-ingest"}
    for name, table in tables.items():
        props = table["Properties"]
        if name in recorder.calls:
            assert props["KeySchema"] == recorder.calls[name]["KeySchema"]
            assert props["AttributeDefinitions"] == recorder.calls[name]["AttributeDefinitions"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["SSESpecification"] == {"SSEEnabled": True}
        assert props["DeletionProtectionEnabled"] is True
        assert table["DeletionPolicy"] == "Retain" and table["UpdateReplacePolicy"] == "Retain"
    ttl = {"AttributeName": "expires", "Enabled": True}
    assert tables["facebank-ingest"]["Properties"]["TimeToLiveSpecification"] == ttl
    # The users table holds the request ledger (ClientRequestToken answers), which ages out by TTL.
    assert tables["facebank-users"]["Properties"]["TimeToLiveSpecification"] == ttl


def test_buckets_private_encrypted_tls_only_logged(template):
    buckets = resources(template, "AWS::S3::Bucket")
    assert len(buckets) == 3  # access logs, embeddings, ingest
    policies = {p["Properties"]["Bucket"]["Ref"]: p for p in resources(template, "AWS::S3::BucketPolicy").values()}
    for lid, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True
        }  # fmt: skip
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
            "SSEAlgorithm": "AES256"
        }
        assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        statements = policies[lid]["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
        ), lid
        if not lid.startswith("AccessLogsBucket"):
            assert props["LoggingConfiguration"]["DestinationBucketName"]["Ref"].startswith("AccessLogsBucket")
        assert bucket["DeletionPolicy"] == "Retain"
    [embeddings] = [b for lid, b in buckets.items() if lid.startswith("EmbeddingsBucket")]
    assert embeddings["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = embeddings["Properties"]["LifecycleConfiguration"]["Rules"]
    assert {"NoncurrentDays": 35} in [r.get("NoncurrentVersionExpiration") for r in rules]


def test_log_retention(template):
    groups = resources(template, "AWS::Logs::LogGroup")
    # one per function (the shard functions too) + API access logs
    assert len(groups) == len(OPERATIONS) + len(EXTRA_FUNCTIONS) + SHARD_FUNCTIONS + 1
    assert {g["Properties"]["RetentionInDays"] for g in groups.values()} == {30}
    for fn in resources(template, "AWS::Lambda::Function").values():
        assert "LoggingConfig" in fn["Properties"]


# --- S3 -> SQS -> Lambda, compaction


def test_ingest_wiring_s3_to_sqs_with_dlq_to_lambda(template):
    queues = {k: q for k, q in resources(template, "AWS::SQS::Queue").items() if k.startswith("Ingest")}
    [(queue_id, queue)] = [(k, q) for k, q in queues.items() if "RedrivePolicy" in q["Properties"]]
    [(dlq_id, dlq)] = [(k, q) for k, q in queues.items() if k != queue_id]
    redrive = {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]}, "maxReceiveCount": 5}
    assert queue["Properties"]["RedrivePolicy"] == redrive
    for q in (queue, dlq):
        assert q["Properties"]["SqsManagedSseEnabled"] is True
    ingest_id, ingest = function(template, EXTRA_FUNCTIONS["Ingest"])
    assert queue["Properties"]["VisibilityTimeout"] >= 6 * ingest["Properties"]["Timeout"]
    # S3 notifications -> the queue, for created and removed images
    [(_, bucket)] = [(k, b) for k, b in resources(template, "AWS::S3::Bucket").items() if k.startswith("IngestBucket")]
    configs = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    seen = set()
    for c in configs:
        assert c["Queue"] == {"Fn::GetAtt": [queue_id, "Arn"]}
        [rule] = c["Filter"]["S3Key"]["Rules"]
        seen.add((c["Event"], rule["Value"]))
    assert seen == {(e, s) for e in ("s3:ObjectCreated:*", "s3:ObjectRemoved:*") for s in (".jpg", ".jpeg", ".png")}
    # the queue lets S3 (this bucket, this account) publish, and exists before the bucket
    [(policy_id, policy)] = [
        (k, p)
        for k, p in resources(template, "AWS::SQS::QueuePolicy").items()
        if {"Ref": queue_id} in p["Properties"]["Queues"]
    ]
    [allow] = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
    assert json.dumps(allow["Condition"]["ArnEquals"]["aws:SourceArn"]).count("facebank-ingest") == 1
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    # (the policy itself, or the nested stack that holds it: CloudFormation creates that stack first)
    assert policy_id in bucket["DependsOn"] or bucket["DependsOn"] == [
        "IngestNestedStackIngestNestedStackResourceD6AFAC89"
    ]
    # SQS -> Lambda with partial batch failures
    [mapping] = [
        m
        for m in resources(template, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": ingest_id}
    ]
    props = mapping["Properties"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert props["FunctionName"] == {"Ref": ingest_id}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    env = ingest["Properties"]["Environment"]["Variables"]
    ingest_env = {"FACEBANK_INGEST_TABLE", "FACEBANK_INGEST_BUCKET", "FACEBANK_INGEST_PREFIX", "FACEBANK_VECTOR_BUCKET"}
    assert ingest_env <= set(env)
    # failures surface: an alarm on the dead-letter queue
    [alarm] = [a for k, a in resources(template, "AWS::CloudWatch::Alarm").items() if k.startswith("Ingest")]
    assert alarm["Properties"]["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]


def test_existing_ingest_bucket_uses_cdk_notifications(variant):
    [notifications] = [r for r in variant["Resources"].values() if r["Type"] == "Custom::S3BucketNotifications"]
    config = notifications["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert {tuple(c["Events"]) for c in config} == {("s3:ObjectCreated:*",), ("s3:ObjectRemoved:*",)}
    assert all({"Name": "prefix", "Value": "faces/"} in c["Filter"]["Key"]["FilterRules"] for c in config)
    assert notifications["Properties"]["Managed"] is False  # the bucket's other notifications stay
    assert len(resources(variant, "AWS::S3::Bucket")) == 2  # no ingest bucket of ours


def test_compaction_is_scheduled_without_retries(template):
    compaction_id, compaction = function(template, EXTRA_FUNCTIONS["Compaction"])
    assert compaction["Properties"]["Timeout"] == 900
    assert len(compaction["Properties"]["Layers"]) == 1  # no models needed
    [rule] = resources(template, "AWS::Events::Rule").values()
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 hour)"
    [target] = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [compaction_id, "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 0
    [invoke] = [
        c
        for c in resources(template, "AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": compaction_id}
    ]
    assert invoke["Properties"]["MaximumRetryAttempts"] == 0


# --- stored-video jobs (infra/video.py)

SQS_CONSUME = ("ChangeMessageVisibility", "DeleteMessage", "GetQueueAttributes", "GetQueueUrl", "ReceiveMessage")
VIDEO_OPERATIONS = (
    "StartFaceDetection",
    "GetFaceDetection",
    "StartFaceSearch",
    "GetFaceSearch",
    "StartPersonTracking",
    "GetPersonTracking",
)


def _video_queues(template: dict) -> tuple[str, dict, str, dict]:
    queues = resources(template, "AWS::SQS::Queue")
    [(queue_id, queue)] = [(k, q) for k, q in queues.items() if k.startswith("VideoQueue")]
    [(dlq_id, dlq)] = [(k, q) for k, q in queues.items() if k.startswith("VideoDeadLetterQueue")]
    return queue_id, queue, dlq_id, dlq


def _mappings(template: dict, function_id: str) -> dict[str, dict]:
    """Event source mappings of a function, by the logical id of their queue."""
    return {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"]
        for m in resources(template, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": function_id}
    }


def test_video_worker_consumes_its_queue_and_dead_letters_one_message_at_a_time(template):
    queue_id, queue, dlq_id, dlq = _video_queues(template)
    worker_id, worker = function(template, EXTRA_FUNCTIONS["VideoWorker"])
    props = worker["Properties"]
    assert queue["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": 3,
    }
    for q in (queue, dlq):  # a message in flight is never handed to a second worker
        assert q["Properties"]["VisibilityTimeout"] >= 6 * props["Timeout"]
        assert q["Properties"]["SqsManagedSseEnabled"] is True
    mappings = _mappings(template, worker_id)
    assert set(mappings) == {queue_id, dlq_id}
    for mapping in mappings.values():
        assert mapping["BatchSize"] == 1 and mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mappings[queue_id]["ScalingConfig"] == {"MaximumConcurrency": 20}
    # One segment per invocation, so no job depends on one function's 15 minutes.
    assert props["Timeout"] <= 300 and props["MemorySize"] == 2048
    layers = sorted(ref["Ref"].rstrip("0123456789ABCDEF") for ref in props["Layers"])
    assert layers == ["ModelLayer", "VideoLayer"]
    env = props["Environment"]["Variables"]
    assert env["FACEBANK_VIDEO_QUEUE_URL"] == {"Ref": queue_id}
    assert env["FACEBANK_MODEL_DIR"] == "/opt/models" and "FACEBANK_VIDEO_SEGMENT_S" in env
    [alarm] = [a for k, a in resources(template, "AWS::CloudWatch::Alarm").items() if k.startswith("Video")]
    assert alarm["Properties"]["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]


def test_video_worker_role_is_the_access_table_plus_its_queues_and_topics(template, variant):
    consume = {(f"sqs:{a}", q) for a in SQS_CONSUME for q in ("video-queue", "video-dlq")}
    expected = expected_grants(VIDEO_WORKER_ACCESS) | consume | {("sns:Publish", "sns-topics")}
    assert grants(template, EXTRA_FUNCTIONS["VideoWorker"]) == expected

    def publish_resources(t: dict) -> list:
        _, worker = function(t, EXTRA_FUNCTIONS["VideoWorker"])
        role = worker["Properties"]["Role"]["Fn::GetAtt"][0]
        return [
            s["Resource"]
            for p in resources(t, "AWS::IAM::Policy").values()
            if {"Ref": role} in p["Properties"]["Roles"]
            for s in p["Properties"]["PolicyDocument"]["Statement"]
            if s["Action"] == "sns:Publish"
        ]

    # Default: any topic of the stack's own account and region; the context narrows it.
    own = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":sns:", {"Ref": "AWS::Region"}, ":",
                             {"Ref": "AWS::AccountId"}, ":*"]]}  # fmt: skip
    assert publish_resources(template) == [own]
    topics = VARIANT["facebank:notificationTopics"].split(",")
    [published] = publish_resources(variant)
    assert sorted(published) == sorted(topics)
    _, worker = function(variant, EXTRA_FUNCTIONS["VideoWorker"])
    assert worker["Properties"]["Environment"]["Variables"]["FACEBANK_NOTIFICATION_TOPICS"] == ",".join(topics)
    [queue_id] = [k for k in resources(variant, "AWS::SQS::Queue") if k.startswith("VideoQueue")]
    worker_id, _ = function(variant, EXTRA_FUNCTIONS["VideoWorker"])
    assert _mappings(variant, worker_id)[queue_id]["ScalingConfig"] == {"MaximumConcurrency": 50}


@pytest.mark.parametrize("operation", VIDEO_OPERATIONS)
def test_video_operation_functions(template, variant, operation):
    if operation not in OPERATIONS:
        pytest.skip(f"{operation} is not registered")
    _, fn = function(template, op_handler(operation))
    env = fn["Properties"]["Environment"]["Variables"]
    actions = {a for a, _ in grants(template, op_handler(operation))}
    assert not any(a.startswith("sns:") for a in actions)  # only the worker publishes
    if operation.startswith("Get"):
        assert access_for(operation).read_only and "FACEBANK_VIDEO_QUEUE_URL" not in env
        return
    [queue_id] = [k for k in resources(template, "AWS::SQS::Queue") if k.startswith("VideoQueue")]
    assert env["FACEBANK_VIDEO_QUEUE_URL"] == {"Ref": queue_id} and env["FACEBANK_MAX_VIDEO_JOBS"] == "20"
    assert ":sns:" in json.dumps(env["FACEBANK_NOTIFICATION_TOPICS"])  # Start* refuses other topics
    _, fn = function(variant, op_handler(operation))
    topics = fn["Properties"]["Environment"]["Variables"]["FACEBANK_NOTIFICATION_TOPICS"]
    assert topics == VARIANT["facebank:notificationTopics"]


@pytest.mark.parametrize(
    ("persons", "faces"), [("StartPersonTracking", "StartFaceDetection"), ("GetPersonTracking", "GetFaceDetection")]
)
def test_person_tracking_functions_get_what_the_face_detection_ones_get(template, persons, faces):
    """A person job has no collection: its Start/Get functions are granted exactly the face-detection
    job's resources, and get neither PyAV nor the models (only the worker decodes and runs MoveNet)."""
    assert grants(template, op_handler(persons)) == grants(template, op_handler(faces)) != set()
    for operation in (persons, faces):
        layers = function(template, op_handler(operation))[1]["Properties"]["Layers"]
        assert [ref["Ref"].rstrip("0123456789ABCDEF") for ref in layers] == ["DependencyLayer"], operation


# --- context parameters


def test_context_selects_architecture_memory_retention_removal(variant):
    for fn in resources(variant, "AWS::Lambda::Function").values():
        props = fn["Properties"]
        if props.get("Handler", "").startswith("functions."):
            assert props["Architectures"] == ["x86_64"]
    assert function(variant, op_handler("DetectFaces"))[1]["Properties"]["MemorySize"] == 3008
    assert function(variant, op_handler("DescribeCollection"))[1]["Properties"]["MemorySize"] == 1024
    assert function(variant, op_handler("ListCollections"))[1]["Properties"]["MemorySize"] == 256
    for group in resources(variant, "AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 7
    for table in resources(variant, "AWS::DynamoDB::Table").values():
        assert table["DeletionPolicy"] == "Delete"
        assert table["Properties"]["DeletionProtectionEnabled"] is False
        assert table["Properties"]["TableName"].startswith("fb-test-")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("architecture", "sparc", "architecture must be one of"),
        ("logRetentionDays", 8, "logRetentionDays must be one of"),
        ("removalPolicy", "snapshot", "removalPolicy must be one of"),
        ("memory", '{"NoSuchOp": 512}', "memory names unknown functions"),
        ("compactionMinutes", 5, "compactionMinutes must be >= 20"),
        ("ingestPrefix", "faces", "ingestPrefix must be a key prefix ending in '/'"),
        ("videoConcurrency", 1, "videoConcurrency must be 2..1000"),
        ("videoSegmentSeconds", 5, "videoSegmentSeconds must be 10..600"),
        ("facebank:notificationTopics", "arn:aws:sqs:us-east-1:123456789012:q", "SNS topic ARN patterns"),
        ("maxVideoJobs", "many", "maxVideoJobs='many' is not an integer"),
        ("maxStreamProcessors", 0, "maxStreamProcessors must be at least 1"),
    ],
)
def test_bad_settings_are_refused(key, value, message):
    """Context values are parsed and checked before anything is built (app.py: one line, exit 1)."""
    with pytest.raises(ValueError, match=message):
        StackParameters.from_context({key: value}.get).validate()


# --- layers


def test_oversized_layer_is_refused(tmp_path):
    big = tmp_path / "big-models"
    (big / "models").mkdir(parents=True)
    with open(big / "models" / "huge.onnx", "wb") as f:
        f.truncate(260 * 1024 * 1024)  # sparse: no disk used, apparent size counts
    with pytest.raises(LayerError, match=r"over Lambda's .*250 MiB.* limit"):
        FacebankStack(cdk.App(outdir=str(tmp_path)), "Big", use_placeholder_layers=True, model_layer_dir=big)


def test_missing_layer_names_build_command(tmp_path):
    with pytest.raises(LayerError, match=r"layers/build.py models --pack mobile"):
        FacebankStack(
            cdk.App(outdir=str(tmp_path)),
            "Missing",
            pack="mobile",
            model_layer_dir=tmp_path / "nope",
            deps_layer_dir=tmp_path / "nope",
        )


def test_prebuilt_model_layer_without_the_person_detector_is_refused(tmp_path):
    """A model layer built before person tracking (the pack's files only) would fail every
    StartPersonTracking job in the worker: synthesis names the missing file and the rebuild."""
    from facebank.engine.packs import PERSON_DETECTOR, pack

    old = tmp_path / "old-models"
    for name in pack("mobile").files:
        (old / "models" / name).parent.mkdir(parents=True, exist_ok=True)
        (old / "models" / name).write_bytes(b"")
    lacks = rf"lacks {PERSON_DETECTOR} for pack 'mobile'.*layers/build.py models --pack mobile"
    with pytest.raises(LayerError, match=lacks):
        FacebankStack(cdk.App(outdir=str(tmp_path)), "Old", pack="mobile", model_layer_dir=old)


def test_check_size_sums_parts():
    check_size({"a": 100 * 2**20, "b": 150 * 2**20})  # exactly 250 MiB is allowed
    with pytest.raises(LayerError, match="function code 1.0 MB"):
        check_size({"function code": 10**6, "layer": 250 * 2**20})


def _fake_build_script(tmp_path: Path, body: str) -> Path:
    """A stand-in for layers/build.py: ``<script> <kind> ... --out DIR`` runs ``body`` with ``out``."""
    script = tmp_path / "fake_build.py"
    script.write_text(
        "import json, sys\nfrom pathlib import Path\nout = Path(sys.argv[sys.argv.index('--out') + 1])\n"
        f"{body}\n(out / 'facebank-layer.json').write_text(json.dumps({{'kind': sys.argv[1]}}))\n"
    )
    return script


@pytest.fixture
def fake_builds(tmp_path, monkeypatch):
    """infra.layers with an empty build cache and a fake build.py that records each run."""
    import infra.layers as layers

    runs = tmp_path / "runs.log"
    script = _fake_build_script(
        tmp_path,
        f"(out / 'python').mkdir(); (out / 'python' / 'x.py').write_text('x = 1')\n"
        f"open({str(runs)!r}, 'a').write(sys.argv[1] + '\\n')",
    )
    monkeypatch.setattr(layers, "BUILD_SCRIPT", script)
    monkeypatch.setattr(layers, "BUILD_CACHE", tmp_path / "cache")
    return layers, runs


def test_layer_build_is_cached_by_its_inputs(fake_builds, tmp_path):
    layers, runs = fake_builds
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("numpy==2.4.6\n")
    build = layers.LayerBuild("deps", "arm64", ("--arch", "arm64"), (constraints,))
    first = layers.ensure_built(build)
    assert layers.ensure_built(build) == first  # a second synth reuses the build
    assert runs.read_text().splitlines() == ["deps"]
    assert layers.LayerBuild("deps", "x86_64", ("--arch", "x86_64"), (constraints,)).key != build.key
    constraints.write_text("numpy==2.4.7\n")
    rebuilt = layers.ensure_built(build)  # a changed input is a new build; the stale one goes
    assert rebuilt != first and not first.exists() and (rebuilt / "python" / "x.py").is_file()
    assert runs.read_text().splitlines() == ["deps", "deps"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [rebuilt.name]  # no staging left


def test_failed_layer_build_stops_synthesis_with_the_command(tmp_path, monkeypatch):
    import infra.layers as layers

    monkeypatch.setattr(layers, "BUILD_SCRIPT", _fake_build_script(tmp_path, "sys.exit('no network')"))
    monkeypatch.setattr(layers, "BUILD_CACHE", tmp_path / "cache")
    failed = r"building the models layer failed \(exit code 1.*fake_build.py models --pack open"
    with pytest.raises(LayerError, match=failed):
        FacebankStack(cdk.App(outdir=str(tmp_path / "out")), "Failing", pack="open")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # nothing half-built is kept


def test_oversized_bundled_layer_is_refused_after_bundling(tmp_path, monkeypatch):
    import infra.layers as layers

    huge_sparse_file = "with open(out / 'models' / 'huge.onnx', 'wb') as f: f.truncate(260 * 2**20)"  # no disk used
    script = _fake_build_script(tmp_path, f"(out / 'models').mkdir()\n{huge_sparse_file}")
    monkeypatch.setattr(layers, "BUILD_SCRIPT", script)
    monkeypatch.setattr(layers, "BUILD_CACHE", tmp_path / "cache")
    with pytest.raises(LayerError, match=r"model layer 27\d\.\d MB.*over Lambda.s .*250 MiB.* limit"):
        FacebankStack(cdk.App(outdir=str(tmp_path / "out")), "Big", pack="open")


def _synth_app(outdir: Path, cache: Path, model_env: dict[str, str]) -> subprocess.CompletedProcess:
    """`CDK_OUTDIR=outdir python app.py` building real layers (PyPI wheels; the models from the
    mirror or the verified cache that ``model_env`` filled)."""
    env = {**model_env, "CDK_OUTDIR": str(outdir), "FACEBANK_LAYER_CACHE": str(cache)}
    env.pop("FACEBANK_SKIP_LAYER_BUILD", None)
    return subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def _layer_dirs(outdir: Path, template: dict) -> dict[str, Path]:
    """Layer logical id prefix (ModelLayer, DependencyLayer) -> its staged asset directory."""
    assets = json.loads((outdir / "Facebank.assets.json").read_text())["files"]
    out = {}
    for lid, layer in resources(template, "AWS::Lambda::LayerVersion").items():
        asset_hash = layer["Properties"]["Content"]["S3Key"].removesuffix(".zip")
        out[lid.rstrip("0123456789ABCDEF")] = outdir / assets[asset_hash]["source"]["path"]
    return out


def test_synth_from_a_clean_state_builds_the_layers_once(tmp_path, model_env):
    """A fresh clone's `cdk synth`: no layer build beforehand, no Docker. The layers are built by
    layers/build.py at synth (deps: manylinux arm64 wheels from PyPI, ~10 s; models: the mirror),
    hold what the functions import and the pack's verified models, fit Lambda's limit with the
    function code, and a second synth reuses the cached builds."""
    from facebank.engine.packs import PERSON_DETECTOR, pack
    from facebank.models import manifest, sha256_of
    from infra.layers import code_size, tree_size

    cache = tmp_path / "layer-cache"
    first = _synth_app(tmp_path / "first", cache, model_env)
    assert first.returncode == 0, first.stderr[-5000:]
    assert first.stderr.count("facebank: building the") == 3, first.stderr[-5000:]
    template = flatten(tmp_path / "first", json.loads((tmp_path / "first" / "Facebank.template.json").read_text()))
    dirs = _layer_dirs(tmp_path / "first", template)
    assert set(dirs) == {"ModelLayer", "DependencyLayer", "VideoLayer"}

    deps = dirs["DependencyLayer"]
    assert json.loads((deps / "facebank-layer.json").read_text())["arch"] == "arm64"
    for module in ("numpy", "onnxruntime", "PIL", "regex", "aws_lambda_powertools", "aws_xray_sdk"):
        assert (deps / "python" / module).is_dir(), module
    assert list((deps / "python" / "onnxruntime" / "capi").glob("*aarch64*.so")), "not arm64 wheels"
    assert not (deps / "python" / "botocore").exists()  # the runtime has it
    assert not (deps / "python" / "onnx").exists()  # conversion-only: the model layer holds its outputs
    entries, default_pack = manifest(), pack(None)  # app.py's default: no pack in the context
    assert json.loads((dirs["ModelLayer"] / "facebank-layer.json").read_text())["pack"] == default_pack.name
    for name in [*default_pack.files, PERSON_DETECTOR]:  # the worker runs MoveNet for StartPersonTracking
        assert sha256_of(dirs["ModelLayer"] / "models" / name) == entries[name].sha256, name
    assert code_size() + tree_size(deps) + tree_size(dirs["ModelLayer"]) <= 250 * 2**20
    # The video worker's layer: PyAV besides the engine's imports, pruned of what nothing loads.
    video = dirs["VideoLayer"]
    assert json.loads((video / "facebank-layer.json").read_text())["kind"] == "video"
    for module in ("av", "numpy", "onnxruntime", "PIL", "regex", "aws_lambda_powertools", "aws_xray_sdk"):
        assert (video / "python" / module).is_dir(), module
    assert list((video / "python" / "av").rglob("*.so")) and list((video / "python" / "av.libs").glob("libavcodec*"))
    assert not list((video / "python" / "onnxruntime" / "capi").glob("libonnxruntime.so*"))
    assert not list((video / "python").glob("**/tests"))
    assert code_size() + tree_size(video) + tree_size(dirs["ModelLayer"]) <= 250 * 2**20
    report = json.loads((tmp_path / "first" / "validation-report.json").read_text())
    assert [p["conclusion"] for p in report["pluginReports"]] == ["success"]
    assert_cfn_lint_clean(*map(str, (tmp_path / "first").glob("*.template.json")))

    second = _synth_app(tmp_path / "second", cache, model_env)
    assert second.returncode == 0, second.stderr[-5000:]
    assert "facebank: building the" not in second.stderr
    again = flatten(tmp_path / "second", json.loads((tmp_path / "second" / "Facebank.template.json").read_text()))
    assert resources(again, "AWS::Lambda::LayerVersion") == resources(template, "AWS::Lambda::LayerVersion")


# --- cfn-lint and cdk-nag


CFN_LINT_WARNINGS = 4  # cfn-lint's exit code is a bit mask: 2 errors, 4 warnings, 8 informational


def assert_cfn_lint_clean(*template_files: str) -> None:
    """One cfn-lint run over the templates (the root and its nested stacks)."""
    # cfn-lint 1.x has no `python -m cfnlint`: call its console entry point with this interpreter.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cfnlint.runner import main; sys.exit(main())",
            "--format",
            "json",
            *template_files,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, CFN_LINT_WARNINGS), (result.returncode, result.stderr[-3000:], result.stdout[:3000])
    matches = json.loads(result.stdout)
    # W3005 (DependsOn on a role that a GetAtt already implies) is how CDK wires every Lambda role.
    assert {m["Rule"]["Id"] for m in matches} <= {"W3005"}, matches


def test_cfn_lint_finds_no_errors():
    for context in ({}, VARIANT):
        _, report = synth(**context)
        assert_cfn_lint_clean(*report["template_files"])


def test_cdk_nag_aws_solutions_findings_are_all_acknowledged():
    from infra.nag import REASONS

    for context in ({}, VARIANT):
        _, report = synth(**context)
        [plugin] = report["pluginReports"]
        assert plugin["pluginName"] == "AwsSolutions"
        assert plugin["conclusion"] == "success", plugin["violations"]
        assert plugin["violations"] == []
        # the checks reach into the nested stacks (their findings are acknowledged there, not missed)
        checked = {
            c["constructPath"].split("/")[1] for v in plugin["suppressedViolations"] for c in v["violatingConstructs"]
        }
        assert {"Shards", "CollectionsAndUsers", "Video", "Ingest", "Compaction", "Api"} <= checked, checked
    assert all(len(reason) > 40 for reason in REASONS.values())


def test_cdk_synth_via_app_py_offline(tmp_path):
    """`CDK_OUTDIR=DIR python app.py` (what the cdk CLI runs) synthesises with no network or Docker."""
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path), "FACEBANK_SKIP_LAYER_BUILD": "1"}
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    template = flatten(tmp_path, json.loads((tmp_path / "Facebank.template.json").read_text()))
    functions = len(OPERATIONS) + len(EXTRA_FUNCTIONS) + SHARD_FUNCTIONS
    assert len(resources(template, "AWS::Lambda::Function")) == functions
    report = json.loads((tmp_path / "validation-report.json").read_text())
    assert [p["conclusion"] for p in report["pluginReports"]] == ["success"]


def test_celebrity_gallery_table_reaches_exactly_its_readers(template):
    """The gallery table is named to the functions infra/access.py lets read it (the image and job
    operations' functions and the video worker), and output for `facebank celebrities import --aws
    --stack-outputs`."""
    from infra.access import VIDEO_WORKER_ACCESS

    handlers = {op_handler(op): access_for(op) for op in OPERATIONS} | {
        EXTRA_FUNCTIONS["VideoWorker"]: VIDEO_WORKER_ACCESS
    }
    for handler, access in handlers.items():
        env = function(template, handler)[1]["Properties"]["Environment"]["Variables"]
        got = env.get("FACEBANK_CELEBRITY_TABLE")
        assert (got is not None) == bool(access.celebrities), handler
        if got is not None:
            assert got["Ref"].startswith("CelebritiesTable"), got
    assert {"CelebrityTableName", "ModelPack"} <= set(template["Outputs"])
    assert not access_for("GetCelebrityInfo").models  # metadata only: no model layer, no model load


# --- sharded search (infra/shards.py)


def _role_grants(template: dict, role: str) -> set[tuple[str, str]]:
    out = set()
    for policy in resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            for st in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
                res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                out |= {(a, _resource_key(template, r)) for a in actions for r in res}
    return out


def test_shard_functions_read_segments_only_and_only_search_functions_invoke_them(template):
    from infra.access import Access
    from infra.shards import SHARD_ACCESS

    shard_fns = {
        lid: fn
        for lid, fn in resources(template, "AWS::Lambda::Function").items()
        if fn["Properties"]["Handler"] == "functions.shard_search.handler"
    }
    assert len(shard_fns) == SHARD_FUNCTIONS
    names = sorted(fn["Properties"]["FunctionName"] for fn in shard_fns.values())
    assert names == sorted(f"facebank-Shard-{n}" for n in range(SHARD_FUNCTIONS))
    for fn in shard_fns.values():
        assert _role_grants(template, fn["Properties"]["Role"]["Fn::GetAtt"][0]) == expected_grants(SHARD_ACCESS)
        # A timed-out shard is retried once within API Gateway's 29 s (facebank/aws/shard_search.py).
        from facebank.aws.shard_search import READ_TIMEOUT_S, RETRY_BUDGET_S

        timeout = fn["Properties"]["Timeout"]
        assert fn["Properties"]["MemorySize"] == 2048 and timeout < READ_TIMEOUT_S
        assert RETRY_BUDGET_S + READ_TIMEOUT_S < 29
    assert SHARD_ACCESS.vectors == {"GetObject"} and not SHARD_ACCESS.tables()
    invokers = set()
    for policy in resources(template, "AWS::IAM::Policy").values():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
            if any(a.startswith("lambda:") for a in actions):
                assert actions == ["lambda:InvokeFunction"]
                # The stream consumer is invoked by Start and itself (test_only_start_and_the_consumer_...).
                res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                res = [r for r in res if _resource_key(template, r) != "stream-consumer"]
                if not res:
                    continue
                # Exactly the shard functions' ARNs: no wildcard, no other function, no versions.
                assert sorted(r["Fn::GetAtt"][0] for r in res) == sorted(shard_fns)
                invokers |= {r["Ref"] for r in policy["Properties"]["Roles"]}
    searches = sorted(op for op, access in OPERATION_ACCESS.items() if access.shards)
    # The searches, and the membership changes that rebuild a user's vector from its faces'.
    assert searches == ["AssociateFaces", "DisassociateFaces", "SearchFaces", "SearchFacesByImage", "SearchUsers",
                        "SearchUsersByImage"]  # fmt: skip
    # ... and the video worker and the stream consumer, which search the collection the same way.
    handlers = [op_handler(op) for op in searches] + [EXTRA_FUNCTIONS["VideoWorker"], EXTRA_FUNCTIONS["StreamConsumer"]]
    assert invokers == {function(template, h)[1]["Properties"]["Role"]["Fn::GetAtt"][0] for h in handlers}
    for op in searches:
        env = function(template, op_handler(op))[1]["Properties"]["Environment"]["Variables"]
        assert env["FACEBANK_SHARD_FUNCTION"] == "facebank-Shard-" and env["FACEBANK_SHARD_SLOTS"] == "40"
    assert Access().shards is False


def test_segment_cache_follows_each_functions_memory(template, variant):
    from infra.shards import segment_cache_mb

    checked = 0
    for t in (template, variant):
        for fn in resources(t, "AWS::Lambda::Function").values():
            props = fn["Properties"]
            env = props.get("Environment", {}).get("Variables", {})
            if "FACEBANK_VECTOR_BUCKET" not in env:
                assert "FACEBANK_SEGMENT_CACHE_MB" not in env
                continue
            cache, memory = int(env["FACEBANK_SEGMENT_CACHE_MB"]), int(props["MemorySize"])
            models = "FACEBANK_MODEL_DIR" in env
            rows = int(env["FACEBANK_SHARD_ROWS"])
            assert cache == segment_cache_mb(memory, models=models, shard_rows=rows, dimension=128)  # the open pack
            assert 64 <= cache < memory
            checked += 1
    assert checked > 20


# --- layout: nested stacks, each template within budget; an upgrade keeps the data

TEMPLATE_BUDGET = 200  # resources per template: room to grow below CloudFormation's 500
BASELINE = json.loads((ROOT / "tests" / "data" / "infra_baseline.json").read_text())  # main d185935, one stack


def test_every_template_is_within_the_resource_budget():
    for context in ({}, VARIANT):
        _, report = synth(**context)
        counts = report["resource_counts"]
        assert len(counts) >= 8, counts  # the root and one nested stack per feature
        assert all(n <= TEMPLATE_BUDGET for n in counts.values()), counts


@pytest.mark.parametrize("name", ["default", "variant"])
def test_stateful_resources_keep_their_logical_ids_in_the_root_stack(name):
    """Tables and buckets stay in the root template under the one-stack layout's logical ids, so
    CloudFormation updates them in place (no replacement, no data moved) on upgrade."""
    _, report = synth(**({} if name == "default" else VARIANT))
    root = report["root"]["Resources"]
    stateful = {lid: r["Type"] for lid, r in root.items() if r["Type"] in ("AWS::DynamoDB::Table", "AWS::S3::Bucket")}
    assert stateful == BASELINE[name]["stateful"]
    for lid in stateful:
        assert root[lid]["DeletionPolicy"] == ("Retain" if name == "default" else "Delete")


@pytest.mark.parametrize("name", ["default", "variant"])
def test_same_functions_and_grants_as_the_one_stack_layout(name):
    """Every function of the one-stack layout exists once more with the same role grants, memory,
    timeout, environment variables and layers (by handler; the shard functions 40 times)."""
    template = synth(**({} if name == "default" else VARIANT))[0]
    got: dict[str, dict] = {}
    for fn in resources(template, "AWS::Lambda::Function").values():
        props = fn["Properties"]
        if not props.get("Handler", "").startswith("functions."):
            continue
        entry = {
            "grants": sorted(map(list, _role_grants(template, props["Role"]["Fn::GetAtt"][0]))),
            "memory": props["MemorySize"],
            "timeout": props["Timeout"],
            "env": sorted(props["Environment"]["Variables"]),
            "layers": sorted(r["Ref"].rstrip("0123456789ABCDEF") for r in props["Layers"]),
        }
        seen = got.setdefault(props["Handler"], {"count": 0, "function": entry})
        assert seen["function"] == entry, props["Handler"]
        seen["count"] += 1
    assert got == BASELINE[name]["functions"]
    outputs = {k for k in template["Outputs"] if not k.startswith("ApiEndpoint")}  # the RestApi's own, now nested
    assert outputs == {k for k in BASELINE[name]["outputs"] if not k.startswith("ApiEndpoint")}


def test_stateless_resources_live_in_nested_stacks():
    _, report = synth()
    kinds = {r["Type"] for r in report["root"]["Resources"].values()}
    assert not kinds & {"AWS::Lambda::Function", "AWS::IAM::Role", "AWS::SQS::Queue", "AWS::ApiGateway::RestApi"}


# --- offline synth: the model layer from the verified cache or FACEBANK_MODEL_MIRROR

OFFLINE = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": ""}  # no network


def _build_models(out: Path, model_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **OFFLINE, "FACEBANK_MODEL_DIR": str(model_dir)}
    env.pop("FACEBANK_MODEL_MIRROR", None)
    command = [sys.executable, "layers/build.py", "models", "--pack", "mobile", "--out", str(out)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_offline_model_layer_comes_from_the_verified_model_cache(tmp_path):
    """What `facebank models fetch` (or serve) verified into FACEBANK_MODEL_DIR builds the model
    layer with no network and no mirror."""
    from facebank.engine.packs import model_layer_files
    from facebank.models import manifest, sha256_of
    from facebank.settings import Settings

    entries, files = manifest(), model_layer_files("mobile")
    mirror = Settings.from_env().model_mirror
    if not mirror or not Path(mirror).is_dir():
        pytest.skip("no model mirror (FACEBANK_MODEL_MIRROR) to fill a model cache from")
    local = tmp_path / "cache"  # what `facebank models fetch` verifies into a user's cache
    env = {**os.environ, "FACEBANK_MODEL_DIR": str(local)}
    fetch = [sys.executable, "-m", "facebank.cli", "models", "fetch", "--pack", "mobile", "--mirror", mirror]
    fetched = subprocess.run(fetch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    assert all((local / entries[f].path).is_file() for f in files)
    result = _build_models(tmp_path / "layer", local)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in files:
        assert sha256_of(tmp_path / "layer" / "models" / name) == entries[name].sha256


def test_offline_synth_without_models_names_the_variables(tmp_path):
    result = _build_models(tmp_path / "layer", tmp_path / "empty-cache")
    assert result.returncode != 0
    assert "FACEBANK_MODEL_MIRROR=DIR" in result.stderr and "FACEBANK_MODEL_DIR" in result.stderr
    assert "--mirror" not in result.stderr  # cdk synth cannot take serve's flag
    assert not (tmp_path / "layer").exists()


def test_failed_model_layer_build_names_the_offline_variables(tmp_path, monkeypatch):
    import infra.layers as layers

    monkeypatch.setattr(layers, "BUILD_SCRIPT", _fake_build_script(tmp_path, "sys.exit('offline')"))
    monkeypatch.setattr(layers, "BUILD_CACHE", tmp_path / "cache")
    with pytest.raises(LayerError, match=r"offline, set FACEBANK_MODEL_MIRROR=DIR .* FACEBANK_MODEL_DIR"):
        layers.ensure_built(layers.model_layer_build("mobile", ["a.onnx"]))


def test_cdk_json_holds_feature_flags_not_defaults():
    """Defaults live in their declarations (infra/parameters.py, facebank/settings.py), not in cdk.json."""
    from infra.parameters import describe

    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    assert all(key.startswith("@aws-cdk/") or key == "cli-telemetry" for key in context), context
    listed = {line.split()[0] for line in describe().splitlines()}
    assert {"stackName", "memorySize", "maxVideoJobs", "shardRows", "facebank:notificationTopics", "pack"} <= listed


def _infra_imports() -> dict[str, set[tuple[str, str]]]:
    """infra module -> {(imported infra module, imported name)}, from the source (any nesting level)."""
    import ast

    out: dict[str, set[tuple[str, str]]] = {}
    for path in (ROOT / "infra").glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("infra."):
                found |= {(node.module.removeprefix("infra."), alias.name) for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {(a.name.removeprefix("infra."), "") for a in node.names if a.name.startswith("infra.")}
        out[path.stem] = found
    return out


def test_infra_has_no_import_circle_and_no_private_imports():
    """issue 22: features build on infra/platform.py's public factories; nothing imports a private
    name of another module, no module imports one that (indirectly) imports it back, and nothing
    imports at function level to dodge a circle."""
    import ast

    imports = _infra_imports()
    graph = {module: {target for target, _ in found} for module, found in imports.items()}
    for module, found in imports.items():
        assert not [name for _, name in found if name.startswith("_")], module

    def reachable(start: str) -> set[str]:
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        return seen

    assert [m for m in graph if m in reachable(m)] == []
    for path in (ROOT / "infra").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                nested = [n for n in ast.walk(node) if isinstance(n, ast.ImportFrom | ast.Import)]
                assert not [n for n in nested if getattr(n, "module", "") and n.module.startswith("infra")], path
            # no call of another object's private method (the old features called FacebankStack._table)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                assert isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}, (path.name, node.attr)
    assert "platform" in graph["stack"] and not graph["platform"] & {"stack", "video", "shards", "operations"}


def test_readme_deploy_section_names_the_model_variables_and_a_supported_node():
    readme = (ROOT / "README.md").read_text()
    deploy = readme[readme.index("## Deploy to your account") :]
    deploy = deploy[: deploy.index("\n## ", 5)]
    assert "FACEBANK_MODEL_MIRROR" in deploy and "FACEBANK_MODEL_DIR" in deploy
    assert "Node.js 22 or 24" in deploy and "18+" not in deploy  # Node 20 is end-of-life since 2026-10-30


def test_function_environment_names_are_declared_settings(template, variant):
    """Every FACEBANK_* variable a function gets is one Settings.from_env reads (facebank/settings.py)."""
    from facebank.settings import declared

    names = {name for _, spec in declared() for name in spec.env}
    for t in (template, variant):
        for fn in resources(t, "AWS::Lambda::Function").values():
            env = fn["Properties"].get("Environment", {}).get("Variables", {})
            assert {k for k in env if k.startswith("FACEBANK_")} <= names, fn["Properties"].get("Handler")


def test_create_stream_processor_gets_the_deployment_limit(template):
    from facebank.settings import Settings

    limits = {}
    for operation in sorted(OPERATIONS):
        env = function(template, op_handler(operation))[1]["Properties"]["Environment"]["Variables"]
        if "FACEBANK_MAX_STREAM_PROCESSORS" in env:
            limits[operation] = env["FACEBANK_MAX_STREAM_PROCESSORS"]
    assert limits == {"CreateStreamProcessor": str(Settings().max_stream_processors)}


def test_deploy_docs_list_every_context_key():
    from infra.parameters import describe

    docs = (ROOT / "docs" / "deploy.md").read_text()
    keys = [line.split()[0] for line in describe().splitlines()]
    assert [key for key in keys if f"`{key}`" not in docs] == []


# --- stream processors on AWS (infra/streams.py)


def test_stream_consumer_role_is_its_access_plus_the_streams_itself_and_its_failure_queue(template):
    from infra.access import STREAM_CONSUMER_ACCESS
    from infra.streams import CONSUMER_TIMEOUT, RETRY_ATTEMPTS

    handler = EXTRA_FUNCTIONS["StreamConsumer"]
    consumer_id, consumer = function(template, handler)
    props = consumer["Properties"]
    queues = resources(template, "AWS::SQS::Queue")
    [(failures_id, failures)] = [(k, q) for k, q in queues.items() if k.startswith("StreamConsumerFailuresQueue")]
    [dlq_id] = [k for k in queues if k.startswith("StreamConsumerFailuresDeadLetterQueue")]
    streams = {
        ("kinesisvideo:GetDataEndpoint", "video-streams"),
        ("kinesisvideo:GetMedia", "video-streams"),
        ("kinesis:PutRecords", "data-streams"),
        ("lambda:InvokeFunction", "stream-consumer"),  # the hand-over to its next invocation
    }
    failure_queue = {(f"sqs:{a}", "queue") for a in (*SQS_CONSUME, "SendMessage")}  # destination + consumer
    assert grants(template, handler) == expected_grants(STREAM_CONSUMER_ACCESS) | streams | failure_queue
    # The account's and region's streams only (the processors name theirs per request).
    text = json.dumps(template)
    assert ":kinesisvideo:" in text and '"arn:aws:kinesisvideo' not in text
    # 15-minute hops that invoke themselves by name; PyAV and the models; one vCPU.
    assert props["Timeout"] == CONSUMER_TIMEOUT.to_seconds() == 900 and props["MemorySize"] == 2048
    assert props["FunctionName"] == "facebank-StreamConsumer"
    layers = sorted(ref["Ref"].rstrip("0123456789ABCDEF") for ref in props["Layers"])
    assert layers == ["ModelLayer", "VideoLayer"]
    assert props["Environment"]["Variables"]["FACEBANK_STREAM_CONSUMER_FUNCTION"] == "facebank-StreamConsumer"
    # A crashed invocation is retried, then its event ends the processor FAILED through the queue.
    [config] = [
        c["Properties"]
        for c in resources(template, "AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": consumer_id}
    ]
    assert config["MaximumRetryAttempts"] == RETRY_ATTEMPTS
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": [failures_id, "Arn"]}
    assert set(_mappings(template, consumer_id)) == {failures_id}
    assert failures["Properties"]["VisibilityTimeout"] >= props["Timeout"]
    assert failures["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}


def test_only_start_and_the_consumer_invoke_the_consumer(template):
    invokers = set()
    for policy in resources(template, "AWS::IAM::Policy").values():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            if any(_resource_key(template, r) == "stream-consumer" for r in res):
                assert st["Action"] == "lambda:InvokeFunction"
                invokers |= {r["Ref"] for r in policy["Properties"]["Roles"]}
    handlers = [op_handler("StartStreamProcessor"), EXTRA_FUNCTIONS["StreamConsumer"]]
    assert invokers == {function(template, h)[1]["Properties"]["Role"]["Fn::GetAtt"][0] for h in handlers}
    env = function(template, op_handler("StartStreamProcessor"))[1]["Properties"]["Environment"]["Variables"]
    assert env["FACEBANK_STREAM_CONSUMER_FUNCTION"] == "facebank-StreamConsumer"
