"""Unit tests of the wire protocol and the botocore-model validation (no models needed)."""

from __future__ import annotations

import base64
import json

import pytest
from support import embedded_ctx, settings

from facebank import errors
from facebank.operations import OPERATIONS, Context
from facebank.protocol import dispatch, operation_name
from facebank.validation import parse_request


def test_operation_name_from_target_or_path():
    assert operation_name("RekognitionService.DetectFaces", "/") == "DetectFaces"
    assert operation_name(None, "/CompareFaces") == "CompareFaces"
    assert operation_name("SomethingElse.DetectFaces", "/") is None
    assert operation_name(None, "/") is None


def test_blobs_are_base64_decoded():
    parsed = parse_request("DetectFaces", {"Image": {"Bytes": base64.b64encode(b"abc").decode()}})
    assert parsed == {"Image": {"Bytes": b"abc"}}


def test_invalid_base64_is_a_serialization_error():
    with pytest.raises(errors.SerializationException):
        parse_request("DetectFaces", {"Image": {"Bytes": "***"}})


def test_nan_infinity_and_absurd_nesting_are_not_json(tmp_path):
    for body in (
        b'{"CollectionId": "c", "FaceId": "x", "FaceMatchThreshold": NaN}',
        b'{"MaxResults": Infinity}',
        b'{"CollectionId": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ):
        response = dispatch("SearchFaces", body, embedded_ctx(tmp_path))
        assert response.status == 400 and json.loads(response.body)["__type"] == "SerializationException"


def test_wrong_type_is_a_serialization_error():
    with pytest.raises(errors.SerializationException):
        parse_request("CompareFaces", {"SourceImage": {}, "TargetImage": {}, "SimilarityThreshold": "high"})


def test_every_violation_is_reported_like_aws():
    with pytest.raises(errors.ValidationException) as info:
        parse_request("SearchFacesByImage", {"CollectionId": "bad id!", "Image": {"Bytes": "YQ=="}, "MaxFaces": 0})
    message = info.value.message
    assert message.startswith("2 validation errors detected: ")
    assert (
        "Value 'bad id!' at 'collectionId' failed to satisfy constraint: Member must satisfy regular expression pattern"
        in message
    )
    assert "at 'maxFaces' failed to satisfy constraint: Member must have value greater than or equal to 1" in message


def test_required_members():
    with pytest.raises(
        errors.ValidationException, match="'sourceImage' failed to satisfy constraint: Member must not be null"
    ):
        parse_request("CompareFaces", {"TargetImage": {"Bytes": "YQ=="}})


def test_unicode_property_patterns_from_the_model():
    # Tag keys use Java's \p{L} classes, which the stdlib re module cannot compile.
    assert parse_request("CreateCollection", {"CollectionId": "c", "Tags": {"Équipe": "défaut"}})
    with pytest.raises(errors.ValidationException, match="tags"):
        parse_request("CreateCollection", {"CollectionId": "c", "Tags": {"aws:reserved": "x"}})


def test_unexpected_failure_is_a_500_without_traceback(monkeypatch):
    def broken(request, ctx):
        raise RuntimeError("secret internal detail")

    monkeypatch.setitem(OPERATIONS, "DetectFaces", broken)
    response = dispatch("DetectFaces", json.dumps({"Image": {"Bytes": "YQ=="}}).encode(), Context(settings()))
    body = json.loads(response.body)
    assert response.status == 500 and body["__type"] == "InternalServerError"
    assert "secret" not in response.body.decode() and "Traceback" not in response.body.decode()


def test_error_shape_and_headers():
    response = dispatch("DetectFaces", b"{}", Context(settings()), request_id="req-1")
    assert response.status == 400
    assert json.loads(response.body)["__type"] == "ValidationException"
    assert response.headers["x-amzn-ErrorType"] == "ValidationException"
    assert response.headers["x-amzn-RequestId"] == "req-1"
