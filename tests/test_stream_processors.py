"""Stream processors through the API (issue 26): boto3 against facebank serve's HTTP app over
embedded storage, every error a Rekognition user would get, and the lifecycle states reachable
without a stream runtime. Start hands the processor to ``Context.start_stream_processor``; here a
recording double stands in for the runtime (it plays the runtime's part through the store, as
the embedded runner and the AWS consumer do). Every response is checked against botocore's output
shape and every error against the operation's declared errors (support.check_responses).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from support import check_responses, embedded_ctx, serving

from facebank.errors import InvalidParameterException
from facebank.operations import Context
from facebank.server import Facebank

ACCOUNT = "123456789012"
KVS = f"arn:aws:kinesisvideo:us-east-1:{ACCOUNT}:stream/front-door/1700000000000"
KDS = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/faces-out"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/RekognitionStreams"
TOPIC = f"arn:aws:sns:us-east-1:{ACCOUNT}:stream-events"


@dataclass
class Runtime:
    """A recording double of the stream runtime: records each hand-over, or raises ``fail``."""

    started: list[str] = field(default_factory=list)
    fail: Exception | None = None

    def __call__(self, name: str) -> None:
        self.started.append(name)
        if self.fail is not None:
            raise self.fail


@dataclass
class Api:
    rek: object
    ctx: Context
    runtime: Runtime

    def error(self, call, **kwargs) -> tuple[str, str]:
        with pytest.raises(ClientError) as info:
            call(**kwargs)
        return info.value.response["Error"]["Code"], info.value.response["Error"]["Message"]


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Api]:
    ctx = embedded_ctx(tmp_path_factory.mktemp("streams") / "data", account_id=ACCOUNT, max_stream_processors=6)
    runtime = Runtime()
    ctx.start_stream_processor = runtime
    app = Facebank(ctx, workers=4)
    app.ready.set()  # no request here loads a model
    with serving(app) as port:
        rek = boto3.client(
            "rekognition",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=Config(retries={"mode": "standard", "max_attempts": 1}),  # every answer as sent
        )
        check_responses(rek)
        rek.create_collection(CollectionId="people")
        yield Api(rek, ctx, runtime)


@pytest.fixture
def name(api, request) -> Iterator[str]:
    """A fresh processor name; whatever the test left is deleted after it (the limit is small)."""
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    name = f"{request.node.originalname[:90]}-{digest}"
    yield name
    rec = api.ctx.storage.streams.get(name)
    if rec is not None and rec.status not in ("STOPPED", "FAILED"):
        api.ctx.storage.streams.transition(name, (rec.status,), "STOPPED")
    api.ctx.storage.streams.delete(name, ("STOPPED", "FAILED"))


def create(api: Api, name: str, **overrides) -> dict:
    request = {
        "Name": name,
        "Input": {"KinesisVideoStream": {"Arn": KVS}},
        "Output": {"KinesisDataStream": {"Arn": KDS}},
        "RoleArn": ROLE,
        "Settings": {"FaceSearch": {"CollectionId": "people", "FaceMatchThreshold": 85.5}},
    }
    return api.rek.create_stream_processor(**(request | overrides))


# --- Create / Describe / List


def test_create_and_describe(api, name):
    arn = create(
        api,
        name,
        Tags={"site": "hq"},
        NotificationChannel={"SNSTopicArn": TOPIC},
        DataSharingPreference={"OptIn": True},
    )["StreamProcessorArn"]
    assert arn == f"arn:aws:rekognition:us-east-1:{ACCOUNT}:streamprocessor/{name}"
    got = api.rek.describe_stream_processor(Name=name)
    assert (got["Name"], got["StreamProcessorArn"], got["Status"]) == (name, arn, "STOPPED")
    assert "StatusMessage" not in got
    assert got["Input"] == {"KinesisVideoStream": {"Arn": KVS}}
    assert got["Output"] == {"KinesisDataStream": {"Arn": KDS}}
    assert got["RoleArn"] == ROLE
    assert got["Settings"] == {"FaceSearch": {"CollectionId": "people", "FaceMatchThreshold": 85.5}}
    assert got["NotificationChannel"] == {"SNSTopicArn": TOPIC}
    assert got["DataSharingPreference"] == {"OptIn": True}
    assert got["CreationTimestamp"] == got["LastUpdateTimestamp"]
    assert abs(got["CreationTimestamp"].timestamp() - time.time()) < 600
    assert api.rek.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"site": "hq"}


def test_threshold_defaults_to_80_and_lower_values_become_80(api, name):
    create(api, name, Settings={"FaceSearch": {"CollectionId": "people"}})
    assert api.rek.describe_stream_processor(Name=name)["Settings"]["FaceSearch"]["FaceMatchThreshold"] == 80.0
    create(api, f"{name}-low", Settings={"FaceSearch": {"CollectionId": "people", "FaceMatchThreshold": 12}})
    got = api.rek.describe_stream_processor(Name=f"{name}-low")
    assert got["Settings"]["FaceSearch"]["FaceMatchThreshold"] == 80.0
    api.rek.delete_stream_processor(Name=f"{name}-low")


def test_a_taken_name_is_resource_in_use(api, name):
    create(api, name)
    code, message = api.error(create, api=api, name=name)
    assert code == "ResourceInUseException" and name in message


IPE, VE = "InvalidParameterException", "ValidationException"
BOX = {"BoundingBox": {"Left": 0, "Top": 0, "Width": 0.5, "Height": 0.5}}


def face_search(**kw) -> dict:
    return {"Settings": {"FaceSearch": {"CollectionId": "people", **kw}}}


REFUSED = [
    (face_search(CollectionId="nobody"), IPE, "The collection id: nobody does not exist"),
    (face_search(FaceMatchThreshold=100.5), VE, "faceMatchThreshold"),
    ({"Settings": {"ConnectedHome": {"Labels": ["PERSON"]}}}, IPE, "ConnectedHome"),
    ({"Settings": face_search()["Settings"] | {"ConnectedHome": {"Labels": ["PET"]}}}, IPE, "ConnectedHome"),
    ({"Settings": {}}, IPE, "FaceSearch"),
    ({"Settings": {"FaceSearch": {}}}, IPE, "CollectionId"),
    ({"Input": {}}, IPE, "KinesisVideoStream"),
    ({"Input": {"KinesisVideoStream": {"Arn": KVS.replace("front-door", "front door")}}}, IPE, "KinesisVideoStream"),
    ({"Input": {"KinesisVideoStream": {"Arn": KDS}}}, VE, "kinesisVideoStream"),
    ({"Output": {"KinesisDataStream": {"Arn": KVS}}}, VE, "kinesisDataStream"),
    ({"Output": {"KinesisDataStream": {"Arn": KDS.replace(":stream/", ":deliverystream/")}}}, IPE, "KinesisData"),
    ({"Output": {"S3Destination": {"Bucket": "results"}}}, IPE, "S3Destination"),
    ({"Output": {}}, IPE, "KinesisDataStream"),
    ({"RoleArn": "arn:aws:iam::123:role/short-account"}, VE, "roleArn"),
    ({"NotificationChannel": {"SNSTopicArn": TOPIC + "/bad"}}, IPE, "SNSTopicArn"),
    ({"RegionsOfInterest": [BOX]}, IPE, "RegionsOfInterest"),
    ({"KmsKeyId": "alias/streams"}, IPE, "KmsKeyId"),
    ({"Name": "bad name!"}, VE, "name"),
    ({"Tags": {f"k{i}": "v" for i in range(51)}}, "ServiceQuotaExceededException", "50"),
]


@pytest.mark.parametrize(("overrides", "code", "words"), REFUSED)
def test_create_refuses_what_rekognition_refuses(api, name, overrides, code, words):
    got_code, message = api.error(create, api=api, name=name, **overrides)
    assert (got_code, words in message) == (code, True), message
    assert api.ctx.storage.streams.get(overrides.get("Name", name)) is None  # nothing stored


def test_the_guides_example_arn_without_creation_time_is_accepted(api, name):
    # The developer guide's CreateStreamProcessor example names its input ".../stream/inputVideo".
    arn = KVS.rsplit("/", 1)[0]
    create(api, name, Input={"KinesisVideoStream": {"Arn": arn}})
    assert api.rek.describe_stream_processor(Name=name)["Input"]["KinesisVideoStream"]["Arn"] == arn


def test_empty_regions_of_interest_are_no_regions(api, name):
    create(api, name, RegionsOfInterest=[])
    assert api.rek.describe_stream_processor(Name=name)["Status"] == "STOPPED"


def test_the_deployment_limit_is_limit_exceeded(api, name):
    names = [f"{name}-{i}" for i in range(7)]
    try:
        made = []
        for n in names:
            try:
                create(api, n)
                made.append(n)
            except ClientError as e:
                assert e.response["Error"]["Code"] == "LimitExceededException", e.response
                assert "6 stream processors" in e.response["Error"]["Message"]
                break
        else:
            raise AssertionError("the limit of 6 was never reached")
        assert 0 < len(made) <= 6
        api.rek.delete_stream_processor(Name=made[0])  # frees a slot
        create(api, made[0])
    finally:
        for n in names:
            with contextlib.suppress(ClientError):
                api.rek.delete_stream_processor(Name=n)


def test_unknown_processor_is_resource_not_found(api):
    for call in (
        api.rek.describe_stream_processor,
        api.rek.start_stream_processor,
        api.rek.stop_stream_processor,
        api.rek.delete_stream_processor,
        api.rek.update_stream_processor,
    ):
        code, message = api.error(call, Name="never-created")
        assert (code, "never-created" in message) == ("ResourceNotFoundException", True)
    arn = f"arn:aws:rekognition:us-east-1:{ACCOUNT}:streamprocessor/never-created"
    assert api.error(api.rek.list_tags_for_resource, ResourceArn=arn)[0] == "ResourceNotFoundException"
    assert api.error(api.rek.tag_resource, ResourceArn=arn, Tags={"a": "b"})[0] == "ResourceNotFoundException"


def test_list_pages_in_name_order(api, name):
    names = [f"{name}-{c}" for c in "cab"]
    for n in names:
        create(api, n)
    try:
        mine, token, pages = [], None, 0
        while True:
            page = api.rek.list_stream_processors(MaxResults=1, **({"NextToken": token} if token else {}))
            mine += [p for p in page["StreamProcessors"] if p["Name"].startswith(name)]
            pages += 1
            token = page.get("NextToken")
            if not token:
                break
        assert mine == [{"Name": n, "Status": "STOPPED"} for n in sorted(names)]
        assert pages >= 3
        everything = api.rek.list_stream_processors()["StreamProcessors"]
        assert [p["Name"] for p in everything] == sorted(p["Name"] for p in everything)
        code = api.error(api.rek.list_stream_processors, NextToken="garbage")[0]
        assert code == "InvalidPaginationTokenException"
    finally:
        for n in names:
            api.rek.delete_stream_processor(Name=n)


# --- Start / Stop: the lifecycle, with the runtime's part played through the store


def test_lifecycle(api, name):
    streams = api.ctx.storage.streams
    create(api, name)
    code, _ = api.error(api.rek.stop_stream_processor, Name=name)
    assert code == "ResourceInUseException"  # STOPPED: nothing to stop

    first = api.rek.start_stream_processor(Name=name)["SessionId"]
    assert api.runtime.started[-1] == name
    assert api.rek.describe_stream_processor(Name=name)["Status"] == "STARTING"
    code, message = api.error(api.rek.start_stream_processor, Name=name)
    assert code == "ResourceInUseException" and "STARTING" in message
    assert api.error(api.rek.delete_stream_processor, Name=name)[0] == "ResourceInUseException"
    assert api.error(api.rek.update_stream_processor, Name=name)[0] == "ResourceInUseException"

    session = streams.get(name).session
    assert streams.transition(name, ("STARTING",), "RUNNING", session=session)  # the runtime: input open
    assert [p for p in api.rek.list_stream_processors()["StreamProcessors"] if p["Name"] == name] == [
        {"Name": name, "Status": "RUNNING"}
    ]
    assert api.error(api.rek.start_stream_processor, Name=name)[0] == "ResourceInUseException"
    api.rek.stop_stream_processor(Name=name)
    assert api.rek.describe_stream_processor(Name=name)["Status"] == "STOPPING"
    assert api.error(api.rek.stop_stream_processor, Name=name)[0] == "ResourceInUseException"
    assert streams.transition(name, ("STOPPING",), "STOPPED", session=session)  # the runtime: stopped

    second = api.rek.start_stream_processor(Name=name)["SessionId"]
    assert second != first  # one SessionId per Start
    assert not streams.put_checkpoint(name, session, {"fragment": "1"})  # the old session's lease is gone
    streams.transition(name, ("STARTING",), "FAILED", "The input stream disappeared", session=session + 1)
    got = api.rek.describe_stream_processor(Name=name)
    assert (got["Status"], got["StatusMessage"]) == ("FAILED", "The input stream disappeared")
    assert got["LastUpdateTimestamp"] > got["CreationTimestamp"]
    api.rek.start_stream_processor(Name=name)  # FAILED can start again; the message is cleared
    assert "StatusMessage" not in api.rek.describe_stream_processor(Name=name)
    api.rek.stop_stream_processor(Name=name)  # STARTING can be stopped
    streams.transition(name, ("STOPPING",), "STOPPED")
    api.rek.delete_stream_processor(Name=name)
    assert api.error(api.rek.describe_stream_processor, Name=name)[0] == "ResourceNotFoundException"
    create(api, name)  # the name is free again


def test_start_stores_the_selectors_for_the_runtime(api, name):
    create(api, name)
    api.rek.start_stream_processor(
        Name=name,
        StartSelector={"KVSStreamStartSelector": {"FragmentNumber": "91343852333181432392682062607743920146"}},
        StopSelector={"MaxDurationInSeconds": 30},
    )
    rec = api.ctx.storage.streams.get(name)
    assert rec.start_selector == {
        "KVSStreamStartSelector": {"FragmentNumber": "91343852333181432392682062607743920146"}
    }
    assert rec.stop_selector == {"MaxDurationInSeconds": 30}
    api.rek.stop_stream_processor(Name=name)
    api.ctx.storage.streams.transition(name, ("STOPPING",), "STOPPED")
    api.rek.start_stream_processor(Name=name)  # a Start without selectors clears the last ones
    rec = api.ctx.storage.streams.get(name)
    assert (rec.start_selector, rec.stop_selector) == (None, None)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"StartSelector": {"KVSStreamStartSelector": {"ProducerTimestamp": 1, "FragmentNumber": "1"}}}, IPE),
        ({"StopSelector": {"MaxDurationInSeconds": 121}}, VE),
        ({"StartSelector": {"KVSStreamStartSelector": {"FragmentNumber": "12a"}}}, VE),
    ],
)
def test_start_refuses_bad_selectors(api, name, kwargs, code):
    create(api, name)
    assert api.error(api.rek.start_stream_processor, Name=name, **kwargs)[0] == code
    assert api.rek.describe_stream_processor(Name=name)["Status"] == "STOPPED"


def test_start_after_the_collection_was_deleted_is_resource_not_found(api, name):
    api.rek.create_collection(CollectionId=f"{name}-c")
    create(api, name, Settings={"FaceSearch": {"CollectionId": f"{name}-c"}})
    api.rek.delete_collection(CollectionId=f"{name}-c")
    code, message = api.error(api.rek.start_stream_processor, Name=name)
    assert (code, f"{name}-c" in message) == ("ResourceNotFoundException", True)
    assert api.rek.describe_stream_processor(Name=name)["Status"] == "STOPPED"


def test_a_runtime_that_cannot_take_it_leaves_it_failed_with_why(api, name):
    create(api, name)
    api.runtime.fail = RuntimeError("the consumer function could not be invoked")
    try:
        code, message = api.error(api.rek.start_stream_processor, Name=name)
    finally:
        api.runtime.fail = None
    assert code == "ThrottlingException" and "could not be invoked" in message
    got = api.rek.describe_stream_processor(Name=name)
    assert got["Status"] == "FAILED" and "could not be invoked" in got["StatusMessage"]

    api.runtime.fail = InvalidParameterException("no source for Kinesis video stream front-door")
    try:
        code, message = api.error(api.rek.start_stream_processor, Name=name)  # a FAILED one starts again
    finally:
        api.runtime.fail = None
    assert (code, message) == ("InvalidParameterException", "no source for Kinesis video stream front-door")
    got = api.rek.describe_stream_processor(Name=name)
    assert (got["Status"], got["StatusMessage"]) == (
        "FAILED",
        "The stream processor could not be started: no source for Kinesis video stream front-door",
    )
    api.rek.start_stream_processor(Name=name)
    assert api.rek.describe_stream_processor(Name=name)["Status"] == "STARTING"


def test_racing_starts_start_once(api, name):
    create(api, name)
    barrier, answers = threading.Barrier(6), []

    def start() -> None:
        barrier.wait()
        try:
            answers.append(api.rek.start_stream_processor(Name=name)["SessionId"])
        except ClientError as e:
            answers.append(e.response["Error"]["Code"])

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers, key=len)[:-1] == ["ResourceInUseException"] * 5
    assert api.runtime.started.count(name) == 1


# --- Update, Delete, tags


def test_update_sets_data_sharing_and_refuses_label_detection_settings(api, name):
    create(api, name)
    api.rek.update_stream_processor(Name=name, DataSharingPreferenceForUpdate={"OptIn": True})
    assert api.rek.describe_stream_processor(Name=name)["DataSharingPreference"] == {"OptIn": True}
    api.rek.update_stream_processor(Name=name, ParametersToDelete=["RegionsOfInterest"])  # it has none
    refused = [
        {"SettingsForUpdate": {"ConnectedHomeForUpdate": {"Labels": ["PET"]}}},
        {"RegionsOfInterestForUpdate": [{"BoundingBox": {"Left": 0, "Top": 0, "Width": 1, "Height": 1}}]},
        {"ParametersToDelete": ["ConnectedHomeMinConfidence"]},
    ]
    for kwargs in refused:
        code, message = api.error(api.rek.update_stream_processor, Name=name, **kwargs)
        assert code == "InvalidParameterException" and "label detection" in message
    assert api.error(api.rek.update_stream_processor, Name=name, ParametersToDelete=["Other"])[0] == (
        "ValidationException"
    )


def test_tags_on_a_stream_processor(api, name):
    arn = create(api, name, Tags={"a": "1"})["StreamProcessorArn"]
    api.rek.tag_resource(ResourceArn=arn, Tags={"b": "2", "a": "3"})
    assert api.rek.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"a": "3", "b": "2"}
    api.rek.untag_resource(ResourceArn=arn, TagKeys=["a", "missing"])
    assert api.rek.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"b": "2"}
    api.rek.start_stream_processor(Name=name)
    api.rek.tag_resource(ResourceArn=arn, Tags={"while": "starting"})  # tags do not move the status
    rec = api.ctx.storage.streams.get(name)
    assert (rec.status, rec.tags) == ("STARTING", {"b": "2", "while": "starting"})
    many = {f"k{i}": "v" for i in range(49)}
    assert api.error(api.rek.tag_resource, ResourceArn=arn, Tags=many)[0] == "ServiceQuotaExceededException"
    other_account = arn.replace(ACCOUNT, "999999999999")
    assert api.error(api.rek.list_tags_for_resource, ResourceArn=other_account)[0] == "ResourceNotFoundException"
    collection_arn = f"arn:aws:rekognition:us-east-1:{ACCOUNT}:collection/people"
    assert api.rek.list_tags_for_resource(ResourceArn=collection_arn)["Tags"] == {}  # collections still work
