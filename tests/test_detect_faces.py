"""DetectFaces through boto3 against `facebank serve`, on real photos from shared/faces."""

from __future__ import annotations

import re

import pytest
from support import FACES, image_bytes, manifest_rows

# faces/nonfaces/immich_craft-beer.jpg shows a woman facing the camera behind a bar: it is
# mislabelled as a no-face image, so a correct detector must find her (asserted below).
NONFACE_WITH_A_FACE = "immich_craft-beer.jpg"


def _groups():
    if not (FACES / "GROUPS.tsv").is_file():  # parameters are made at collection: skip, not error
        reason = f"face photos not found at {FACES} (set FACEBANK_SHARED to the shared/ folder)"
        return [pytest.param(None, id="no-photos", marks=pytest.mark.skip(reason=reason))]
    rows = manifest_rows("GROUPS.tsv")
    return [r for r in rows if r["path"].startswith("groups/") and r["expected_faces"] != "-"]


@pytest.mark.parametrize("row", _groups(), ids=lambda r: r["path"].split("/")[-1])
def test_group_face_counts(rekognition, row):
    faces = rekognition.detect_faces(Image={"Bytes": image_bytes(row["path"])})["FaceDetails"]
    expected = row["expected_faces"]
    bound = int(re.search(r"\d+", expected).group())
    if expected.isdigit():
        assert len(faces) == bound
    elif expected.startswith(">="):
        assert len(faces) >= bound
    elif "not GT" in expected:
        # Another detector's raw output at a low threshold, not ground truth; Rekognition
        # returns at most the 100 largest faces, so a crowd must fill a good part of that.
        assert 50 <= len(faces) <= 100
    else:  # ">N"
        assert len(faces) > bound


def test_faces_sorted_largest_first_with_ratio_boxes(rekognition):
    faces = rekognition.detect_faces(Image={"Bytes": image_bytes("groups/immich_solvay.jpg")})["FaceDetails"]
    areas = [f["BoundingBox"]["Width"] * f["BoundingBox"]["Height"] for f in faces]
    assert areas == sorted(areas, reverse=True)
    for face in faces:
        box = face["BoundingBox"]
        assert 0 < box["Width"] < 1 and 0 < box["Height"] < 1
        assert -0.5 < box["Left"] < 1 and -0.5 < box["Top"] < 1
        assert 0 <= face["Confidence"] <= 100
        assert set(face["Pose"]) == {"Roll", "Yaw", "Pitch"}
        assert 0 <= face["Quality"]["Brightness"] <= 100 and 0 <= face["Quality"]["Sharpness"] <= 100


def test_nonfaces_have_no_face(rekognition):
    rows = [r for r in manifest_rows("MANIFEST.tsv") if r["path"].startswith("nonfaces/")]
    assert rows
    for row in rows:
        data = image_bytes(row["path"])
        try:
            faces = rekognition.detect_faces(Image={"Bytes": data})["FaceDetails"]
        except rekognition.exceptions.InvalidParameterException as exc:
            assert "minimum" in str(exc)  # the 100x75 image is under Rekognition's 80 px minimum
            continue
        if row["path"].endswith(NONFACE_WITH_A_FACE):
            assert len(faces) == 1, "the woman behind the bar"
        else:
            assert faces == [], row["path"]


def test_landmarks_use_rekognition_left_right(rekognition):
    face = rekognition.detect_faces(Image={"Bytes": image_bytes("exif_orientation/pillow_hopper.jpg")})["FaceDetails"][
        0
    ]
    points = {p["Type"]: (p["X"], p["Y"]) for p in face["Landmarks"]}
    assert set(points) == {"eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight"}
    # Rekognition's eyeLeft / mouthLeft are on the left of the image as displayed.
    assert points["eyeLeft"][0] < points["eyeRight"][0]
    assert points["mouthLeft"][0] < points["mouthRight"][0]
    assert max(points["eyeLeft"][1], points["eyeRight"][1]) < points["nose"][1] < points["mouthLeft"][1]
    box = face["BoundingBox"]
    for x, y in points.values():
        assert box["Left"] < x < box["Left"] + box["Width"] and box["Top"] < y < box["Top"] + box["Height"]


def _iou(a, b):
    ax2, ay2 = a["Left"] + a["Width"], a["Top"] + a["Height"]
    bx2, by2 = b["Left"] + b["Width"], b["Top"] + b["Height"]
    w = max(0.0, min(ax2, bx2) - max(a["Left"], b["Left"]))
    h = max(0.0, min(ay2, by2) - max(a["Top"], b["Top"]))
    return w * h / (a["Width"] * a["Height"] + b["Width"] * b["Height"] - w * h)


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_rotated_photo_boxes_follow_the_displayed_image(rekognition, orientation):
    # Pillow's hopper_orientation_N files display exactly like hopper.jpg once EXIF is applied.
    upright = rekognition.detect_faces(Image={"Bytes": image_bytes("exif_orientation/pillow_hopper.jpg")})
    rotated = rekognition.detect_faces(
        Image={"Bytes": image_bytes(f"exif_orientation/pillow_hopper_orientation-{orientation}.jpg")}
    )
    assert "OrientationCorrection" not in rotated
    assert len(rotated["FaceDetails"]) == 1
    assert _iou(upright["FaceDetails"][0]["BoundingBox"], rotated["FaceDetails"][0]["BoundingBox"]) > 0.8


@pytest.mark.parametrize(
    "name",
    [
        "skatsubo_curie_orientation-3.jpg",
        "skatsubo_curie_orientation-6.jpg",
        "skatsubo_curie_orientation-8.jpg",
        "immich_curie_orientation-6.jpg",
    ],
)
def test_exif_rotated_curies_match_the_upright_portrait(rekognition, name):
    upright = rekognition.detect_faces(Image={"Bytes": image_bytes("groups/immich_curie_portrait.jpg")})["FaceDetails"]
    rotated = rekognition.detect_faces(Image={"Bytes": image_bytes(f"exif_orientation/{name}")})["FaceDetails"]
    assert len(rotated) == len(upright) == 2
    for face in upright:
        assert max(_iou(face["BoundingBox"], r["BoundingBox"]) for r in rotated) > 0.8


@pytest.mark.parametrize("attributes", [["DEFAULT"], ["ALL"], ["DEFAULT", "EYES_OPEN"], ["SMILE"]])
def test_attributes_parameter_accepted(rekognition, attributes):
    faces = rekognition.detect_faces(
        Image={"Bytes": image_bytes("exif_orientation/pillow_hopper.jpg")}, Attributes=attributes
    )["FaceDetails"]
    assert {"BoundingBox", "Confidence", "Landmarks", "Pose", "Quality"} <= set(faces[0])
    # Attributes no model here estimates well enough are left out, never invented (test_appearance.py).
    from test_appearance import LEFT_OUT

    assert not LEFT_OUT & set(faces[0])
