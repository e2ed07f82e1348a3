"""The ONNX conversion of face-api.js's networks against face-api's own JavaScript (issue 14).

The reference is @vladmandic/face-api 1.7.15's AgeGenderNet and FaceExpressionNet classes on
tfjs 4.22's pure-JS CPU backend under node (tests/reference: package.json and its lock, installed
with `npm ci`, which .ci/run does first and this test does when node_modules is missing). Its
weights are decoded by tfjs itself from the same manifests, so the converter's dequantisation is
checked as well as the graph. Inputs are real face crops from faces/dev, cut as the engine cuts them.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from support import ROOT, dev_people, image_bytes

from facebank import models
from facebank.engine import faceapi
from facebank.engine.image import decode

REFERENCE = ROOT / "tests" / "reference"
SOURCES = (
    "faceapi/age_gender_model-weights_manifest.json",
    "faceapi/age_gender_model.bin",
    "faceapi/face_expression_model-weights_manifest.json",
    "faceapi/face_expression_model.bin",
)
# Measured on these 34 crops: at most 2.7e-5 years (age), 1.9e-7 (gender), 1.1e-6 (expressions), what
# float32 kernels summing in another order give. Dividing the input by 256, as face-api.js did before
# the fork, already moves them to 0.065 years, 8.6e-4 and 0.010.
AGE_TOLERANCE = 1e-3  # years
PROBABILITY_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def node_reference() -> list[str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run face-api.js's own networks (the parity reference)")
    if not (REFERENCE / "node_modules" / "@vladmandic" / "face-api").is_dir():
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=REFERENCE, check=True, capture_output=True
        )
    return [node, str(REFERENCE / "faceapi_reference.cjs")]


@pytest.fixture(scope="module")
def crops(engine) -> np.ndarray:
    """The engine's face-api crop of the largest face of one photo per person (34), N x 112 x 112 x 3."""
    out = []
    for paths in dev_people().values():
        rgb = decode(image_bytes(paths[0]))
        out.append(faceapi.face_crop(rgb, engine.detect(rgb, max_faces=1)[0]))
    return np.stack(out)


@pytest.fixture(scope="module")
def engine(model_env):
    from facebank.engine import get_engine
    from facebank.settings import Settings

    settings = Settings.from_env(model_env)
    return get_engine(settings.pack, settings.resolved_model_dir, settings.ort_threads)


def test_onnx_matches_faceapi_js(node_reference, crops, engine, model_env, tmp_path):
    from facebank.settings import Settings

    model_dir = engine.model_dir  # the converted files' sources, verified, beside them in the cache
    models.fetch(SOURCES, model_dir=model_dir, mirror=Settings.from_env(model_env).model_mirror)
    crops.astype(np.float32).tofile(tmp_path / "crops.f32")  # HWC float32, as tfjs takes images
    run = subprocess.run(
        [*node_reference, str(model_dir / "faceapi"), str(tmp_path / "crops.f32"), str(len(crops))],
        capture_output=True,
        text=True,
        check=True,
    )
    reference = json.loads(run.stdout)
    assert reference["backend"] == "cpu" and reference["versions"] == {"faceapi": "1.7.15", "tfjs": "4.22.0"}

    ages = next(m for m in engine.attribute_models.models if "AGE_RANGE" in m.provides)
    expressions = next(m for m in engine.attribute_models.models if "EMOTIONS" in m.provides)
    ours = [
        (*ages.session.run(None, {"image": faceapi.to_blob(c)}), expressions.infer(faceapi.to_blob(c))) for c in crops
    ]
    age_gap = max(abs(float(age[0]) - ref) for (age, _, _), ref in zip(ours, reference["age"], strict=True))
    gender_gap = max(
        np.abs(gender[0] - ref).max() for (_, gender, _), ref in zip(ours, reference["gender"], strict=True)
    )
    expression_gap = max(
        np.abs(probabilities - ref).max()
        for (_, _, probabilities), ref in zip(ours, reference["expressions"], strict=True)
    )
    assert age_gap < AGE_TOLERANCE and gender_gap < PROBABILITY_TOLERANCE, (age_gap, gender_gap)
    assert expression_gap < PROBABILITY_TOLERANCE, expression_gap
    # The crops are real faces, not noise: the reference itself tells men from women on them.
    assert {np.argmax(g) for g in reference["gender"]} == {0, 1}
