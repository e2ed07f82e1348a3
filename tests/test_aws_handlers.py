"""One behaviour suite, two transports: the same boto3 Rekognition code runs against

* ``server``: an unmodified boto3 client against ``facebank serve`` (SQLite + files), and
* ``apigw``: ``facebank.client(api_url)`` (the deployed-API helper) against a small local stand-in
  for API Gateway that checks each request's SigV4 signature for ``execute-api`` with botocore's
  signer and the ``/v1/<Operation>`` path, then invokes the real Lambda handler
  (``functions/<op>.py``) with an API Gateway proxy event; storage is DynamoDB + S3 on moto
  (tables made by ``facebank.storage.dynamodb.create_tables``).

The answers must be equal. On the ``apigw`` transport every AWS call a handler makes is recorded and
checked against its function's role in the synthesised template: the IAM policies are not just
small, they are enough.
"""

from __future__ import annotations

import importlib
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from support import image_bytes

import facebank
from facebank.operations import OPERATIONS

REGION = "us-east-1"
ACCOUNT = "000000000000"
TABLE_PREFIX = "facebank-"
VECTOR_BUCKET = "facebank-embeddings-test"
INGEST_BUCKET = f"facebank-ingest-{ACCOUNT}-{REGION}"  # the stack's name for its ingest bucket
VIDEO_QUEUE = "facebank-video"  # tests/test_aws_video.py's stand-in for the stack's video queue
KEY_ID, SECRET = "AKIDFACEBANKTEST", "facebank-test-secret"

TWO_PEOPLE = "groups/face_recognition_two_people.jpg"
OBAMA_BIDEN = "groups/face_recognition_obama_and_biden.jpg"


def snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


# --- recording AWS calls and turning them into IAM (action, resource) pairs


@dataclass
class Recorder:
    function: str | None = None  # the function whose handler is running
    calls: list[tuple[str | None, str, str, dict]] = field(default_factory=list)

    def __call__(self, params: dict, model: Any, **_: Any) -> None:
        if self.function is None:  # the test's own setup and uploads
            return
        self.calls.append((self.function, model.service_model.service_name, model.name, dict(params)))

    def take(self) -> list[tuple[str | None, str, str, dict]]:
        calls, self.calls = self.calls, []
        return calls


def iam_pairs(service: str, operation: str, params: dict) -> set[tuple[str, str]]:
    """The (IAM action, resource key of tests/test_infra.py) an AWS call needs."""

    def table(name: str) -> str:
        assert name.startswith(TABLE_PREFIX), name
        return f"table:{name[len(TABLE_PREFIX) :]}"

    if service == "dynamodb":
        if operation == "TransactWriteItems":
            kinds = {
                "Put": "PutItem",
                "Update": "UpdateItem",
                "Delete": "DeleteItem",
                "ConditionCheck": "ConditionCheckItem",
            }
            return {
                (f"dynamodb:{kinds[k]}", table(v["TableName"]))
                for item in params["TransactItems"]
                for k, v in item.items()
            }
        if operation in ("BatchGetItem", "BatchWriteItem"):
            return {(f"dynamodb:{operation}", table(name)) for name in params["RequestItems"]}
        return {(f"dynamodb:{operation}", table(params["TableName"]))}
    if service == "s3":
        bucket = params["Bucket"]
        if operation in ("ListObjectsV2", "ListObjects"):
            assert bucket == VECTOR_BUCKET and params.get("Prefix", "").startswith("vectors/"), params
            return {("s3:ListBucket", "vectors-bucket")}
        action = {
            "GetObject": "s3:GetObject",
            "HeadObject": "s3:GetObject",
            "PutObject": "s3:PutObject",
            "DeleteObject": "s3:DeleteObject",
            "DeleteObjects": "s3:DeleteObject",
        }[operation]
        if bucket == VECTOR_BUCKET:
            keys = [o["Key"] for o in params["Delete"]["Objects"]] if operation == "DeleteObjects" else [params["Key"]]
            if all(k.startswith("jobs/") for k in keys):  # video job results (infra/video.py)
                return {(action, "jobs/*")}
            assert all(k.startswith("vectors/") for k in keys), keys
            return {(action, "vectors/*")}
        assert bucket == INGEST_BUCKET, bucket
        if params.get("VersionId"):
            return {(action, "ingest-objects"), ("s3:GetObjectVersion", "ingest-objects")}
        return {(action, "ingest-objects")}
    if service == "sqs":  # the video queue (infra/video.py): job messages, and a failed one's backoff
        queue = params["QueueUrl"].rsplit("/", 1)[-1]
        assert queue == VIDEO_QUEUE, params["QueueUrl"]
        action = {"SendMessage": "SendMessage", "SendMessageBatch": "SendMessage"}.get(operation, operation)
        return {(f"sqs:{action}", "video-queue")}
    if service == "sns" and operation == "Publish":  # the stack's default topics: its own account and region
        assert params["TopicArn"].startswith(f"arn:aws:sns:{REGION}:{ACCOUNT}:"), params["TopicArn"]
        return {("sns:Publish", "sns-topics")}
    raise AssertionError(f"unexpected AWS call {service}.{operation}")


def check_calls_allowed(calls) -> set[str]:
    """Every recorded call is allowed to the function that made it; returns the functions seen."""
    from test_infra import EXTRA_FUNCTIONS, grants, synth

    template = synth()[0]
    seen, missing = set(), {}
    for function, service, operation, params in calls:
        handler = EXTRA_FUNCTIONS.get(function) or f"functions.{snake(function)}.handler"
        needed = iam_pairs(service, operation, params)
        if lacking := needed - grants(template, handler):
            missing.setdefault(function, set()).update((f"{service}.{operation}", *pair) for pair in lacking)
        seen.add(function)
    assert not missing, f"calls not granted to the function's role (infra/access.py): {missing}"
    return seen


# --- the AWS side: moto, environment, and a stand-in for API Gateway


class ApiGateway(ThreadingHTTPServer):
    """POST /v1/<Operation>, SigV4 (execute-api) checked, proxied to functions.<op>.handler."""

    daemon_threads = True

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.requests: list[dict] = []
        self.lock = threading.Lock()  # one handler at a time: moto's backends are not thread-safe
        super().__init__(("127.0.0.1", 0), _ApiHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/"


class _ApiHandler(BaseHTTPRequestHandler):
    server: ApiGateway

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        from facebank import sigv4
        from facebank.aws.runtime import LocalContext
        from facebank.errors import RekognitionError

        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = {"path": self.path, "authorization": headers.get("authorization", ""), "verified": False}
        self.server.requests.append(record)
        try:
            sigv4.verify(
                "POST", f"http://{headers['host']}{self.path}", headers, body, {KEY_ID: SECRET}, service="execute-api"
            )
            scope = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request", record["authorization"])
            if scope.groups() != (REGION, "execute-api"):
                raise sigv4.InvalidSignatureException(f"credential scope is {scope.groups()}, not {REGION}/execute-api")
        except RekognitionError as e:  # API Gateway answers 403 with {"message"}
            self._send(403, json.dumps({"message": e.message}).encode(), {"x-amzn-ErrorType": e.code})
            return
        record["verified"] = True
        m = re.fullmatch(r"/v1/([A-Za-z]+)", self.path)
        if not m or m[1] not in OPERATIONS:
            self._send(
                403,
                b'{"message":"Missing Authentication Token"}',
                {"x-amzn-ErrorType": "MissingAuthenticationTokenException"},
            )
            return
        operation = m[1]
        event = {
            "resource": f"/{operation}",
            "path": f"/{operation}",
            "httpMethod": "POST",
            "headers": dict(self.headers.items()),
            "multiValueHeaders": {k: [v] for k, v in self.headers.items()},
            "queryStringParameters": None,
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "stage": "v1",
                "resourcePath": f"/{operation}",
                "httpMethod": "POST",
                "identity": {"accessKey": KEY_ID, "caller": "AIDATEST", "user": "AIDATEST"},
            },
            "body": body.decode(),
            "isBase64Encoded": False,
        }
        handler = importlib.import_module(f"functions.{snake(operation)}").handler
        with self.server.lock:
            self.server.recorder.function = operation
            try:
                result = handler(event, LocalContext(function_name=f"facebank-{operation}"))
            finally:
                self.server.recorder.function = None
        self._send(result["statusCode"], result["body"].encode(), result["headers"])


@dataclass
class AwsEnv:
    session: boto3.session.Session
    recorder: Recorder
    api: ApiGateway

    def client(self, **kwargs):
        return facebank.client(
            self.api.url, region=REGION, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, **kwargs
        )

    def as_function(self, function: str, fn: Callable, *args, **kwargs):
        """Run fn as if inside the named Lambda function (for recording its AWS calls)."""
        with self.api.lock:
            self.recorder.function = function
            try:
                return fn(*args, **kwargs)
            finally:
                self.recorder.function = None


@pytest.fixture(scope="module")
def aws(model_env):
    """moto (DynamoDB + S3) in this process, the Lambda environment, and the API stand-in."""
    from moto import mock_aws

    from facebank.aws import runtime
    from facebank.storage.dynamodb import TableNames, create_tables
    from facebank.storage.dynamodb_streams import create_streams_table

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "FACEBANK_VECTOR_BUCKET": VECTOR_BUCKET,
        "FACEBANK_TABLE_PREFIX": TABLE_PREFIX,
        "FACEBANK_ACCOUNT_ID": ACCOUNT,
        "FACEBANK_INGEST_TABLE": f"{TABLE_PREFIX}ingest",
        "FACEBANK_INGEST_BUCKET": INGEST_BUCKET,
        "FACEBANK_INGEST_PREFIX": "",
        "POWERTOOLS_METRICS_NAMESPACE": "facebank-test",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        with mock_aws():
            session = boto3.session.Session(region_name=REGION)
            recorder = Recorder()
            session.events.register("provide-client-params.*.*", recorder, unique_id="facebank-test-recorder")
            mp.setattr(boto3, "DEFAULT_SESSION", session)  # the handlers' boto3.client(...) calls
            create_tables(session.client("dynamodb"), TableNames.with_prefix(TABLE_PREFIX))
            create_streams_table(session.client("dynamodb"), f"{TABLE_PREFIX}streams")
            ddb = session.client("dynamodb")
            ddb.create_table(
                TableName=f"{TABLE_PREFIX}ingest",
                KeySchema=[{"AttributeName": "object_key", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "object_key", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            s3 = session.client("s3")
            for bucket in (VECTOR_BUCKET, INGEST_BUCKET):
                s3.create_bucket(Bucket=bucket)
            runtime.reset_shared_context()
            recorder.take()  # setup calls are not a function's
            api = ApiGateway(recorder)
            thread = threading.Thread(target=api.serve_forever, daemon=True)
            thread.start()
            try:
                yield AwsEnv(session, recorder, api)
            finally:
                api.shutdown()
                api.server_close()
                runtime.reset_shared_context()


# --- transports


@dataclass
class Transport:
    name: str
    rek: Any
    bucket: str
    put_object: Callable[[str, bytes], None]


@pytest.fixture(scope="module")
def transports(rekognition, s3_server, aws) -> dict[str, Transport]:
    server_s3 = boto3.client(
        "s3", endpoint_url=s3_server, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    server_bucket = "facebank-handlers-images"
    server_s3.create_bucket(Bucket=server_bucket)
    aws_s3 = aws.session.client("s3")
    return {
        "server": Transport("server", rekognition, server_bucket,
                            lambda key, data: server_s3.put_object(Bucket=server_bucket, Key=key, Body=data)),
        "apigw": Transport("apigw", aws.client(), INGEST_BUCKET,
                           lambda key, data: aws_s3.put_object(Bucket=INGEST_BUCKET, Key=key, Body=data)),
    }  # fmt: skip


def normalise(value: Any) -> Any:
    """Drop what legitimately differs between transports; round floats."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in sorted(value.items()) if k not in ("ResponseMetadata", "CreationTimestamp")}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, float):
        return round(value, 3)
    return value


def attempt(fn: Callable, **kwargs) -> Any:
    """The call's answer, or its error code: errors are answers too."""
    try:
        return normalise(fn(**kwargs))
    except ClientError as e:
        return {"error": e.response["Error"]["Code"], "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}


def run_both(transports, aws, scenario: Callable[[Transport, str], list]) -> tuple[list, list]:
    collection = f"handlers-{uuid.uuid4().hex[:8]}"
    aws.recorder.take()
    answers = {name: scenario(t, collection) for name, t in transports.items()}
    seen = check_calls_allowed(aws.recorder.take())
    assert answers["server"] == answers["apigw"]
    return answers["apigw"], seen


# --- scenarios


def test_detect_and_compare_faces(transports, aws):
    def scenario(t: Transport, collection: str) -> list:
        two, pair = image_bytes(TWO_PEOPLE), image_bytes(OBAMA_BIDEN)
        t.put_object(f"{collection}/upload.jpg", pair)
        return [
            attempt(t.rek.detect_faces, Image={"Bytes": two}, Attributes=["ALL"]),
            attempt(t.rek.detect_faces, Image={"S3Object": {"Bucket": t.bucket, "Name": f"{collection}/upload.jpg"}}),
            attempt(
                t.rek.compare_faces, SourceImage={"Bytes": pair}, TargetImage={"Bytes": pair}, SimilarityThreshold=50
            ),
            attempt(t.rek.detect_faces, Image={"S3Object": {"Bucket": t.bucket, "Name": "missing.jpg"}}),
            attempt(t.rek.detect_faces, Image={"Bytes": b"not an image at all"}),
            attempt(t.rek.compare_faces, SourceImage={"Bytes": two}, TargetImage={"Bytes": b"x" * 10}),
        ]

    answers, seen = run_both(transports, aws, scenario)
    assert len(answers[0]["FaceDetails"]) == 2 and len(answers[1]["FaceDetails"]) >= 2
    assert answers[2]["FaceMatches"] and answers[3]["error"] == "InvalidS3ObjectException"
    assert answers[4]["error"] == "InvalidImageFormatException"
    assert seen <= {"DetectFaces", "CompareFaces"}


def test_collection_lifecycle(transports, aws):
    def scenario(t: Transport, collection: str) -> list:
        rek = t.rek
        out = [
            attempt(rek.create_collection, CollectionId=collection, Tags={"team": "a"}),
            attempt(rek.create_collection, CollectionId=collection),
            attempt(rek.describe_collection, CollectionId=collection),
        ]
        listed = rek.list_collections(MaxResults=4096)
        out.append(collection in listed["CollectionIds"])
        out += [
            attempt(rek.delete_collection, CollectionId=collection),
            attempt(rek.describe_collection, CollectionId=collection),
            attempt(rek.delete_collection, CollectionId=collection),
            attempt(rek.describe_collection, CollectionId="bad id!"),
        ]
        return out

    answers, seen = run_both(transports, aws, scenario)
    assert answers[0]["StatusCode"] == 200 and answers[1]["error"] == "ResourceAlreadyExistsException"
    assert answers[2]["FaceCount"] == 0 and answers[3] is True
    assert answers[5]["error"] == "ResourceNotFoundException" and answers[7]["error"] == "ValidationException"
    assert {"CreateCollection", "DescribeCollection", "ListCollections", "DeleteCollection"} <= seen


def test_index_list_search_delete_faces(transports, aws):
    def scenario(t: Transport, collection: str) -> list:
        rek = t.rek
        two, pair = image_bytes(TWO_PEOPLE), image_bytes(OBAMA_BIDEN)
        t.put_object(f"{collection}/pair.jpg", pair)
        rek.create_collection(CollectionId=collection)
        out = [
            attempt(rek.index_faces, CollectionId=collection, Image={"Bytes": two}, ExternalImageId="two"),
            attempt(rek.index_faces, CollectionId=collection, Image={"Bytes": two}, ExternalImageId="two"),  # retry
            attempt(
                rek.index_faces,
                CollectionId=collection,
                ExternalImageId="pair",
                MaxFaces=1,
                Image={"S3Object": {"Bucket": t.bucket, "Name": f"{collection}/pair.jpg"}},
            ),
        ]
        faces = rek.list_faces(CollectionId=collection)["Faces"]
        out.append(normalise(sorted(faces, key=lambda f: f["FaceId"])))
        out.append(attempt(rek.list_faces, CollectionId=collection, MaxResults=1))
        first = out[0]["FaceRecords"][0]["Face"]["FaceId"]
        out += [
            attempt(rek.search_faces, CollectionId=collection, FaceId=first, FaceMatchThreshold=0),
            attempt(rek.search_faces_by_image, CollectionId=collection, Image={"Bytes": two}, FaceMatchThreshold=0),
            attempt(rek.search_faces_by_image, CollectionId=collection, Image={"Bytes": pair}),
            attempt(rek.search_faces, CollectionId=collection, FaceId=str(uuid.UUID(int=1))),
            attempt(rek.delete_faces, CollectionId=collection, FaceIds=[first, str(uuid.UUID(int=2))]),
            attempt(rek.describe_collection, CollectionId=collection),
            attempt(rek.index_faces, CollectionId="no-such-collection", Image={"Bytes": two}),
        ]
        rek.delete_collection(CollectionId=collection)
        return out

    answers, seen = run_both(transports, aws, scenario)
    assert len(answers[0]["FaceRecords"]) == 2
    assert answers[1]["FaceRecords"] == answers[0]["FaceRecords"]  # deterministic ids: a retry adds nothing
    assert len(answers[3]) == 3 and "NextToken" in answers[4]
    assert answers[5]["FaceMatches"] and answers[6]["FaceMatches"]
    assert answers[9]["DeletedFaces"] and answers[9]["UnsuccessfulFaceDeletions"][0]["Reasons"] == ["FACE_NOT_FOUND"]
    assert answers[10]["FaceCount"] == 2 and answers[11]["error"] == "ResourceNotFoundException"
    assert {"IndexFaces", "ListFaces", "SearchFaces", "SearchFacesByImage", "DeleteFaces"} <= seen


def test_users(transports, aws):
    if "CreateUser" not in OPERATIONS:
        pytest.skip("user operations not registered yet")

    def scenario(t: Transport, collection: str) -> list:
        rek = t.rek
        two = image_bytes(TWO_PEOPLE)
        rek.create_collection(CollectionId=collection)
        faces = [
            r["Face"]["FaceId"] for r in rek.index_faces(CollectionId=collection, Image={"Bytes": two})["FaceRecords"]
        ]
        out = [
            attempt(rek.create_user, CollectionId=collection, UserId="alice"),
            attempt(rek.list_users, CollectionId=collection),
            attempt(rek.associate_faces, CollectionId=collection, UserId="alice", FaceIds=faces[:1]),
            attempt(rek.search_users, CollectionId=collection, FaceId=faces[0]),
            attempt(rek.search_users_by_image, CollectionId=collection, Image={"Bytes": two}),
            attempt(rek.delete_faces, CollectionId=collection, FaceIds=faces[:1]),
            attempt(rek.disassociate_faces, CollectionId=collection, UserId="alice", FaceIds=faces[:1]),
            attempt(rek.delete_user, CollectionId=collection, UserId="alice"),
            attempt(rek.list_users, CollectionId=collection),
        ]
        rek.delete_collection(CollectionId=collection)
        return out

    _, seen = run_both(transports, aws, scenario)
    assert {"CreateUser", "AssociateFaces", "SearchUsers", "DeleteUser"} <= seen


def _processor(t: Transport, collection: str, name: str, **kw) -> dict:
    return t.rek.create_stream_processor(
        Name=name,
        Input={"KinesisVideoStream": {"Arn": f"arn:aws:kinesisvideo:{REGION}:{ACCOUNT}:stream/cam/1700000000000"}},
        Output={"KinesisDataStream": {"Arn": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/out"}},
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/streams",
        Settings={"FaceSearch": {"CollectionId": collection, "FaceMatchThreshold": 90}},
        **kw,
    )


def test_stream_processors(transports, aws):
    """Everything but Start (whose answer is the runtime's: test_start_stream_processor below)."""

    def scenario(t: Transport, collection: str) -> list:
        rek, name = t.rek, f"{collection}-sp"
        rek.create_collection(CollectionId=collection)
        out = [
            attempt(_processor, t=t, collection=collection, name=name, Tags={"site": "hq"}),
            attempt(_processor, t=t, collection=collection, name=name),
            attempt(_processor, t=t, collection="no-such-collection", name=f"{name}-2"),
        ]
        described = rek.describe_stream_processor(Name=name)
        out.append(normalise({k: v for k, v in described.items() if k != "LastUpdateTimestamp"}))
        listed = rek.list_stream_processors(MaxResults=1000)["StreamProcessors"]
        out.append([p for p in listed if p["Name"] == name])
        arn = described["StreamProcessorArn"]
        out += [
            attempt(rek.update_stream_processor, Name=name, DataSharingPreferenceForUpdate={"OptIn": True}),
            attempt(rek.tag_resource, ResourceArn=arn, Tags={"team": "ops"}),
            attempt(rek.untag_resource, ResourceArn=arn, TagKeys=["site"]),
            attempt(rek.list_tags_for_resource, ResourceArn=arn),
            attempt(rek.stop_stream_processor, Name=name),
            attempt(rek.delete_stream_processor, Name=name),
            attempt(rek.describe_stream_processor, Name=name),
            attempt(rek.delete_stream_processor, Name=name),
        ]
        rek.delete_collection(CollectionId=collection)
        return out

    answers, seen = run_both(transports, aws, scenario)
    assert answers[0]["StreamProcessorArn"].endswith(":streamprocessor/" + answers[3]["Name"])
    assert answers[1]["error"] == "ResourceInUseException" and answers[2]["error"] == "InvalidParameterException"
    assert answers[3]["Status"] == "STOPPED" and answers[4] == [{"Name": answers[3]["Name"], "Status": "STOPPED"}]
    assert answers[8] == {"Tags": {"team": "ops"}} and answers[9]["error"] == "ResourceInUseException"
    assert answers[11]["error"] == answers[12]["error"] == "ResourceNotFoundException"
    assert {
        "CreateStreamProcessor",
        "DescribeStreamProcessor",
        "ListStreamProcessors",
        "UpdateStreamProcessor",
        "StopStreamProcessor",
        "DeleteStreamProcessor",
        "TagResource",
        "UntagResource",
        "ListTagsForResource",
    } <= seen


def test_start_stream_processor(transports, aws, monkeypatch):
    """StartStreamProcessor on the AWS handlers with a recording double as the runtime hand-over
    (the consumer invocation is sp-aws's, checked by its own suite): the processor becomes STARTING
    and its calls are within its function's role."""
    from facebank.aws import runtime

    handed: list[str] = []
    monkeypatch.setattr(runtime.shared_context(), "start_stream_processor", handed.append)
    t, collection = transports["apigw"], f"handlers-{uuid.uuid4().hex[:8]}"
    name = f"{collection}-sp"
    t.rek.create_collection(CollectionId=collection)
    _processor(t, collection, name)
    aws.recorder.take()
    session = t.rek.start_stream_processor(Name=name)["SessionId"]
    seen = check_calls_allowed(aws.recorder.take())
    assert seen == {"StartStreamProcessor"} and handed == [name] and session
    assert t.rek.describe_stream_processor(Name=name)["Status"] == "STARTING"
    t.rek.stop_stream_processor(Name=name)
    assert t.rek.describe_stream_processor(Name=name)["Status"] == "STOPPING"


# --- the client helper and the API's edges


def test_client_signs_for_execute_api_with_the_operation_path(transports, aws):
    aws.api.requests.clear()
    transports["apigw"].rek.list_collections()
    [request] = aws.api.requests
    assert request["path"] == "/v1/ListCollections"
    assert request["verified"] is True
    assert f"/{REGION}/execute-api/aws4_request" in request["authorization"]


def test_wrong_secret_or_plain_rekognition_client_is_refused(aws):
    impostor = facebank.client(aws.api.url, region=REGION, aws_access_key_id=KEY_ID, aws_secret_access_key="wrong")
    with pytest.raises(ClientError) as err:
        impostor.list_collections()
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # A stock client (signed for "rekognition", POST /v1/) is what the helper exists to fix.
    plain = boto3.client(
        "rekognition",
        endpoint_url=aws.api.url,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )
    with pytest.raises(ClientError) as err:
        plain.list_collections()
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert aws.api.requests[-1]["verified"] is False


def test_oversized_bytes_refused_before_sending_naming_s3object(aws):
    rek = aws.client()
    aws.api.requests.clear()
    with pytest.raises(rek.exceptions.ImageTooLargeException, match="S3Object"):
        rek.detect_faces(Image={"Bytes": b"\xff" * 4_600_000})
    assert aws.api.requests == []  # nothing was sent


def test_region_is_read_from_the_api_url():
    from facebank.api_client import region_of

    rek = facebank.client(
        "https://abc123.execute-api.eu-west-2.amazonaws.com/v1/", aws_access_key_id="a", aws_secret_access_key="b"
    )
    assert rek.meta.region_name == "eu-west-2"
    assert region_of("https://abc123.execute-api.cn-north-1.amazonaws.com.cn/v1") == "cn-north-1"
    assert region_of("http://127.0.0.1:8080/") is None


def test_aws_cli_plugin_calls_the_api(aws, tmp_path, monkeypatch, capsys):
    """`aws rekognition ... --endpoint-url <ApiUrl>` with the facebank plugin enabled."""
    from awscli.clidriver import create_clidriver

    config = tmp_path / "config"
    config.write_text("[plugins]\nfacebank = facebank.aws.awscli\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    aws.api.requests.clear()
    collection = f"cli-{uuid.uuid4().hex[:8]}"
    base = ["--endpoint-url", aws.api.url, "--region", REGION, "--output", "json"]
    assert create_clidriver().main(["rekognition", "create-collection", "--collection-id", collection, *base]) == 0
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(image_bytes(TWO_PEOPLE))
    capsys.readouterr()
    assert create_clidriver().main(["rekognition", "detect-faces", "--image-bytes", f"fileb://{photo}", *base]) == 0
    assert len(json.loads(capsys.readouterr().out)["FaceDetails"]) == 2
    assert [r["path"] for r in aws.api.requests] == ["/v1/CreateCollection", "/v1/DetectFaces"]
    assert all(r["verified"] for r in aws.api.requests)
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * 4_600_000)
    assert create_clidriver().main(["rekognition", "detect-faces", "--image-bytes", f"fileb://{big}", *base]) != 0
    assert "ImageTooLargeException" in capsys.readouterr().err and len(aws.api.requests) == 2
    create_clidriver().main(["rekognition", "delete-collection", "--collection-id", collection, *base])
    aws.recorder.take()


def test_aws_cli_plugin_leaves_other_endpoints_alone():
    from facebank.aws.awscli import is_facebank_api

    assert is_facebank_api("https://abc.execute-api.us-east-1.amazonaws.com/v1")
    assert is_facebank_api("http://127.0.0.1:9000/v1/")
    assert not is_facebank_api("https://rekognition.us-east-1.amazonaws.com/")
    assert not is_facebank_api("http://127.0.0.1:8080")  # facebank serve
