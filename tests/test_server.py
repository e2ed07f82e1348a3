"""Server behaviour: body limits, SigV4 when configured, loopback by default, clean SIGTERM."""

from __future__ import annotations

import http.client
import json
import signal

import pytest
from botocore.exceptions import ClientError
from support import Server, image_bytes, settings

from facebank.operations import Context
from facebank.server import MAX_BODY, serve


def test_oversized_body_refused_from_its_header(server):
    # Only the headers are sent: the server must answer from Content-Length, without waiting
    # for (or reading) a body it will refuse.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("POST", "/")
    conn.putheader("X-Amz-Target", "RekognitionService.DetectFaces")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 400
    assert json.loads(response.read())["__type"] == "ImageTooLargeException"
    conn.close()


def test_health(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/health")
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["status"] == "ok"


def test_refuses_non_loopback_without_credentials():
    with pytest.raises(SystemExit, match="refusing to listen"):
        serve("0.0.0.0", 0, Context(settings()), credentials={})


@pytest.fixture(scope="module")
def signed_server(model_env, tmp_path_factory):
    env = {**model_env, "FACEBANK_ACCESS_KEY_ID": "AKIDFACEBANK", "FACEBANK_SECRET_ACCESS_KEY": "s3cret"}
    srv = Server(env, tmp_path_factory.mktemp("signed") / "data")
    yield srv
    srv.stop()


def test_sigv4_signed_requests_accepted(signed_server):
    client = signed_server.client(aws_access_key_id="AKIDFACEBANK", aws_secret_access_key="s3cret")
    faces = client.detect_faces(Image={"Bytes": image_bytes("exif_orientation/pillow_hopper.jpg")})["FaceDetails"]
    assert len(faces) == 1


@pytest.mark.parametrize(
    "key, secret, code",
    [("AKIDFACEBANK", "wrong", "InvalidSignatureException"), ("AKIDOTHER", "s3cret", "UnrecognizedClientException")],
)
def test_sigv4_bad_signatures_refused(signed_server, key, secret, code):
    client = signed_server.client(aws_access_key_id=key, aws_secret_access_key=secret)
    with pytest.raises(ClientError) as info:
        client.detect_faces(Image={"Bytes": image_bytes("exif_orientation/pillow_hopper.jpg")})
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_sigterm_stops_cleanly(model_env, tmp_path):
    srv = Server(model_env, tmp_path / "data")
    srv.client().detect_faces(Image={"Bytes": image_bytes("exif_orientation/pillow_hopper.jpg")})
    srv.process.send_signal(signal.SIGTERM)
    assert srv.process.wait(timeout=30) == 0
    srv.log.close()
