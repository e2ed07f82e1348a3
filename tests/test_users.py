"""Users through boto3 (issue 5): CreateUser, DeleteUser, ListUsers, AssociateFaces,
DisassociateFaces, SearchUsers, SearchUsersByImage.

Behaviour tests run twice with an unmodified boto3 client: against `facebank serve` (embedded
storage: SQLite + segment files) and in-process on the AWS adapter (DynamoDB + S3 under moto), the
client's requests going straight into the wire protocol's dispatch. Every successful response body
is checked against botocore's output shape of its operation (``support.check_responses``).
"""

from __future__ import annotations

import dataclasses
import io
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import boto3
import numpy as np
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from PIL import Image, ImageFilter
from support import MODEL, check_responses, check_shape, ctx_over, dev_people, encode, image_bytes, serialised_moto

from facebank.storage.files import collection_dir

COUPLE = "groups/face_recognition_kit_with_rose.jpg"  # two faces
CROWD = "groups/retinaface_img3_crowd.jpg"  # 85 faces, most small
PORTRAIT = "exif_orientation/pillow_hopper.jpg"


# --- response shapes (every successful response of these clients is checked: support.check_responses)


def test_shape_checker_catches_what_botocore_drops():
    shape = MODEL.operation_model("AssociateFaces").output_shape
    check_shape(shape, {"AssociatedFaces": [], "UnsuccessfulFaceAssociations": [], "UserStatus": "ACTIVE"})
    for bad in (
        {"UserStatus": "DONE"},
        {"Extra": 1},
        {"UnsuccessfulFaceAssociations": [{"FaceId": "x", "Reasons": ["FACE_NOT_FOUND"]}]},
        {"UnsuccessfulFaceAssociations": [{"Confidence": 120.0}]},
    ):
        with pytest.raises(AssertionError):
            check_shape(shape, bad)


# --- clients: `facebank serve`, and in-process on DynamoDB + S3


class _Body(io.BytesIO):
    def stream(self, **_):
        while chunk := self.read(1 << 16):
            yield chunk


def inprocess_client(ctx):
    """A boto3 client whose requests are answered by facebank.protocol.dispatch on `ctx`."""
    from facebank.protocol import dispatch, operation_name

    client = boto3.client(
        "rekognition",
        endpoint_url="http://facebank.invalid",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 1}),  # a 500 is the answer under test, not a blip
    )

    def send(request, **_):
        target = request.headers["X-Amz-Target"]
        target = target.decode() if isinstance(target, bytes) else target
        response = dispatch(operation_name(target, "/"), request.body, ctx)
        return AWSResponse(request.url, response.status, response.headers, _Body(response.body))

    client.meta.events.register("before-send.rekognition", send)
    check_responses(client)
    return client


@contextmanager
def aws_context(metadata_wrapper=None):
    """A Context on DynamoDB + S3 under moto, fresh tables and bucket. moto's backends are not
    thread-safe, so its request dispatch is serialised (real DynamoDB/S3 apply each request
    atomically); clients still interleave requests, conditional failures and retries."""
    from moto import mock_aws

    from facebank.storage import open_aws
    from facebank.storage.dynamodb import TableNames, create_tables

    with pytest.MonkeyPatch.context() as mp:
        serialised_moto(mp)
        with mock_aws():
            session = boto3.session.Session(region_name="us-east-1")
            dynamodb, s3 = session.client("dynamodb"), session.client("s3")
            s3.create_bucket(Bucket="facebank-users-test")
            create_tables(dynamodb, TableNames.with_prefix("u-"))
            storage = open_aws(bucket="facebank-users-test", table_prefix="u-", dynamodb=dynamodb, s3=s3)
            if metadata_wrapper is not None:
                storage = dataclasses.replace(storage, metadata=metadata_wrapper(storage.metadata))
            yield ctx_over(storage)


@contextmanager
def embedded_context(tmp_path, metadata_wrapper=None):
    from facebank.storage import open_embedded

    storage = open_embedded(tmp_path / "data")
    metadata = storage.metadata
    try:
        if metadata_wrapper is not None:
            storage = dataclasses.replace(storage, metadata=metadata_wrapper(metadata))
        yield ctx_over(storage)
    finally:
        metadata.close()


@pytest.fixture(scope="module")
def served(server):
    return server.client()  # checks every response's shape (support.check_responses)


@pytest.fixture(params=["serve", "aws"])
def rek(request, model_env):
    """boto3 against `facebank serve` (embedded storage), or in-process on DynamoDB + S3."""
    if request.param == "serve":
        yield request.getfixturevalue("served")
        return
    with aws_context() as ctx:
        yield inprocess_client(ctx)


@pytest.fixture(params=["embedded", "aws"])
def harness(request, model_env, tmp_path):
    """(client, ctx) in-process, on either adapter, for tests that reach into storage."""

    @contextmanager
    def make(metadata_wrapper=None):
        if request.param == "aws":
            with aws_context(metadata_wrapper) as ctx:
                yield inprocess_client(ctx), ctx
        else:
            with embedded_context(tmp_path, metadata_wrapper) as ctx:
                yield inprocess_client(ctx), ctx

    return make


# --- helpers


def _error(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def _new_collection(rek) -> str:
    collection_id = f"u-{uuid.uuid4().hex[:12]}"
    rek.create_collection(CollectionId=collection_id)
    return collection_id


def _index(rek, collection_id: str, path: str) -> str:
    """Index the largest face of an image; its FaceId."""
    records = rek.index_faces(
        CollectionId=collection_id,
        Image={"Bytes": image_bytes(path)},
        ExternalImageId=path.replace("/", "_"),
        MaxFaces=1,
        QualityFilter="NONE",
    )["FaceRecords"]
    assert len(records) == 1, path
    return records[0]["Face"]["FaceId"]


def _two_people(rek, collection_id: str) -> dict[str, list[str]]:
    """Face ids of four photos of one person ("a") and two of another ("b")."""
    people = dev_people()
    a, b = [n for n, paths in people.items() if len(paths) >= 6][:2]
    return {
        "a": [_index(rek, collection_id, p) for p in people[a][:4]],
        "b": [_index(rek, collection_id, p) for p in people[b][:2]],
        "a_probe": people[a][4],
        "b_probe": people[b][2],
    }


def _user_faces(rek, collection_id: str, user_id: str) -> set[str]:
    pages = rek.get_paginator("list_faces").paginate(CollectionId=collection_id, UserId=user_id)
    faces = [f for p in pages for f in p["Faces"]]
    assert all(f["UserId"] == user_id for f in faces)
    return {f["FaceId"] for f in faces}


def _users(rek, collection_id: str) -> dict[str, str]:
    pages = rek.get_paginator("list_users").paginate(CollectionId=collection_id)
    return {u["UserId"]: u["UserStatus"] for p in pages for u in p["Users"]}


def _user_count(rek, collection_id: str) -> int:
    return rek.describe_collection(CollectionId=collection_id)["UserCount"]


def _blurred(data: bytes, radius: float) -> bytes:
    return encode(Image.open(io.BytesIO(data)).convert("RGB").filter(ImageFilter.GaussianBlur(radius)), "JPEG")


# --- CreateUser, DeleteUser, ListUsers


def test_create_and_delete_user_are_idempotent_by_token(rek):
    collection_id = _new_collection(rek)
    rek.create_user(CollectionId=collection_id, UserId="auto")  # boto3 fills ClientRequestToken
    with pytest.raises(rek.exceptions.ConflictException):
        rek.create_user(CollectionId=collection_id, UserId="auto")  # a new request: another token
    # The same token and parameters: a retry, success and no change.
    rek.create_user(CollectionId=collection_id, UserId="user:1", ClientRequestToken="create-1")
    rek.create_user(CollectionId=collection_id, UserId="user:1", ClientRequestToken="create-1")
    with pytest.raises(rek.exceptions.ConflictException):
        rek.create_user(CollectionId=collection_id, UserId="user:1", ClientRequestToken="create-2")
    assert _user_count(rek, collection_id) == 2
    assert _users(rek, collection_id) == {"auto": "CREATED", "user:1": "CREATED"}

    rek.delete_user(CollectionId=collection_id, UserId="user:1", ClientRequestToken="delete-1")
    rek.delete_user(CollectionId=collection_id, UserId="user:1", ClientRequestToken="delete-1")  # retry
    assert _user_count(rek, collection_id) == 1
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.delete_user(CollectionId=collection_id, UserId="user:1", ClientRequestToken="delete-2")
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.delete_user(CollectionId=collection_id, UserId="never-was")
    # A late retry of the delete changes nothing, even after the id was created again.
    rek.create_user(CollectionId=collection_id, UserId="user:1")
    rek.delete_user(CollectionId=collection_id, UserId="user:1", ClientRequestToken="delete-1")
    assert _users(rek, collection_id) == {"auto": "CREATED", "user:1": "CREATED"}

    for call in (rek.create_user, rek.delete_user):
        with pytest.raises(rek.exceptions.ResourceNotFoundException):
            call(CollectionId="no-such-collection", UserId="u")
    with pytest.raises(rek.exceptions.ClientError) as excinfo:
        rek.create_user(CollectionId=collection_id, UserId="no spaces")
    assert _error(excinfo) == "ValidationException"


def test_list_users_paginates(rek):
    collection_id = _new_collection(rek)
    ids = [f"user-{i}" for i in range(5)]
    for user_id in ids:
        rek.create_user(CollectionId=collection_id, UserId=user_id)
    seen, token, pages = [], None, 0
    while True:
        page = rek.list_users(CollectionId=collection_id, MaxResults=2, **({"NextToken": token} if token else {}))
        assert len(page["Users"]) <= 2
        seen += [u["UserId"] for u in page["Users"]]
        pages += 1
        if not (token := page.get("NextToken")):
            break
    assert seen == ids and pages == 3
    assert list(_users(rek, collection_id)) == ids
    with pytest.raises(rek.exceptions.InvalidPaginationTokenException):
        rek.list_users(CollectionId=collection_id, NextToken="not-a-token")
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.list_users(CollectionId="no-such-collection")


# --- AssociateFaces, DisassociateFaces, DeleteUser


def test_associate_faces_and_every_reason(rek):
    collection_id = _new_collection(rek)
    faces = _two_people(rek, collection_id)
    a, b = faces["a"], faces["b"]
    rek.create_user(CollectionId=collection_id, UserId="a")
    rek.create_user(CollectionId=collection_id, UserId="b")

    # An empty user takes its first faces without a match check.
    first = rek.associate_faces(CollectionId=collection_id, UserId="a", FaceIds=a[:2])
    assert sorted(f["FaceId"] for f in first["AssociatedFaces"]) == sorted(a[:2])
    assert first["UnsuccessfulFaceAssociations"] == [] and first["UserStatus"] == "ACTIVE"
    assert _user_faces(rek, collection_id, "a") == set(a[:2])
    assert _users(rek, collection_id) == {"a": "ACTIVE", "b": "CREATED"}

    # Already this user's: ignored, reported nowhere.
    again = rek.associate_faces(CollectionId=collection_id, UserId="a", FaceIds=[a[0]])
    assert again["AssociatedFaces"] == [] and again["UnsuccessfulFaceAssociations"] == []

    # Another person's face does not match the user at the default UserMatchThreshold (75).
    low = rek.associate_faces(CollectionId=collection_id, UserId="a", FaceIds=[b[0]])
    assert low["AssociatedFaces"] == []
    [refused] = low["UnsuccessfulFaceAssociations"]
    assert refused["FaceId"] == b[0] and refused["Reasons"] == ["LOW_MATCH_CONFIDENCE"]
    assert refused["UserId"] == "a" and 0 <= refused["Confidence"] < 75

    rek.associate_faces(CollectionId=collection_id, UserId="b", FaceIds=[b[0]])
    missing = str(uuid.uuid4())
    mixed = rek.associate_faces(CollectionId=collection_id, UserId="a", FaceIds=[a[2], b[0], missing, a[2]])
    assert mixed["AssociatedFaces"] == [{"FaceId": a[2]}]  # its own photo matches at 75
    reasons = {u["FaceId"]: (u["Reasons"], u.get("UserId")) for u in mixed["UnsuccessfulFaceAssociations"]}
    assert reasons == {b[0]: (["ASSOCIATED_TO_A_DIFFERENT_USER"], "b"), missing: (["FACE_NOT_FOUND"], "a")}
    # A threshold of 0 takes any face.
    loose = rek.associate_faces(CollectionId=collection_id, UserId="b", FaceIds=[a[3]], UserMatchThreshold=0)
    assert loose["AssociatedFaces"] == [{"FaceId": a[3]}]

    # ListFaces' UserId filter and DescribeCollection's UserCount reflect the associations.
    assert _user_faces(rek, collection_id, "a") == set(a[:3])
    assert _user_faces(rek, collection_id, "b") == {b[0], a[3]}
    assert _user_count(rek, collection_id) == 2
    listed = {f["FaceId"]: f.get("UserId") for f in rek.list_faces(CollectionId=collection_id)["Faces"]}
    assert listed == {a[0]: "a", a[1]: "a", a[2]: "a", a[3]: "b", b[0]: "b", b[1]: None}

    # Faces of a user cannot be deleted.
    deleted = rek.delete_faces(CollectionId=collection_id, FaceIds=[a[0], b[1]])
    assert deleted["DeletedFaces"] == [b[1]]
    assert deleted["UnsuccessfulFaceDeletions"] == [
        {"FaceId": a[0], "UserId": "a", "Reasons": ["ASSOCIATED_TO_AN_EXISTING_USER"]}
    ]

    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.associate_faces(CollectionId=collection_id, UserId="nobody", FaceIds=[a[0]])
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.associate_faces(CollectionId="no-such-collection", UserId="a", FaceIds=[a[0]])
    with pytest.raises(rek.exceptions.ClientError) as excinfo:  # at most 100 FaceIds a call
        rek.associate_faces(CollectionId=collection_id, UserId="a", FaceIds=[str(uuid.uuid4()) for _ in range(101)])
    assert _error(excinfo) == "ValidationException"


def test_disassociate_faces_and_every_reason(rek):
    collection_id = _new_collection(rek)
    faces = _two_people(rek, collection_id)
    a, b = faces["a"], faces["b"]
    rek.create_user(CollectionId=collection_id, UserId="a")
    rek.create_user(CollectionId=collection_id, UserId="b")
    rek.associate_faces(CollectionId=collection_id, UserId="a", FaceIds=a[:3])
    rek.associate_faces(CollectionId=collection_id, UserId="b", FaceIds=b[:1])

    missing = str(uuid.uuid4())
    out = rek.disassociate_faces(CollectionId=collection_id, UserId="a", FaceIds=[a[0], b[0], missing, a[3], a[0]])
    assert out["DisassociatedFaces"] == [{"FaceId": a[0]}] and out["UserStatus"] == "ACTIVE"
    reasons = {u["FaceId"]: (u["Reasons"], u.get("UserId")) for u in out["UnsuccessfulFaceDisassociations"]}
    # a[3] exists but is in no user: "already disassociated ... ignored and not returned" (the model's doc)
    assert reasons == {b[0]: (["ASSOCIATED_TO_A_DIFFERENT_USER"], "b"), missing: (["FACE_NOT_FOUND"], "a")}
    retry = rek.disassociate_faces(CollectionId=collection_id, UserId="a", FaceIds=[a[0]])
    assert retry["DisassociatedFaces"] == [] and retry["UnsuccessfulFaceDisassociations"] == []
    assert _user_faces(rek, collection_id, "a") == set(a[1:3])
    assert rek.delete_faces(CollectionId=collection_id, FaceIds=[a[0]])["DeletedFaces"] == [a[0]]

    # The last face out: the user is back to CREATED (no faces), and matches nothing.
    last = rek.disassociate_faces(CollectionId=collection_id, UserId="a", FaceIds=a[1:3])
    assert last["UserStatus"] == "CREATED" and len(last["DisassociatedFaces"]) == 2
    assert _users(rek, collection_id) == {"a": "CREATED", "b": "ACTIVE"}
    probe = rek.search_users_by_image(
        CollectionId=collection_id, Image={"Bytes": image_bytes(faces["a_probe"])}, UserMatchThreshold=0
    )
    assert [m["User"]["UserId"] for m in probe["UserMatches"]] == ["b"]

    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.disassociate_faces(CollectionId=collection_id, UserId="nobody", FaceIds=[a[1]])
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.disassociate_faces(CollectionId="no-such-collection", UserId="a", FaceIds=[a[1]])


def test_client_request_tokens_repeat_the_answer_and_refuse_other_parameters(rek):
    """The model's doc: "If you use the same token with multiple <Op> requests, the same response is
    returned"; the same token with other parameters is IdempotentParameterMismatchException."""
    collection_id = _new_collection(rek)
    a = _two_people(rek, collection_id)["a"]

    def body(r):
        return {k: v for k, v in r.items() if k != "ResponseMetadata"}

    rek.create_user(CollectionId=collection_id, UserId="a", ClientRequestToken="create-a")
    with pytest.raises(rek.exceptions.IdempotentParameterMismatchException):
        rek.create_user(CollectionId=collection_id, UserId="b", ClientRequestToken="create-a")
    assert set(_users(rek, collection_id)) == {"a"}

    first = rek.associate_faces(CollectionId=collection_id, UserId="a", FaceIds=a[:2], ClientRequestToken="t1")
    assert len(first["AssociatedFaces"]) == 2
    assert body(
        rek.associate_faces(CollectionId=collection_id, UserId="a", FaceIds=a[:2], ClientRequestToken="t1")
    ) == body(first)
    with pytest.raises(rek.exceptions.IdempotentParameterMismatchException):
        rek.associate_faces(CollectionId=collection_id, UserId="a", FaceIds=a[2:3], ClientRequestToken="t1")
    assert _user_faces(rek, collection_id, "a") == set(a[:2])

    out = rek.disassociate_faces(CollectionId=collection_id, UserId="a", FaceIds=[a[0]], ClientRequestToken="t2")
    assert out["DisassociatedFaces"] == [{"FaceId": a[0]}]
    assert body(
        rek.disassociate_faces(CollectionId=collection_id, UserId="a", FaceIds=[a[0]], ClientRequestToken="t2")
    ) == body(out)
    assert _user_faces(rek, collection_id, "a") == {a[1]}

    # Two requests with one token and different parameters at once: one is refused, and changes nothing.
    outcomes = []

    def create(user_id: str) -> None:
        try:
            rek.create_user(CollectionId=collection_id, UserId=user_id, ClientRequestToken="race")
            outcomes.append(user_id)
        except rek.exceptions.IdempotentParameterMismatchException:
            pass

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(create, ["racer-1", "racer-2"]))
    assert len(outcomes) == 1 and set(_users(rek, collection_id)) == {"a", *outcomes}
    rek.delete_user(CollectionId=collection_id, UserId=outcomes[0])

    # A failed request frees its token (else the next one would be a parameter mismatch).
    with pytest.raises(rek.exceptions.ConflictException):
        rek.create_user(CollectionId=collection_id, UserId="a", ClientRequestToken="free")
    rek.create_user(CollectionId=collection_id, UserId="c", ClientRequestToken="free")
    rek.delete_user(CollectionId=collection_id, UserId="c")

    rek.delete_user(CollectionId=collection_id, UserId="a", ClientRequestToken="delete-a")
    with pytest.raises(rek.exceptions.IdempotentParameterMismatchException):
        rek.delete_user(CollectionId=collection_id, UserId="other", ClientRequestToken="delete-a")
    # The ledger is the collection's: it goes with it, and never shows up as a user.
    assert _users(rek, collection_id) == {}


def test_delete_user_disassociates_its_faces(rek):
    collection_id = _new_collection(rek)
    faces = _two_people(rek, collection_id)
    a = faces["a"]
    rek.create_user(CollectionId=collection_id, UserId="a")
    rek.associate_faces(CollectionId=collection_id, UserId="a", FaceIds=a[:2])
    probe = {"Bytes": image_bytes(faces["a_probe"])}
    assert rek.search_users_by_image(CollectionId=collection_id, Image=probe)["UserMatches"][0]["User"]["UserId"] == "a"

    rek.delete_user(CollectionId=collection_id, UserId="a")
    assert _user_count(rek, collection_id) == 0 and _users(rek, collection_id) == {}
    assert _user_faces(rek, collection_id, "a") == set()
    listed = rek.list_faces(CollectionId=collection_id, FaceIds=a[:2])["Faces"]
    assert len(listed) == 2 and all("UserId" not in f for f in listed)
    matches = rek.search_users_by_image(CollectionId=collection_id, Image=probe, UserMatchThreshold=0)["UserMatches"]
    assert matches == []
    # Free again: another user may take them, and a user of the same id starts empty.
    rek.create_user(CollectionId=collection_id, UserId="a")
    assert _users(rek, collection_id) == {"a": "CREATED"}
    assert rek.search_users_by_image(CollectionId=collection_id, Image=probe, UserMatchThreshold=0)["UserMatches"] == []
    rek.create_user(CollectionId=collection_id, UserId="other")
    taken = rek.associate_faces(CollectionId=collection_id, UserId="other", FaceIds=a[:2])
    assert len(taken["AssociatedFaces"]) == 2
    assert rek.delete_faces(CollectionId=collection_id, FaceIds=[a[2]])["DeletedFaces"] == [a[2]]


# --- SearchUsers, SearchUsersByImage


def test_search_users_by_face_and_by_user(rek):
    collection_id = _new_collection(rek)
    faces = _two_people(rek, collection_id)
    a, b = faces["a"], faces["b"]
    for user_id, face_ids in (("a", a[:2]), ("b", b[:1])):
        rek.create_user(CollectionId=collection_id, UserId=user_id)
        rek.associate_faces(CollectionId=collection_id, UserId=user_id, FaceIds=face_ids)
    rek.create_user(CollectionId=collection_id, UserId="empty")

    by_face = rek.search_users(CollectionId=collection_id, FaceId=a[2])  # a's photo, in no user
    assert by_face["SearchedFace"] == {"FaceId": a[2]} and "SearchedUser" not in by_face
    assert [m["User"] for m in by_face["UserMatches"]] == [{"UserId": "a", "UserStatus": "ACTIVE"}]
    assert by_face["UserMatches"][0]["Similarity"] >= 80
    assert by_face["FaceModelVersion"] == rek.describe_collection(CollectionId=collection_id)["FaceModelVersion"]

    everyone = rek.search_users(CollectionId=collection_id, FaceId=a[2], UserMatchThreshold=0)["UserMatches"]
    sims = [m["Similarity"] for m in everyone]
    assert [m["User"]["UserId"] for m in everyone] == ["a", "b"] and sims == sorted(sims, reverse=True)
    assert (
        len(rek.search_users(CollectionId=collection_id, FaceId=a[2], UserMatchThreshold=0, MaxUsers=1)["UserMatches"])
        == 1
    )

    by_user = rek.search_users(CollectionId=collection_id, UserId="a", UserMatchThreshold=0)
    assert by_user["SearchedUser"] == {"UserId": "a"} and "SearchedFace" not in by_user
    assert [m["User"]["UserId"] for m in by_user["UserMatches"]] == ["b"]  # the user itself left out
    assert rek.search_users(CollectionId=collection_id, UserId="a")["UserMatches"] == []  # b is not a
    assert rek.search_users(CollectionId=collection_id, UserId="empty", UserMatchThreshold=0)["UserMatches"] == []

    for kwargs in ({}, {"UserId": "a", "FaceId": a[2]}, {"FaceId": str(uuid.uuid4())}):
        with pytest.raises(rek.exceptions.InvalidParameterException):
            rek.search_users(CollectionId=collection_id, **kwargs)
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.search_users(CollectionId=collection_id, UserId="nobody")
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.search_users(CollectionId="no-such-collection", UserId="a")


def test_search_users_by_image_reports_searched_and_unsearched_faces(rek):
    collection_id = _new_collection(rek)
    faces = _two_people(rek, collection_id)
    couple = [_index(rek, collection_id, COUPLE)]  # the couple's larger face
    for user_id, face_ids in (("a", faces["a"][:2]), ("b", faces["b"][:1]), ("couple", couple)):
        rek.create_user(CollectionId=collection_id, UserId=user_id)
        rek.associate_faces(CollectionId=collection_id, UserId=user_id, FaceIds=face_ids)
    version = rek.describe_collection(CollectionId=collection_id)["FaceModelVersion"]

    probe = image_bytes(faces["a_probe"])
    detected = rek.detect_faces(Image={"Bytes": probe})["FaceDetails"]
    found = rek.search_users_by_image(CollectionId=collection_id, Image={"Bytes": probe})
    assert found["FaceModelVersion"] == version
    assert found["SearchedFace"]["FaceDetail"]["BoundingBox"] == pytest.approx(detected[0]["BoundingBox"])
    assert found["SearchedFace"]["FaceDetail"]["Confidence"] == pytest.approx(detected[0]["Confidence"])
    assert [m["User"] for m in found["UserMatches"]] == [{"UserId": "a", "UserStatus": "ACTIVE"}]
    assert found["UserMatches"][0]["Similarity"] >= 80
    assert [u["Reasons"] for u in found["UnsearchedFaces"]] == [["FACE_NOT_LARGEST"]] * (len(detected) - 1)

    # Two faces: the larger is searched, the other reported FACE_NOT_LARGEST; matches sorted.
    two = rek.search_users_by_image(
        CollectionId=collection_id, Image={"Bytes": image_bytes(COUPLE)}, UserMatchThreshold=0
    )
    [other] = two["UnsearchedFaces"]
    assert other["Reasons"] == ["FACE_NOT_LARGEST"]

    def box(d):
        return d["BoundingBox"]["Width"] * d["BoundingBox"]["Height"]

    assert box(other["FaceDetails"]) <= box(two["SearchedFace"]["FaceDetail"])
    sims = [m["Similarity"] for m in two["UserMatches"]]
    assert two["UserMatches"][0]["User"]["UserId"] == "couple" and sims == sorted(sims, reverse=True)
    assert len(sims) == 3
    limited = rek.search_users_by_image(
        CollectionId=collection_id, Image={"Bytes": image_bytes(COUPLE)}, UserMatchThreshold=0, MaxUsers=2
    )["UserMatches"]
    assert [m["User"]["UserId"] for m in limited] == [m["User"]["UserId"] for m in two["UserMatches"][:2]]
    assert (
        rek.search_users_by_image(CollectionId=collection_id, Image={"Bytes": probe}, UserMatchThreshold=100)[
            "UserMatches"
        ]
        == []
    )

    # QualityFilter: smaller faces carry FACE_NOT_LARGEST and their own quality reasons; a largest
    # face below the bar is not searched, and no valid face is not an error.
    crowd = rek.search_users_by_image(
        CollectionId=collection_id, Image={"Bytes": image_bytes(CROWD)}, QualityFilter="LOW"
    )
    assert "SearchedFace" in crowd
    reasons = [u["Reasons"] for u in crowd["UnsearchedFaces"]]
    assert all(r[0] == "FACE_NOT_LARGEST" for r in reasons)
    assert any(len(r) > 1 and r[-1] == "LOW_FACE_QUALITY" for r in reasons)
    blurred = rek.search_users_by_image(
        CollectionId=collection_id, Image={"Bytes": _blurred(image_bytes(PORTRAIT), 3)}, QualityFilter="HIGH"
    )
    assert "SearchedFace" not in blurred and blurred["UserMatches"] == []
    assert blurred["UnsearchedFaces"] and all(
        "LOW_SHARPNESS" in u["Reasons"] and "FACE_NOT_LARGEST" not in u["Reasons"] for u in blurred["UnsearchedFaces"]
    )
    nobody = rek.search_users_by_image(
        CollectionId=collection_id, Image={"Bytes": encode(Image.new("RGB", (300, 300), (90, 160, 90)), "PNG")}
    )
    assert nobody["UserMatches"] == [] and nobody["UnsearchedFaces"] == [] and "SearchedFace" not in nobody

    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.search_users_by_image(CollectionId="no-such-collection", Image={"Bytes": probe})
    with pytest.raises(rek.exceptions.InvalidImageFormatException):
        rek.search_users_by_image(CollectionId=collection_id, Image={"Bytes": b"not an image"})


# --- quota, concurrency, status, faults (in-process, both adapters)


def _synthetic_faces(ctx, collection_id: str, n: int, seed: int = 0) -> list[str]:
    """n faces with random unit vectors, stored as IndexFaces would (no image needed)."""
    from facebank.storage import FaceRecord

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, ctx.model_pack.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    records = [
        FaceRecord(str(uuid.uuid4()), str(uuid.uuid4()), None, {"Width": 0.5, "Height": 0.5, "Left": 0.1, "Top": 0.1},
                   99.0, ctx.model_pack.face_model_version, None, "", 0.0)
        for _ in range(n)
    ]  # fmt: skip
    ctx.index.add_faces(collection_id, records, vectors)
    return [r.face_id for r in records]


def test_user_face_quota(harness):
    with harness() as (rek, ctx):
        collection_id = _new_collection(rek)
        face_ids = _synthetic_faces(ctx, collection_id, 102)
        rek.create_user(CollectionId=collection_id, UserId="u")
        rek.associate_faces(CollectionId=collection_id, UserId="u", FaceIds=face_ids[:99])
        # 99 + 2 > 100: refused whole, nothing changes.
        with pytest.raises(rek.exceptions.ServiceQuotaExceededException):
            rek.associate_faces(CollectionId=collection_id, UserId="u", FaceIds=face_ids[99:101], UserMatchThreshold=0)
        assert len(_user_faces(rek, collection_id, "u")) == 99
        done = rek.associate_faces(CollectionId=collection_id, UserId="u", FaceIds=[face_ids[99]], UserMatchThreshold=0)
        assert len(done["AssociatedFaces"]) == 1
        with pytest.raises(rek.exceptions.ServiceQuotaExceededException):  # full
            rek.associate_faces(CollectionId=collection_id, UserId="u", FaceIds=[face_ids[101]], UserMatchThreshold=0)
        assert len(_user_faces(rek, collection_id, "u")) == 100


class GatedAssociations:
    """Delegates to a metadata store; each thread's first set_face_user waits until `parties`
    threads got there, so that many calls are known to be past AssociateFaces' up-front checks."""

    def __init__(self, inner, parties: int = 2):
        self.inner, self.barrier, self.local = inner, threading.Barrier(parties), threading.local()

    def set_face_user(self, *args, **kwargs):
        if not getattr(self.local, "passed", False):
            self.local.passed = True
            self.barrier.wait(30)
        return self.inner.set_face_user(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_concurrent_calls_cannot_overfill_a_user(harness):
    """Two calls of 60 faces for one empty user both pass the up-front quota check; the storage's
    per-face cap still stops the user at exactly 100, and a call that hit it says so."""
    wrappers = []

    def wrap(inner):
        wrappers.append(GatedAssociations(inner))
        return wrappers[-1]

    with harness(wrap) as (rek, ctx):
        collection_id = _new_collection(rek)
        face_ids = _synthetic_faces(ctx, collection_id, 120)
        rek.create_user(CollectionId=collection_id, UserId="u")

        def associate(part):
            try:
                return rek.associate_faces(CollectionId=collection_id, UserId="u", FaceIds=part, UserMatchThreshold=0)
            except rek.exceptions.ServiceQuotaExceededException:
                return None

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(associate, [face_ids[:60], face_ids[60:]]))
        assert len(_user_faces(rek, collection_id, "u")) == 100
        assert None in results
        assert _users(rek, collection_id) == {"u": "ACTIVE"}
        assert _stored_vector_matches(ctx, collection_id, "u") == pytest.approx(1.0, abs=1e-5)


def _stored_vector_matches(ctx, collection_id: str, user_id: str) -> float:
    """Cosine between the user's searchable vector and the mean of its current faces' vectors."""
    users = ctx.user_index
    user = ctx.metadata.get_user(collection_id, user_id)
    expected = users.user_vector(collection_id, user)
    [(found, cosine)] = users.search(collection_id, expected, 1)
    assert found.user_id == user_id and found.vector_id == user.vector_id
    return cosine


def test_concurrent_associate_faces_lose_nothing(harness):
    """8 concurrent AssociateFaces (and DisassociateFaces) for one user: every face lands, and the
    user's vector is the mean of exactly its final faces."""
    people = dev_people()
    name = max(people, key=lambda n: len(people[n]))
    with harness() as (rek, ctx):
        collection_id = _new_collection(rek)
        face_ids = [_index(rek, collection_id, p) for p in people[name][:12]]
        synthetic = _synthetic_faces(ctx, collection_id, 8, seed=1)
        rek.create_user(CollectionId=collection_id, UserId="u")
        rek.associate_faces(CollectionId=collection_id, UserId="u", FaceIds=face_ids[:1] + synthetic)
        jobs = [("associate", face_ids[1 + i :: 8]) for i in range(8) if face_ids[1 + i :: 8]]
        jobs += [("disassociate", [f]) for f in synthetic]

        def run(job):
            kind, ids = job
            call = rek.associate_faces if kind == "associate" else rek.disassociate_faces
            kwargs = {"UserMatchThreshold": 0} if kind == "associate" else {}
            return call(CollectionId=collection_id, UserId="u", FaceIds=ids, **kwargs)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(run, jobs))
        associated = {f["FaceId"] for r in results[: len(jobs) - 8] for f in r["AssociatedFaces"]}
        assert associated == set(face_ids[1:])
        assert all(r["UnsuccessfulFaceAssociations"] == [] for r in results[: len(jobs) - 8])
        assert [r["DisassociatedFaces"] for r in results[len(jobs) - 8 :]] == [[{"FaceId": f}] for f in synthetic]
        assert _user_faces(rek, collection_id, "u") == set(face_ids)
        assert _users(rek, collection_id) == {"u": "ACTIVE"} and _user_count(rek, collection_id) == 1
        assert _stored_vector_matches(ctx, collection_id, "u") == pytest.approx(1.0, abs=1e-5)


def test_concurrent_associate_faces_through_the_server(served, server):
    """The same through `facebank serve`: 8 threads, one user, nothing lost."""
    people = dev_people()
    name = max(people, key=lambda n: len(people[n]))
    collection_id = _new_collection(served)
    face_ids = [_index(served, collection_id, p) for p in people[name][:12]]
    served.create_user(CollectionId=collection_id, UserId="u")
    served.associate_faces(CollectionId=collection_id, UserId="u", FaceIds=face_ids[:1])

    def run(i):
        return served.associate_faces(
            CollectionId=collection_id, UserId="u", FaceIds=face_ids[1 + i :: 8], UserMatchThreshold=0
        )["AssociatedFaces"]

    with ThreadPoolExecutor(8) as pool:
        associated = [f["FaceId"] for r in pool.map(run, range(8)) for f in r]
    assert sorted(associated) == sorted(face_ids[1:])
    assert _user_faces(served, collection_id, "u") == set(face_ids)
    assert _users(served, collection_id) == {"u": "ACTIVE"}

    # The committed vector is the mean of all 12 faces: read the server's data_dir directly.
    from facebank.storage import open_embedded

    storage = open_embedded(server.data_dir)
    try:
        assert _stored_vector_matches(ctx_over(storage), collection_id, "u") == pytest.approx(1.0, abs=1e-5)
    finally:
        storage.metadata.close()


def test_status_is_updating_while_the_vector_changes(harness):
    with harness() as (rek, ctx):
        collection_id = _new_collection(rek)
        face_ids = _synthetic_faces(ctx, collection_id, 2)
        rek.create_user(CollectionId=collection_id, UserId="u")
        reached, release = threading.Event(), threading.Event()
        users = ctx.user_index
        store = users.vectors

        class SlowStore:
            def write_segment(self, *args):
                reached.set()
                assert release.wait(30)
                return store.write_segment(*args)

            def __getattr__(self, name):
                return getattr(store, name)

        users.vectors = SlowStore()  # this Context's user index now writes through the slow store
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(rek.associate_faces, CollectionId=collection_id, UserId="u", FaceIds=face_ids)
            assert reached.wait(30)
            assert _users(rek, collection_id) == {"u": "UPDATING"}  # faces in, vector not yet
            release.set()
            assert pending.result()["UserStatus"] == "ACTIVE"
        assert _users(rek, collection_id) == {"u": "ACTIVE"}


class FailingVectorCommit:
    """Delegates to a metadata store; set_user_vector fails while `fail` is set (a crash or lost
    connection after the membership changed, before the new vector was committed)."""

    def __init__(self, inner):
        self.inner, self.fail = inner, False

    def set_user_vector(self, *args, **kwargs):
        if self.fail:
            raise ConnectionError("metadata store unreachable")
        return self.inner.set_user_vector(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_interrupted_association_is_finished_by_the_retry(harness):
    wrappers = []

    def wrap(inner):
        wrappers.append(FailingVectorCommit(inner))
        return wrappers[-1]

    with harness(wrap) as (rek, ctx):
        [failing] = wrappers
        collection_id = _new_collection(rek)
        face_ids = _synthetic_faces(ctx, collection_id, 3)
        rek.create_user(CollectionId=collection_id, UserId="u")
        rek.associate_faces(CollectionId=collection_id, UserId="u", FaceIds=face_ids[:1])
        failing.fail = True
        with pytest.raises(rek.exceptions.InternalServerError):
            rek.associate_faces(CollectionId=collection_id, UserId="u", FaceIds=face_ids[1:], UserMatchThreshold=0)
        # Membership changed, the vector did not: UPDATING, searched on its previous vector.
        assert _users(rek, collection_id) == {"u": "UPDATING"}
        assert _user_faces(rek, collection_id, "u") == set(face_ids)
        failing.fail = False
        retry = rek.associate_faces(CollectionId=collection_id, UserId="u", FaceIds=face_ids[1:], UserMatchThreshold=0)
        assert retry["AssociatedFaces"] == [] and retry["UserStatus"] == "ACTIVE"
        assert _stored_vector_matches(ctx, collection_id, "u") == pytest.approx(1.0, abs=1e-5)


def test_delete_collection_removes_user_vectors(served, server):
    collection_id = _new_collection(served)
    face_id = _index(served, collection_id, COUPLE)
    served.create_user(CollectionId=collection_id, UserId="u")
    served.associate_faces(CollectionId=collection_id, UserId="u", FaceIds=[face_id])
    users_dir = server.data_dir / "vectors" / collection_dir(collection_id) / "users"
    assert any(users_dir.glob("*.seg"))
    served.delete_collection(CollectionId=collection_id)
    assert not users_dir.exists()
    served.create_collection(CollectionId=collection_id)
    assert served.list_users(CollectionId=collection_id)["Users"] == []


# --- accuracy


@pytest.mark.slow
def test_user_search_accuracy(served):
    """For each identity with >= 3 photos, a user built from its first two photos; its other
    photos are probes. Identities take turns as strangers (names[r::4] in rotation r), so every
    identity is a stranger once and no split is chosen; each genuine probe is asked once (identity
    i in rotation (i + 1) % 4, where it is enrolled), each stranger photo once. bench/users.py
    runs the same protocol on embeddings."""
    rek = served
    people = dev_people()
    names = sorted(people)
    collection_id = _new_collection(rek)
    enrolment = {n: [_index(rek, collection_id, p) for p in people[n][:2]] for n in names if len(people[n]) >= 3}
    found = probes = false_matches = stranger_probes = 0
    misses = []
    for rotation in range(4):
        strangers = set(names[rotation::4])
        enrolled = [n for n in enrolment if n not in strangers]
        for name in enrolled:
            rek.create_user(CollectionId=collection_id, UserId=name)
            assert (
                len(
                    rek.associate_faces(CollectionId=collection_id, UserId=name, FaceIds=enrolment[name])[
                        "AssociatedFaces"
                    ]
                )
                == 2
            )
        for i, name in enumerate(names):
            if name in strangers:
                paths, genuine = people[name], False
            elif name in enrolment and (i + 1) % 4 == rotation:
                paths, genuine = people[name][2:], True
            else:
                continue
            for path in paths:
                matches = rek.search_users_by_image(CollectionId=collection_id, Image={"Bytes": image_bytes(path)})[
                    "UserMatches"
                ]  # fmt: skip
                if genuine:
                    probes += 1
                    hit = bool(matches) and matches[0]["User"]["UserId"] == name
                    found += hit
                    if not hit:
                        misses.append(path)
                else:
                    stranger_probes += 1
                    false_matches += bool(matches)
        for name in enrolled:
            rek.delete_user(CollectionId=collection_id, UserId=name)
    print(
        f"users: found {found}/{probes} = {found / probes:.3f}; strangers matched "
        f"{false_matches}/{stranger_probes} = {false_matches / stranger_probes:.3f}; missed {misses}"
    )
    assert probes == sum(len(people[n]) - 2 for n in enrolment)
    assert stranger_probes == sum(len(p) for p in people.values())
    # Issue 5 asks for >= 0.95 found and >= 0.98 of strangers unmatched; issue 21 for >= 0.93 found.
    # With the user map fitted on LFW (issue 21: UserMatchThreshold 80 holds a 1e-3 false-match rate
    # per face-user pair pooled on unseen people, docs/collections.md), the default `open` pack
    # measures 151/160 = 0.944 found and 225/228 = 0.987 strangers unmatched on this protocol (34
    # identities, the 29 with >= 3 photos enrolled in turn). Floors: the measured figures less one
    # binomial standard error (0.018 / 0.008), rounded down, so a regression of a few probes fails.
    # Before issue 21 (user map fitted on faces/dev): 130/160 = 0.812 and 228/228.
    assert found / probes >= 0.92
    assert 1 - false_matches / stranger_probes >= 0.97
