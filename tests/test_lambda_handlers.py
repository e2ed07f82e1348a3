"""The Lambda handlers, invoked with API Gateway proxy events, answer like `facebank serve`."""

from __future__ import annotations

import base64
import importlib
import json

import pytest
from support import image_bytes

from facebank.operations import OPERATIONS


def _event(body: dict | str, encoded: bool = False) -> dict:
    text = body if isinstance(body, str) else json.dumps(body)
    return {
        "resource": "/DetectFaces",
        "path": "/DetectFaces",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/x-amz-json-1.1"},
        "requestContext": {"requestId": "apigw-req-1", "stage": "prod"},
        "body": base64.b64encode(text.encode()).decode() if encoded else text,
        "isBase64Encoded": encoded,
    }


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_every_operation_has_a_function(operation):
    module = importlib.import_module(f"functions.{_snake(operation)}")
    assert module.handler.__name__ == f"{operation}_handler"


@pytest.mark.parametrize("encoded", [False, True])
def test_detect_faces_handler_matches_the_server(model_env, rekognition, encoded):
    from functions.detect_faces import handler

    data = image_bytes("groups/face_recognition_two_people.jpg")
    response = handler(_event({"Image": {"Bytes": base64.b64encode(data).decode()}}, encoded))
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "application/x-amz-json-1.1"
    via_lambda = json.loads(response["body"])["FaceDetails"]
    via_server = rekognition.detect_faces(Image={"Bytes": data})["FaceDetails"]
    assert len(via_lambda) == len(via_server) == 2
    for a, b in zip(via_lambda, via_server, strict=False):
        assert a["BoundingBox"] == pytest.approx(b["BoundingBox"])


def test_handler_errors_use_the_rekognition_shape():
    from functions.compare_faces import handler

    response = handler(_event({"SourceImage": {"Bytes": "aGk="}}))
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["__type"] == "ValidationException"
    assert response["headers"]["x-amzn-RequestId"] == "apigw-req-1"


def test_oversized_event_names_s3object():
    from functions.detect_faces import handler

    response = handler(_event("x" * (6 * 1024 * 1024 + 1)))
    body = json.loads(response["body"])
    assert body["__type"] == "ImageTooLargeException" and "S3Object" in body["Message"]
