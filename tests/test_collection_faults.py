"""Faults between the vector write and the metadata write: no face is lost, none is duplicated.

Runs the operations in-process through the wire protocol (the same dispatch the server uses) on
embedded storage whose metadata store fails on command.
"""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from support import ctx_over, embedded_ctx, image_bytes

from facebank.protocol import dispatch
from facebank.storage import open_embedded

COUPLE = "groups/face_recognition_kit_with_rose.jpg"


class FailingMetadata:
    """Delegates to a real store; put_faces raises while ``fail`` is set (a crash or a lost
    connection after the segment was written)."""

    def __init__(self, inner):
        self.inner = inner
        self.fail = False

    def put_faces(self, collection_id, faces):
        if self.fail:
            raise ConnectionError("metadata store unreachable")
        return self.inner.put_faces(collection_id, faces)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def harness(model_env, tmp_path):
    storage = open_embedded(tmp_path)
    failing = FailingMetadata(storage.metadata)
    ctx = ctx_over(dataclasses.replace(storage, metadata=failing))

    def call(op: str, **request):
        response = dispatch(op, json.dumps(request).encode(), ctx)
        return response.status, json.loads(response.body)

    return call, failing, ctx


def test_failed_metadata_write_loses_and_duplicates_nothing(harness):
    call, failing, ctx = harness
    assert call("CreateCollection", CollectionId="c")[0] == 200
    image = {"Bytes": base64.b64encode(image_bytes(COUPLE)).decode()}

    failing.fail = True
    status, body = call("IndexFaces", CollectionId="c", Image=image, QualityFilter="NONE")
    assert status == 500 and body["__type"] == "InternalServerError"
    # The segment was written, but no face exists: metadata is the truth.
    assert len(ctx.index.vectors.list_segments("c")) == 1
    assert call("DescribeCollection", CollectionId="c")[1]["FaceCount"] == 0
    assert call("SearchFacesByImage", CollectionId="c", Image=image, FaceMatchThreshold=0)[1]["FaceMatches"] == []

    failing.fail = False  # the client retries
    status, body = call("IndexFaces", CollectionId="c", Image=image, QualityFilter="NONE")
    assert status == 200
    face_ids = sorted(r["Face"]["FaceId"] for r in body["FaceRecords"])
    assert len(face_ids) == 2
    assert call("DescribeCollection", CollectionId="c")[1]["FaceCount"] == 2
    matches = call("SearchFacesByImage", CollectionId="c", Image=image, FaceMatchThreshold=0, MaxFaces=10)[1]
    # Each face appears once, though its vector sits in the orphan segment and the retry's.
    assert sorted(m["Face"]["FaceId"] for m in matches["FaceMatches"]) == face_ids

    # Compaction (once the orphan is old enough not to be an in-flight write) drops the orphan.
    result = ctx.index.compact("c", min_age_s=0)
    assert result.dropped == 2 and result.kept == 2
    segments = ctx.index.vectors.list_segments("c")
    assert len(segments) == 1
    ids, _ = ctx.index.vectors.read_segment("c", segments[0])
    assert sorted(ids) == face_ids
    for face_id in face_ids:
        hits = call("SearchFaces", CollectionId="c", FaceId=face_id, FaceMatchThreshold=0)[1]["FaceMatches"]
        assert [m["Face"]["FaceId"] for m in hits] == [f for f in face_ids if f != face_id]


def test_create_collection_drops_leftover_vectors_but_not_a_concurrent_winners(tmp_path):
    """A crashed DeleteCollection can leave segments behind; CreateCollection of the same id drops
    them. Segments written after it found the id free belong to a concurrent CreateCollection
    that won (and its IndexFaces), and stay."""
    import time

    import numpy as np

    from facebank.storage.segments import new_segment_name

    ctx = embedded_ctx(tmp_path)
    vectors = ctx.index.vectors
    leftover, users_leftover = new_segment_name(), new_segment_name()
    vectors.write_segment("c", leftover, ["old"], np.ones((1, 4), np.float32))
    vectors.user_vectors().write_segment("c", users_leftover, ["u"], np.ones((1, 4), np.float32))
    winners = f"{time.time_ns() + 3600 * 10**9:020d}-0123456789ab"  # written after this request began
    vectors.write_segment("c", winners, ["new"], np.ones((1, 4), np.float32))
    response = dispatch("CreateCollection", json.dumps({"CollectionId": "c"}).encode(), ctx)
    assert response.status == 200
    assert vectors.list_segments("c") == [winners]
    assert vectors.user_vectors().list_segments("c") == []
