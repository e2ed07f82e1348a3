"""The similarity maps: the operating points docs/collections.md documents are the ones served,
through the API; and a collection created before a refit keeps answering.

The maps themselves are fitted and checked by ``python bench/calibrate.py`` (LFW, counted rates on
people the fit never saw); these tests pin what a client gets to what the docs say.
"""

from __future__ import annotations

import re
import sqlite3
import uuid

import pytest
from support import ROOT, image_bytes

from facebank.engine.packs import PACKS, Calibration
from facebank.operations.celebrities import CELEBRITY_CALIBRATIONS
from facebank.operations.users import USER_CALIBRATIONS

KINDS = {"faces": {n: p.calibration for n, p in PACKS.items()}, "users": USER_CALIBRATIONS}
KINDS["celebrities"] = CELEBRITY_CALIBRATIONS
ROW = re.compile(r"^\| `(\w+)` \| (faces|users|celebrities) \| ([0-9.]+) \| ([0-9.]+) \|")


def documented() -> dict[tuple[str, str], Calibration]:
    """The table of pinned cosines in docs/collections.md ("Similarity maps")."""
    rows = {}
    for line in (ROOT / "docs" / "collections.md").read_text().splitlines():
        if m := ROW.match(line):
            rows[m[1], m[2]] = Calibration(float(m[3]), float(m[4]))
    return rows


def test_documented_operating_points_are_the_pinned_ones() -> None:
    table = documented()
    pinned = {(pack, kind): cal for kind, cals in KINDS.items() for pack, cal in cals.items()}
    assert table == pinned
    for cal in pinned.values():  # each pinned point is where the map crosses 80 and 99
        assert cal.similarity(cal.at_80) == pytest.approx(80.0, abs=1e-6)
        assert cal.similarity(cal.at_99) == pytest.approx(99.0, abs=1e-6)


def _collection_with(rekognition, photo: str) -> str:
    collection_id = f"cal-{uuid.uuid4().hex[:10]}"
    rekognition.create_collection(CollectionId=collection_id)
    rekognition.index_faces(
        CollectionId=collection_id, Image={"Bytes": image_bytes(photo)}, MaxFaces=1, QualityFilter="NONE"
    )
    return collection_id


def _cosine(photo_a: str, photo_b: str) -> float:
    """The cosine of the two photos' first faces, computed in this process by the default pack."""
    import numpy as np

    from facebank import models
    from facebank.engine import get_engine
    from facebank.engine.image import decode
    from facebank.settings import Settings

    settings = Settings.from_env()
    models.fetch(PACKS["open"].files, model_dir=settings.resolved_model_dir, mirror=settings.model_mirror)
    engine = get_engine(None, settings.resolved_model_dir)
    vectors = []
    for photo in (photo_a, photo_b):
        rgb = decode(image_bytes(photo))
        vectors.append(engine.embed(rgb, engine.detect(rgb, max_faces=1)[0]))
    return float(np.dot(*vectors))


def _pair(same: bool) -> tuple[str, str]:
    from support import dev_people

    people = dev_people()
    names = sorted(n for n in people if len(people[n]) >= 2)
    return (people[names[0]][0], people[names[0]][1]) if same else (people[names[0]][0], people[names[1]][0])


@pytest.mark.parametrize("same", [True, False], ids=["same person", "two people"])
def test_served_similarity_is_the_documented_map(rekognition, same: bool) -> None:
    """SearchFacesByImage's and CompareFaces' Similarity is the documented map of the cosine, and
    FaceMatchThreshold 80 keeps a match exactly when its cosine reaches the documented point."""
    indexed, probe = _pair(same)
    cal = documented()["open", "faces"]
    expected = cal.similarity(_cosine(indexed, probe))
    collection_id = _collection_with(rekognition, indexed)
    found = rekognition.search_faces_by_image(
        CollectionId=collection_id, Image={"Bytes": image_bytes(probe)}, FaceMatchThreshold=0, MaxFaces=1
    )["FaceMatches"]
    assert found[0]["Similarity"] == pytest.approx(expected, abs=1e-3)
    at_80 = rekognition.search_faces_by_image(CollectionId=collection_id, Image={"Bytes": image_bytes(probe)})
    assert bool(at_80["FaceMatches"]) == (expected >= 80.0)
    compared = rekognition.compare_faces(
        SourceImage={"Bytes": image_bytes(probe)}, TargetImage={"Bytes": image_bytes(indexed)}, SimilarityThreshold=0
    )["FaceMatches"]
    assert compared[0]["Similarity"] == pytest.approx(expected, abs=1e-3)


def _record_version(server, collection_id: str, version: str) -> None:
    """Rewrite the collection's recorded FaceModelVersion, as a collection created by an earlier
    release (before the refit) has it on disk."""
    with sqlite3.connect(server.data_dir / "metadata.sqlite3") as db:
        db.execute("UPDATE collections SET face_model_version = ? WHERE collection_id = ?", (version, collection_id))


def test_collection_from_before_the_refit_keeps_answering_on_todays_map(server, rekognition) -> None:
    indexed, probe = _pair(True)
    current = PACKS["open"]
    old_version = current.compatible[-1]  # the version this refit replaced
    collection_id = _collection_with(rekognition, indexed)
    fresh = rekognition.search_faces_by_image(
        CollectionId=collection_id, Image={"Bytes": image_bytes(probe)}, FaceMatchThreshold=0
    )
    assert fresh["FaceModelVersion"] == current.face_model_version
    _record_version(server, collection_id, old_version)
    assert rekognition.describe_collection(CollectionId=collection_id)["FaceModelVersion"] == old_version
    old = rekognition.search_faces_by_image(
        CollectionId=collection_id, Image={"Bytes": image_bytes(probe)}, FaceMatchThreshold=0
    )
    # its own version in the answer; the same faces, scored on today's map
    assert old["FaceModelVersion"] == old_version
    assert [m["Face"]["FaceId"] for m in old["FaceMatches"]] == [m["Face"]["FaceId"] for m in fresh["FaceMatches"]]
    assert old["FaceMatches"][0]["Similarity"] == pytest.approx(fresh["FaceMatches"][0]["Similarity"])
    face_id = old["FaceMatches"][0]["Face"]["FaceId"]
    assert rekognition.search_faces(CollectionId=collection_id, FaceId=face_id)["FaceModelVersion"] == old_version
    # and it still takes new faces
    rekognition.index_faces(CollectionId=collection_id, Image={"Bytes": image_bytes(probe)}, QualityFilter="NONE")


def test_collection_of_an_incompatible_version_is_refused_with_the_fix(server, rekognition) -> None:
    indexed, probe = _pair(True)
    collection_id = _collection_with(rekognition, indexed)
    _record_version(server, collection_id, "1.99")  # not this pack's vector space
    with pytest.raises(rekognition.exceptions.InvalidParameterException) as excinfo:
        rekognition.search_faces_by_image(CollectionId=collection_id, Image={"Bytes": image_bytes(probe)})
    message = excinfo.value.response["Error"]["Message"]
    assert "FaceModelVersion 1.99" in message and "new collection" in message
    # metadata operations still answer, so the client can list and move its faces
    assert rekognition.describe_collection(CollectionId=collection_id)["FaceModelVersion"] == "1.99"
    assert rekognition.list_faces(CollectionId=collection_id)["Faces"]
