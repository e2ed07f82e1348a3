"""`facebank serve`'s data directory: owner-only modes, stale temporary files removed at start,
small segments compacted in the background (Compactor.run_once, the pass the server repeats)."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys

from support import Server, embedded_ctx, image_bytes

from facebank.maintenance import Compactor
from facebank.protocol import dispatch


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_data_dir_private_and_stale_tmp_removed(model_env, tmp_path):
    data = tmp_path / "data"
    (data / "vectors").mkdir(parents=True, mode=0o755)
    data.chmod(0o755)
    old = data / "vectors" / "old.bin"
    old.write_bytes(b"x")
    old.chmod(0o644)
    stale = data / "vectors" / f".seg-1.{_dead_pid()}.0123abcd.tmp"
    stale.write_bytes(b"half")
    srv = Server(model_env, data)
    try:
        client = srv.client()
        client.create_collection(CollectionId="private")
        client.index_faces(CollectionId="private", Image={"Bytes": image_bytes("exif_orientation/pillow_hopper.jpg")})
    finally:
        assert srv.stop() == 0
    assert not stale.exists()
    paths = [data, *data.rglob("*")]
    assert len(paths) > 3  # the database and a segment at least
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_compaction_merges_single_face_segments(model_env, tmp_path):
    ctx = embedded_ctx(tmp_path / "data", compact_min_age_s=0.0)
    photo = image_bytes("exif_orientation/pillow_hopper.jpg")

    def call(name: str, payload: str) -> dict:
        response = dispatch(name, payload.encode(), ctx)
        assert response.status == 200, response.body
        return json.loads(response.body)

    call("CreateCollection", '{"CollectionId": "c"}')
    image = base64.b64encode(photo).decode()
    for i in range(6):
        call("IndexFaces", json.dumps({"CollectionId": "c", "Image": {"Bytes": image}, "ExternalImageId": f"p{i}"}))
    segments = ctx.storage.vectors.list_segments("c")
    assert len(segments) == 6
    search = json.dumps({"CollectionId": "c", "Image": {"Bytes": image}, "MaxFaces": 10})
    before = call("SearchFacesByImage", search)["FaceMatches"]
    assert Compactor(ctx, min_age_s=0.0).run_once() == 6
    assert len(ctx.storage.vectors.list_segments("c")) == 1
    after = call("SearchFacesByImage", search)["FaceMatches"]
    assert sorted(m["Face"]["FaceId"] for m in after) == sorted(m["Face"]["FaceId"] for m in before)
    assert len(after) == 6


def test_model_cache_private(model_env, tmp_path):
    # `facebank models fetch` into an empty cache, from the mirror the tests use.
    env = {**model_env, "FACEBANK_MODEL_DIR": str(tmp_path / "models")}
    done = subprocess.run([sys.executable, "-m", "facebank.cli", "models", "fetch"], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]
    paths = list((tmp_path / "models").rglob("*"))
    assert any(p.suffix == ".onnx" for p in paths)
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
