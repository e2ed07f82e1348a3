"""QualityFilter AUTO refuses only what Rekognition refuses (issue 21, point 4).

IndexFaces through boto3 against `facebank serve` with QualityFilter left at its default (AUTO), on
group photos from ../shared/faces/groups (GROUPS.tsv): sharp, well-lit photos of several people,
frontal to three-quarter, also scaled down so the faces are 37-57 px, as in Amazon's own collections
demo. A face too blurred or too dark is still refused. Skips when the photos or models are absent.
"""

from __future__ import annotations

import io
import uuid

import pytest
from PIL import Image, ImageEnhance, ImageFilter
from support import encode, image_bytes

# photo -> how far its most turned face is turned (|Yaw|, degrees) at least: three-quarter in the first
SHARP_GROUPS = {"groups/insightface_t1.jpg": 30.0, "groups/facenet-pytorch_multiface.jpg": 10.0}


def _scaled(relative: str, scale: float) -> bytes:
    image = Image.open(io.BytesIO(image_bytes(relative))).convert("RGB")
    size = (round(image.width * scale), round(image.height * scale))
    return encode(image.resize(size, Image.Resampling.LANCZOS), "JPEG", quality=92)


@pytest.fixture(scope="module")
def collection(rekognition):
    collection_id = f"auto-{uuid.uuid4().hex[:8]}"
    rekognition.create_collection(CollectionId=collection_id)
    yield collection_id
    rekognition.delete_collection(CollectionId=collection_id)


@pytest.mark.parametrize("path", SHARP_GROUPS, ids=lambda p: p.split("/")[-1])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_auto_keeps_every_face_of_a_sharp_well_lit_group_photo(rekognition, collection, path, scale):
    data = _scaled(path, scale)
    detected = rekognition.detect_faces(Image={"Bytes": data})["FaceDetails"]
    response = rekognition.index_faces(CollectionId=collection, Image={"Bytes": data})  # AUTO by default
    assert len(detected) == 6  # six people in each, counted by eye (GROUPS.tsv states no count)
    assert max(abs(f["Pose"]["Yaw"]) for f in detected) >= SHARP_GROUPS[path]
    assert response["UnindexedFaces"] == []
    assert len(response["FaceRecords"]) == len(detected)


def test_auto_still_refuses_a_blurred_or_dark_face(rekognition, collection):
    image = Image.open(io.BytesIO(image_bytes("groups/face_recognition_kit_with_rose.jpg"))).convert("RGB")
    for changed, reason in (
        (image.filter(ImageFilter.GaussianBlur(4)), "LOW_SHARPNESS"),
        (ImageEnhance.Brightness(image).enhance(0.2), "LOW_BRIGHTNESS"),
    ):
        response = rekognition.index_faces(CollectionId=collection, Image={"Bytes": encode(changed, "JPEG")})
        reasons = [r for u in response["UnindexedFaces"] for r in u["Reasons"]]
        assert response["FaceRecords"] == [] and reason in reasons and "LOW_FACE_QUALITY" in reasons
