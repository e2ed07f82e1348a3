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


# --- SigV4 as AWS enforces it: raw, replayed and tampered requests against the signed server


def _signed(
    port: int, target: str, body: bytes, *, service="rekognition", region="us-east-1", headers=None, signed=None
):
    """A request signed by botocore's own signer: (headers dict) for a raw http.client POST."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST",
        url=f"http://127.0.0.1:{port}/",
        data=body,
        headers={
            "X-Amz-Target": f"RekognitionService.{target}",
            "Content-Type": "application/x-amz-json-1.1",
            **(headers or {}),
        },
    )
    auth = SigV4Auth(Credentials("AKIDFACEBANK", "s3cret"), service, region)
    if signed is not None:  # sign only these headers (a client leaving some out)
        every = auth.headers_to_sign

        def some(req):
            chosen = every(req)
            for name in set(chosen.keys()) - signed:
                del chosen[name]
            return chosen

        auth.headers_to_sign = some  # type: ignore[method-assign]
    auth.add_auth(request)
    return dict(request.headers.items())


def _raw(port: int, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/", body=body, headers={k: v for k, v in headers.items() if k.lower() != "host"})
    response = conn.getresponse()
    data = json.loads(response.read() or b"{}")
    conn.close()
    return response.status, data


def test_sigv4_raw_signed_request_accepted(signed_server):
    status, data = _raw(signed_server.port, _signed(signed_server.port, "ListCollections", b"{}"), b"{}")
    assert status == 200 and "CollectionIds" in data


def test_sigv4_replay_with_another_target_refused(signed_server):
    client = signed_server.client(aws_access_key_id="AKIDFACEBANK", aws_secret_access_key="s3cret")
    client.create_collection(CollectionId="replayed")
    body = b'{"CollectionId": "replayed"}'
    headers = _signed(signed_server.port, "DescribeCollection", body)
    headers["X-Amz-Target"] = "RekognitionService.DeleteCollection"  # tampered after signing
    status, data = _raw(signed_server.port, headers, body)
    assert status == 403 and data["__type"] == "InvalidSignatureException"
    assert "replayed" in client.list_collections()["CollectionIds"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"signed": {"host", "x-amz-date", "content-type"}}, "'x-amz-target' must be a 'SignedHeader'"),
        ({"signed": {"host", "x-amz-date", "x-amz-target"}}, "'content-type' must be a 'SignedHeader'"),
        ({"signed": {"x-amz-date", "x-amz-target", "content-type"}}, "'host' must be a 'SignedHeader'"),
        ({"service": "s3", "region": "eu-west-3"}, "scoped to correct service: 'rekognition'"),
    ],
)
def test_sigv4_scope_and_signed_headers_enforced(signed_server, kwargs, message):
    body = b'{"CollectionId": "replayed"}'
    status, data = _raw(signed_server.port, _signed(signed_server.port, "DescribeCollection", body, **kwargs), body)
    assert status == 403 and data["__type"] == "InvalidSignatureException"
    assert message in data["Message"]


def test_sigv4_scope_date_must_match_x_amz_date(signed_server):
    body = b"{}"
    headers = _signed(signed_server.port, "ListCollections", body)
    headers["Authorization"] = headers["Authorization"].replace(f"/{headers['X-Amz-Date'][:8]}/", "/20200101/")
    status, data = _raw(signed_server.port, headers, body)
    assert status == 403 and "Date in Credential scope does not match" in data["Message"]


def test_sigv4_any_region_accepted(signed_server):
    status, _ = _raw(
        signed_server.port, _signed(signed_server.port, "ListCollections", b"{}", region="ap-south-2"), b"{}"
    )
    assert status == 200
