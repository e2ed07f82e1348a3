"""Fixtures: model files from the mirror, a moto S3 endpoint, and a real `facebank serve`."""

from __future__ import annotations

import os

import pytest
from support import SHARED, Server, free_port


@pytest.fixture(scope="session")
def model_env(tmp_path_factory) -> dict[str, str]:
    """Environment in which the default pack's models resolve, fetched from the mirror if needed."""
    from facebank import models
    from facebank.engine.packs import pack
    from facebank.settings import Settings

    env = dict(os.environ)
    if (SHARED / "models").is_dir():  # a mirror that does not exist is an error, not a fallback
        env.setdefault("FACEBANK_MODEL_MIRROR", str(SHARED / "models"))
        os.environ.setdefault("FACEBANK_MODEL_MIRROR", env["FACEBANK_MODEL_MIRROR"])
    settings = Settings.from_env(env)
    try:
        models.fetch(pack(settings.pack).files, model_dir=settings.resolved_model_dir, mirror=settings.model_mirror)
    except models.ModelError as exc:
        pytest.skip(f"model files unavailable (mirror {env.get('FACEBANK_MODEL_MIRROR') or 'none'}, offline?): {exc}")
    return env


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 endpoint on loopback for S3Object images."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def server(model_env, s3_server, tmp_path_factory):
    env = {
        **model_env,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    srv = Server(env, tmp_path_factory.mktemp("data") / "data", ["--s3-endpoint-url", s3_server])
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def rekognition(server):
    return server.client()
