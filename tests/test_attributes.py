"""Face attributes (issue 7): the API shape through boto3, and geometric checks on real photos.

The photos are the hand-labelled faces of tests/data/attribute_labels.tsv (in ../shared/faces);
tests skip with the reason when the photos or the models are absent.
"""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest
from PIL import Image
from support import ROOT, image_bytes, require_faces

from facebank.engine import attributes as fa
from facebank.engine.geometry import fit_similarity, pose_angles, pose_rotation
from facebank.engine.image import decode

LABELS = ROOT / "tests" / "data" / "attribute_labels.tsv"
# Eyeglasses, Sunglasses, Beard, Mustache, FaceOccluded are tests/test_appearance.py's; AgeRange,
# Gender and Emotions tests/test_age_gender_emotions.py's.
from test_appearance import LEFT_OUT as UNMEASURED  # noqa: E402  (the heads that missed their target)


def labels() -> list[dict[str, str]]:
    lines = [line for line in LABELS.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def labelled(engine, rgb: np.ndarray, x: float, y: float):
    """The face (detected with ALL) whose box centre is nearest (x, y), ratios of the image."""
    target = np.array([x * rgb.shape[1], y * rgb.shape[0]])
    faces = engine.detect(rgb, attributes=["ALL"])
    return min(faces, key=lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - target))


def points(detail: dict) -> dict[str, np.ndarray]:
    return {p["Type"]: np.array([p["X"], p["Y"]]) for p in detail["Landmarks"]}


def mirrored(name: str) -> str:
    """The landmark type at the mirrored place: eyeLeft <-> eyeRight, leftEyeBrowLeft <-> rightEyeBrowRight."""
    swap = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}
    return re.sub("left|right|Left|Right", lambda m: swap[m.group()], name)


@pytest.fixture(scope="module")
def engine(model_env):
    from facebank.engine import get_engine
    from facebank.settings import Settings

    settings = Settings.from_env(model_env)
    return get_engine(settings.pack, settings.resolved_model_dir, settings.ort_threads)


@pytest.fixture(scope="module")
def labelled_faces(engine):
    """Every labelled face, detected with ALL: (rgb, label row, Face)."""
    faces = require_faces()
    out = []
    for row in labels():
        rgb = decode((faces / row["path"]).read_bytes())
        out.append((rgb, row, labelled(engine, rgb, float(row["x"]), float(row["y"]))))
    return out


@pytest.fixture(scope="module")
def clear_faces(labelled_faces):
    """Faces with open eyes, nothing over them, at least 80 px wide and within 25 degrees of frontal
    (turned further, the far eye and cheek leave the picture)."""
    out = [
        (rgb, row, face)
        for rgb, row, face in labelled_faces
        if row["eyes_open"] == "1"
        and row["occluded"] == "0"
        and face.box[2] - face.box[0] >= 80
        and abs(face.pose["Yaw"]) <= 25
        and abs(face.pose["Pitch"]) <= 25
    ]
    assert len(out) >= 20
    return out


# --- the API ------------------------------------------------------------------------------------


def test_all_through_boto3(rekognition):
    photo = {"Bytes": image_bytes("dev/deepface_angelina/1.jpg")}
    face = rekognition.detect_faces(Image=photo, Attributes=["ALL"])["FaceDetails"][0]
    assert list(face) == [k for k in fa.FACE_DETAIL if k in face]  # Rekognition's key order
    assert set(face) == set(fa.FACE_DETAIL) - UNMEASURED  # nothing invented
    assert [p["Type"] for p in face["Landmarks"]] == list(fa.LANDMARK_TYPES)
    assert len(fa.LANDMARK_TYPES) == 30
    for name in ("EyesOpen", "MouthOpen", "Smile"):
        assert isinstance(face[name]["Value"], bool) and 50 <= face[name]["Confidence"] <= 100
    assert face["EyesOpen"]["Value"] and face["MouthOpen"]["Value"] and face["Smile"]["Value"]  # a broad smile
    assert set(face["EyeDirection"]) == {"Yaw", "Pitch", "Confidence"}
    assert abs(face["EyeDirection"]["Yaw"]) < 15 and abs(face["EyeDirection"]["Pitch"]) < 15  # looks at the camera


def test_default_and_named_attributes_through_boto3(rekognition):
    photo = {"Bytes": image_bytes("dev/deepface_angelina/1.jpg")}
    default = rekognition.detect_faces(Image=photo)["FaceDetails"][0]
    assert list(default) == ["BoundingBox", "Landmarks", "Pose", "Quality", "Confidence"]
    assert len(default["Landmarks"]) == 5
    smile = rekognition.detect_faces(Image=photo, Attributes=["SMILE"])["FaceDetails"][0]
    assert set(smile) == {"BoundingBox", "Smile", "Landmarks", "Pose", "Quality", "Confidence"}
    occluded = rekognition.detect_faces(Image=photo, Attributes=["DEFAULT", "FACE_OCCLUDED", "BEARD"])
    assert list(occluded["FaceDetails"][0]) == list(default)  # no model for these: left out, not invented


def test_default_does_not_run_the_mesh(engine, monkeypatch):
    def fail(*args):
        raise AssertionError("DEFAULT must stay cheap")

    monkeypatch.setattr(engine.attribute_models, "measure", fail)
    rgb = decode(image_bytes("dev/deepface_angelina/1.jpg"))
    assert engine.detect(rgb) and engine.detect(rgb, attributes=["DEFAULT", "GENDER"])


# --- geometry -----------------------------------------------------------------------------------


def test_pose_angles_round_trip_and_fit():
    rng = np.random.default_rng(7)
    model = rng.normal(size=(50, 3))
    for roll, yaw, pitch in [(10, 20, -15), (-30, 45, 10), (0, -60, 30)]:
        rotation = pose_rotation(roll, yaw, pitch)
        assert pose_angles(rotation) == pytest.approx({"Roll": roll, "Yaw": yaw, "Pitch": pitch})
        scale, fitted, shift = fit_similarity(model, 3.0 * model @ rotation.T + [5, -2, 1])
        assert scale == pytest.approx(3.0) and fitted == pytest.approx(rotation) and shift == pytest.approx([5, -2, 1])
    # Signs: Yaw > 0 turns the nose (model -z) to the image right, Pitch > 0 up, Roll > 0 clockwise.
    assert -pose_rotation(0, 30, 0)[0, 2] > 0 and -pose_rotation(0, 0, 30)[1, 2] < 0
    assert pose_rotation(30, 0, 0)[1, 0] > 0


def test_mirror_flips_yaw_and_roll_and_swaps_left_right(engine, clear_faces):
    for rgb, row, face in clear_faces:
        detail = face.detail()
        flipped = labelled(engine, np.ascontiguousarray(rgb[:, ::-1]), 1 - float(row["x"]), float(row["y"])).detail()
        pose, pose_m = detail["Pose"], flipped["Pose"]
        assert abs(pose["Yaw"] + pose_m["Yaw"]) < 5 and abs(pose["Roll"] + pose_m["Roll"]) < 5, row["path"]
        assert abs(pose["Pitch"] - pose_m["Pitch"]) < 5, row["path"]
        assert abs(detail["EyeDirection"]["Yaw"] + flipped["EyeDirection"]["Yaw"]) < 10, row["path"]
        p, q = points(detail), points(flipped)
        iod = np.linalg.norm(p["eyeLeft"] - p["eyeRight"])
        errors = [np.linalg.norm(p[t] - [1 - q[mirrored(t)][0], q[mirrored(t)][1]]) / iod for t in p]
        assert np.mean(errors) < 0.06 and max(errors) < 0.2, row["path"]


def test_rotating_the_image_20_degrees_adds_20_to_roll(engine, clear_faces):
    for rgb, row, face in clear_faces:
        turned = np.asarray(Image.fromarray(rgb).rotate(-20, Image.Resampling.BILINEAR, expand=True))  # clockwise
        h, w = rgb.shape[:2]
        centre = np.array([float(row["x"]) * w, float(row["y"]) * h]) - [w / 2, h / 2]
        c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
        x, y = np.array([[c, -s], [s, c]]) @ centre + [turned.shape[1] / 2, turned.shape[0] / 2]
        roll = labelled(engine, turned, x / turned.shape[1], y / turned.shape[0]).pose["Roll"]
        assert abs(roll - face.pose["Roll"] - 20) <= 5, row["path"]


def test_landmarks_lie_in_the_grown_box_and_pupils_between_eye_corners(clear_faces):
    for rgb, row, face in clear_faces:
        h, w = rgb.shape[:2]
        p = {t: xy * [w, h] for t, xy in points(face.detail()).items()}
        size = face.box[2:] - face.box[:2]
        grown = np.concatenate([face.box[:2] - 0.15 * size, face.box[2:] + 0.15 * size])
        for t, xy in p.items():
            assert (grown[:2] <= xy).all() and (xy <= grown[2:]).all(), (row["path"], t)
        for side in ("left", "right"):
            a, b, pupil = p[f"{side}EyeLeft"], p[f"{side}EyeRight"], p[f"{side}Pupil"]
            along = np.dot(pupil - a, b - a) / np.dot(b - a, b - a)  # 0 at one corner, 1 at the other
            assert 0.15 < along < 0.85, (row["path"], side)


def test_eye_direction_of_camera_facing_faces_follows_the_head(labelled_faces):
    """Faces labelled as looking at the camera, with the head within 10 degrees of frontal."""
    gaps = []
    for _, row, face in labelled_faces:
        pose, eyes = face.pose, face.attributes["EyeDirection"]
        if row["gaze"] == "S" and abs(pose["Yaw"]) <= 10 and abs(pose["Pitch"]) <= 10:
            gaps.append(max(abs(eyes["Yaw"] - pose["Yaw"]), abs(eyes["Pitch"] - pose["Pitch"])))
    assert len(gaps) >= 12
    assert np.mean(np.array(gaps) <= 15) >= 0.9 and max(gaps) <= 20, gaps


def test_stable_under_jpeg_reencoding(engine, clear_faces):
    for rgb, row, face in clear_faces:
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, "JPEG", quality=75)
        again = labelled(engine, decode(buffer.getvalue()), float(row["x"]), float(row["y"])).detail()
        detail = face.detail()
        assert all(abs(detail["Pose"][k] - again["Pose"][k]) < 4 for k in detail["Pose"]), row["path"]
        assert all(abs(detail["EyeDirection"][k] - again["EyeDirection"][k]) < 8 for k in ("Yaw", "Pitch")), row["path"]
        p, q = points(detail), points(again)
        iod = np.linalg.norm(p["eyeLeft"] - p["eyeRight"])
        assert max(np.linalg.norm(p[t] - q[t]) for t in p) / iod < 0.1, row["path"]
        for name in ("EyesOpen", "MouthOpen", "Smile"):
            if detail[name]["Confidence"] >= 80:  # a confident answer survives re-encoding
                assert again[name]["Value"] == detail[name]["Value"], (row["path"], name)


def test_accuracy_on_the_labelled_faces(labelled_faces):
    """Regression floors a few points under bench/attributes.py's figures (README "Attributes")."""
    columns = {"EyesOpen": "eyes_open", "MouthOpen": "mouth_open", "Smile": "smile"}
    accuracy = {
        name: np.mean(
            [
                face.attributes[name]["Value"] == (row[column] == "1")
                for _, row, face in labelled_faces
                if row[column] in ("0", "1")
            ]
        )
        for name, column in columns.items()
    }
    assert accuracy["EyesOpen"] >= 0.9 and accuracy["MouthOpen"] >= 0.83 and accuracy["Smile"] >= 0.87, accuracy
