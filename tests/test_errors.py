"""Every bad input gets the exception class a Rekognition client would get."""

from __future__ import annotations

import json
import urllib.request

import boto3
import pytest
from botocore.exceptions import ClientError
from PIL import Image
from support import encode, image_bytes, jpeg, pixel_bomb


def test_not_an_image(rekognition):
    with pytest.raises(rekognition.exceptions.InvalidImageFormatException):
        rekognition.detect_faces(Image={"Bytes": b"definitely not a picture"})


def test_gif_is_refused_by_content(rekognition):
    with pytest.raises(rekognition.exceptions.InvalidImageFormatException):
        rekognition.detect_faces(Image={"Bytes": encode(Image.new("RGB", (200, 200)), "GIF")})


def test_truncated_jpeg(rekognition):
    data = image_bytes("dev/barack_obama/1.jpg")
    with pytest.raises(rekognition.exceptions.InvalidImageFormatException):
        rekognition.detect_faces(Image={"Bytes": data[: len(data) // 3]})


def test_image_under_80_pixels(rekognition):
    with pytest.raises(rekognition.exceptions.InvalidParameterException, match="minimum"):
        rekognition.detect_faces(Image={"Bytes": jpeg((79, 300))})


def test_bytes_over_5_mb(rekognition):
    with pytest.raises(rekognition.exceptions.ImageTooLargeException):
        rekognition.detect_faces(Image={"Bytes": b"\xff\xd8\xff" + bytes(5 * 1024 * 1024)})


def test_decompression_bomb_is_refused_before_decoding(rekognition):
    with pytest.raises(rekognition.exceptions.ImageTooLargeException, match="megapixels"):
        rekognition.detect_faces(Image={"Bytes": pixel_bomb()})


@pytest.mark.parametrize(
    "kwargs, member",
    [
        ({"Attributes": ["FACES_PLEASE"]}, "attributes.1.member"),
        ({"Image": {"Bytes": b""}}, "image.bytes"),
        ({"Image": {"S3Object": {"Bucket": "no such bucket!", "Name": "k"}}}, "image.s3Object.bucket"),
    ],
)
def test_model_constraints_are_validated(rekognition, kwargs, member):
    request = {"Image": {"Bytes": jpeg()}, **kwargs}
    with pytest.raises(ClientError) as info:
        rekognition.detect_faces(**request)
    error = info.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert member in error["Message"]


def test_similarity_threshold_range(rekognition):
    with pytest.raises(ClientError) as info:
        rekognition.compare_faces(SourceImage={"Bytes": jpeg()}, TargetImage={"Bytes": jpeg()}, SimilarityThreshold=101)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "less than or equal to 100" in info.value.response["Error"]["Message"]


def test_bytes_and_s3object_together(rekognition):
    with pytest.raises(rekognition.exceptions.InvalidParameterException):
        rekognition.detect_faces(Image={"Bytes": jpeg(), "S3Object": {"Bucket": "photos", "Name": "k"}})


@pytest.fixture(scope="module")
def bucket(s3_server):
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="photos")
    s3.put_bucket_versioning(Bucket="photos", VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket="photos", Key="two.jpg", Body=image_bytes("groups/face_recognition_two_people.jpg"))
    s3.put_object(Bucket="photos", Key="two.jpg", Body=image_bytes("exif_orientation/pillow_hopper.jpg"))
    return first["VersionId"]


def test_s3_object_image(rekognition, bucket):
    latest = rekognition.detect_faces(Image={"S3Object": {"Bucket": "photos", "Name": "two.jpg"}})
    first = rekognition.detect_faces(Image={"S3Object": {"Bucket": "photos", "Name": "two.jpg", "Version": bucket}})
    assert len(latest["FaceDetails"]) == 1 and len(first["FaceDetails"]) == 2


@pytest.mark.parametrize(
    "s3object",
    [
        {"Bucket": "no-such-bucket", "Name": "two.jpg"},
        {"Bucket": "photos", "Name": "missing.jpg"},
        {"Bucket": "photos", "Name": "two.jpg", "Version": "nonexistentversion"},
    ],
)
def test_missing_s3_object(rekognition, bucket, s3object):
    with pytest.raises(rekognition.exceptions.InvalidS3ObjectException):
        rekognition.detect_faces(Image={"S3Object": s3object})


def _raw_post(server, path: str, body: bytes, headers: dict[str, str]):
    request = urllib.request.Request(server.url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_unknown_operation(server):
    status, headers, body = _raw_post(
        server,
        "/",
        b"{}",
        {"X-Amz-Target": "RekognitionService.MakeCoffee", "Content-Type": "application/x-amz-json-1.1"},
    )
    assert status == 400 and body["__type"] == "UnknownOperationException"
    assert headers["x-amzn-ErrorType"] == "UnknownOperationException" and headers["x-amzn-RequestId"]


def test_malformed_json(server):
    status, _, body = _raw_post(server, "/", b"{not json", {"X-Amz-Target": "RekognitionService.DetectFaces"})
    assert status == 400 and body["__type"] == "SerializationException"


def test_operation_in_path(server):
    payload = json.dumps(
        {"Image": {"Bytes": __import__("base64").b64encode(image_bytes("exif_orientation/pillow_hopper.jpg")).decode()}}
    )
    status, headers, body = _raw_post(
        server, "/DetectFaces", payload.encode(), {"Content-Type": "application/x-amz-json-1.1"}
    )
    assert status == 200 and len(body["FaceDetails"]) == 1
    assert headers["Content-Type"] == "application/x-amz-json-1.1"
