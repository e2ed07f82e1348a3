"""S3-event indexing and compaction, with the real handlers (functions/ingest.py, functions/compact.py)
against moto: SQS events carrying S3 notifications in, faces in the collection out.

S3 delivers at least once and in no particular order; events for one key carry increasing
``sequencer`` values. The events here are built in S3's format with such sequencers (moto's own
notifications all carry one fixed sequencer, so they are used only for the plumbing test).
"""

from __future__ import annotations

import itertools
import json
import uuid

import pytest
from support import image_bytes
from test_aws_handlers import INGEST_BUCKET, REGION, aws, check_calls_allowed  # noqa: F401 (fixture)

from facebank.operations import OPERATIONS

TWO_PEOPLE = "groups/face_recognition_two_people.jpg"
ONE_FACE = "dev/albert_costa/1.jpg"
_seq = itertools.count(0x0055AED6DCD90281)


def s3_record(event: str, key: str, bucket: str = INGEST_BUCKET) -> dict:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": REGION,
        "eventName": event,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key, "size": 1, "sequencer": f"{next(_seq):018X}"},
        },
    }


def sqs_event(*bodies: dict) -> dict:
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "handle",
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:000000000000:ingest",
                "awsRegion": REGION,
            }
            for body in bodies
        ]
    }


def notification(*records: dict) -> dict:
    return {"Records": list(records)}


@pytest.fixture
def env(aws):  # noqa: F811 (the fixture imported above)
    """A fresh collection, an S3 client, and helpers that run the handlers as their functions."""
    import functions.compact
    import functions.ingest
    from facebank.aws.runtime import LocalContext

    collection = f"ingest-{uuid.uuid4().hex[:8]}"
    s3 = aws.session.client("s3")
    rek = aws.client()
    rek.create_collection(CollectionId=collection)
    aws.recorder.take()

    class Env:
        pass

    e = Env()
    e.collection, e.s3, e.rek, e.aws = collection, s3, rek, aws
    e.ingest = lambda event: aws.as_function("Ingest", functions.ingest.handler, event, LocalContext())
    e.compact = lambda: aws.as_function("Compaction", functions.compact.handler, {}, LocalContext())
    e.faces = lambda: rek.list_faces(CollectionId=collection, MaxResults=4096)["Faces"]
    yield e
    rek.delete_collection(CollectionId=collection)
    check_calls_allowed(aws.recorder.take())  # every S3/DynamoDB call of Ingest/Compaction is granted


def put(env, key: str, data: bytes) -> dict:
    env.s3.put_object(Bucket=INGEST_BUCKET, Key=key, Body=data)
    return s3_record("ObjectCreated:Put", key)


def delete(env, key: str) -> dict:
    env.s3.delete_object(Bucket=INGEST_BUCKET, Key=key)
    return s3_record("ObjectRemoved:Delete", key)


def test_created_object_is_indexed_once_even_when_redelivered(env):
    key = f"{env.collection}/group-photo.jpg"
    created = put(env, key, image_bytes(TWO_PEOPLE))
    assert env.ingest(sqs_event(notification(created))) == {"batchItemFailures": []}
    faces = env.faces()
    assert len(faces) == 2 and {f["ExternalImageId"] for f in faces} == {"group-photo"}
    # at-least-once delivery: the same event again, and a duplicate notification of the same put
    redelivered = {**created["s3"]["object"], "sequencer": f"{next(_seq):018X}"}
    again = dict(created, s3={**created["s3"], "object": redelivered})
    assert env.ingest(sqs_event(notification(created), notification(again))) == {"batchItemFailures": []}
    assert sorted(f["FaceId"] for f in env.faces()) == sorted(f["FaceId"] for f in faces)
    assert env.rek.describe_collection(CollectionId=env.collection)["FaceCount"] == 2


def test_removed_object_deletes_its_faces(env):
    key = f"{env.collection}/someone.png"
    env.ingest(sqs_event(notification(put(env, key, image_bytes(ONE_FACE)))))
    assert len(env.faces()) == 1
    env.ingest(sqs_event(notification(delete(env, key))))
    assert env.faces() == []


def test_late_created_event_after_removal_is_ignored(env):
    key = f"{env.collection}/late.jpg"
    created = put(env, key, image_bytes(ONE_FACE))
    removed = delete(env, key)
    env.ingest(sqs_event(notification(removed)))  # S3 delivered the removal first
    env.ingest(sqs_event(notification(created)))
    assert env.faces() == []


def test_overwrite_replaces_the_previous_image_faces(env):
    key = f"{env.collection}/person.jpg"
    env.ingest(sqs_event(notification(put(env, key, image_bytes(TWO_PEOPLE)))))
    before = {f["FaceId"] for f in env.faces()}
    env.ingest(sqs_event(notification(put(env, key, image_bytes(ONE_FACE)))))
    after = env.faces()
    assert len(after) == 1 and not ({f["FaceId"] for f in after} & before)


def test_overwrite_with_a_file_that_is_no_image_removes_the_old_faces_and_is_not_retried(env):
    key = f"{env.collection}/person.jpg"
    env.ingest(sqs_event(notification(put(env, key, image_bytes(TWO_PEOPLE)))))
    assert len(env.faces()) == 2
    result = env.ingest(sqs_event(notification(put(env, key, b"not an image at all"))))
    assert result == {"batchItemFailures": []} and env.faces() == []


def test_a_transient_s3_failure_is_retried_not_taken_for_a_deleted_object(env, monkeypatch):
    from botocore.exceptions import ClientError

    from facebank.aws.runtime import shared_context

    record = put(env, f"{env.collection}/photo.jpg", image_bytes(TWO_PEOPLE))
    event = sqs_event(notification(record))

    def slow_down(**_):
        error = {"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}
        raise ClientError({**error, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject")

    with monkeypatch.context() as patched:
        patched.setattr(shared_context().s3, "get_object", slow_down)
        result = env.ingest(event)
    assert result == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert env.faces() == []
    assert env.ingest(event) == {"batchItemFailures": []}  # SQS delivers it again
    assert len(env.faces()) == 2


def test_removal_of_an_object_the_ledger_never_saw_deletes_nothing(env):
    """Faces come off only by the ids the ledger recorded: none for an object it never indexed,
    even where faces carry the object's ExternalImageId (no search of the collection)."""
    key = f"{env.collection}/never-seen.jpg"
    image = {"Bytes": image_bytes(ONE_FACE)}
    env.rek.index_faces(CollectionId=env.collection, ExternalImageId="never-seen", Image=image)
    env.aws.recorder.take()  # that was an API call, checked elsewhere
    removed = s3_record("ObjectRemoved:Delete", key)
    assert env.ingest(sqs_event(notification(removed))) == {"batchItemFailures": []}
    assert [f["ExternalImageId"] for f in env.faces()] == ["never-seen"]


def test_partial_batch_failure_reports_only_the_failed_message(env):
    good = put(env, f"{env.collection}/good.jpg", image_bytes(ONE_FACE))
    missing = put(env, "no-such-collection/someone.jpg", image_bytes(ONE_FACE))
    not_ours = put(env, "loose-file.jpg", image_bytes(ONE_FACE))  # no collection folder: skipped
    foreign = s3_record("ObjectCreated:Put", f"{env.collection}/x.jpg", bucket="someone-elses-bucket")
    event = sqs_event(
        notification(good),
        notification(missing),
        notification(not_ours),
        notification(foreign),
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": INGEST_BUCKET},
    )
    result = env.ingest(event)
    assert result == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
    assert [f["ExternalImageId"] for f in env.faces()] == ["good"]


def test_url_encoded_keys_are_decoded(env):
    key = f"{env.collection}/with:colon.jpg"
    record = put(env, key, image_bytes(ONE_FACE))
    record["s3"]["object"]["key"] = key.replace(":", "%3A")  # S3 URL-encodes keys in events
    env.ingest(sqs_event(notification(record)))
    assert [f["ExternalImageId"] for f in env.faces()] == ["with:colon"]


def test_moto_s3_notification_to_sqs_reaches_the_handler(env):
    """The plumbing with S3's own message format: bucket notification -> SQS -> handler."""
    sqs = env.aws.session.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"ingest-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    env.s3.put_bucket_notification_configuration(
        Bucket=INGEST_BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".jpg"}]}},
                }
            ]
        },
    )
    try:
        env.s3.put_object(Bucket=INGEST_BUCKET, Key=f"{env.collection}/from-s3.jpg", Body=image_bytes(ONE_FACE))
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": {},
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": REGION,
                }
                for m in messages
            ]
        }
        assert env.ingest(event) == {"batchItemFailures": []}
    finally:
        env.s3.put_bucket_notification_configuration(Bucket=INGEST_BUCKET, NotificationConfiguration={})
    assert [f["ExternalImageId"] for f in env.faces()] == ["from-s3"]


def test_compaction_merges_segments_and_search_still_finds_faces(env, monkeypatch):
    import dataclasses

    from facebank.aws.runtime import shared_context

    ctx = shared_context()
    monkeypatch.setattr(ctx, "settings", dataclasses.replace(ctx.settings, compact_min_age_s=0))
    for i in range(3):  # three IndexFaces calls: three segments
        env.rek.index_faces(
            CollectionId=env.collection,
            ExternalImageId=f"img{i}",
            Image={"Bytes": image_bytes(f"dev/albert_costa/{i + 1}.jpg")},
        )
    faces = sorted(f["FaceId"] for f in env.faces())
    users = "CreateUser" in OPERATIONS
    if users:  # two user vectors written, the first superseded by the second
        env.rek.create_user(CollectionId=env.collection, UserId="albert")
        env.rek.associate_faces(CollectionId=env.collection, UserId="albert", FaceIds=faces[1:2])
        # Threshold 0: this test is about compaction, not about whether two photos match well enough
        # (face ids, and so which photos pair up here, differ from run to run).
        second = env.rek.associate_faces(
            CollectionId=env.collection, UserId="albert", FaceIds=faces[2:3], UserMatchThreshold=0
        )
        assert [f["FaceId"] for f in second["AssociatedFaces"]] == faces[2:3]
    env.rek.delete_faces(CollectionId=env.collection, FaceIds=[faces[0]])
    vectors = shared_context().index.vectors
    assert len(vectors.list_segments(env.collection)) == 3
    env.aws.recorder.take()
    result = env.compact()
    assert result["compacted"] >= 1 and result["segmentsMerged"] >= (5 if users else 3) and result["failed"] == 0
    assert result["vectorsDropped"] >= (2 if users else 1)  # the deleted face, the superseded user vector
    assert len(vectors.list_segments(env.collection)) == 1
    matches = env.rek.search_faces_by_image(
        CollectionId=env.collection, Image={"Bytes": image_bytes(ONE_FACE)}, FaceMatchThreshold=0
    )["FaceMatches"]
    assert {m["Face"]["FaceId"] for m in matches} == set(faces[1:])
    if users:
        found = env.rek.search_users(CollectionId=env.collection, UserId="albert", UserMatchThreshold=0)
        assert found["SearchedUser"]["UserId"] == "albert"
        assert len(vectors.user_vectors().list_segments(env.collection)) == 1


def test_registry_is_reused_not_duplicated():
    """The ingest path runs the registry's IndexFaces/DeleteFaces, nothing of its own, and takes
    its settings and ledger from the shared Context, not the environment."""
    import inspect

    from facebank.aws import ingest

    source = inspect.getsource(ingest)
    assert "engine" not in source and "metadata" not in source and "VectorIndex" not in source
    assert "environ" not in source and "boto3" not in source
    for op in ("IndexFaces", "DeleteFaces"):
        assert op in OPERATIONS and f'"{op}"' in source
