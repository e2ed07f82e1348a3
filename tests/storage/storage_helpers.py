"""Shared helpers for the storage tests (a uniquely named module: pytest puts this folder on
sys.path, and a generic name like "helpers" could clash with another test folder's)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import numpy as np

from facebank.storage.ports import CollectionRecord, FaceRecord

DIM = 128


def collection_record(collection_id: str, **kw) -> CollectionRecord:
    defaults = dict(
        arn=f"aws:rekognition:us-east-1:000000000000:collection/{collection_id}",
        face_model_version="facebank-1.0",
        pack="test-pack",
        created=1_700_000_000.25,
        tags={"team": "qa"},
    )
    return CollectionRecord(collection_id=collection_id, **{**defaults, **kw})


def face_record(face_id: str, segment: str = "seg") -> FaceRecord:
    return FaceRecord(
        face_id=face_id,
        image_id=str(uuid.uuid5(uuid.NAMESPACE_OID, face_id)),
        external_image_id=None if face_id.endswith("0") else f"img-{face_id}",
        bounding_box={"Width": 0.25, "Height": 0.5, "Left": 0.125, "Top": 0.1},
        confidence=99.87654321,
        index_faces_model_version="6.0",
        user_id=None,
        segment=segment,
        created=1_700_000_123.5,
    )


def faces(prefix: str, n: int, segment: str = "seg") -> list[FaceRecord]:
    return [face_record(f"{prefix}-{i:04d}", segment) for i in range(n)]


def unit_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def list_all(page: Callable[[str | None], tuple[list, str | None]]) -> list:
    """Follow next tokens to the end; guards against a token that never ends."""
    out, token = [], None
    for _ in range(1000):
        items, token = page(token)
        out += items
        if token is None:
            return out
    raise AssertionError("pagination did not terminate")


def run_threads(n: int, target: Callable[[int], None]) -> None:
    """Run target(i) on n threads released together; re-raise the first failure."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
