"""The ONNX conversion of MoveNet MultiPose Lightning against tfjs running the graph model itself (issue 15).

The reference is @tensorflow/tfjs 4.22's pure-JS CPU backend under node loading the same
movenet-multipose.json + .bin with tf.loadGraphModel (tests/reference/movenet_reference.cjs;
package.json and its lock, installed with `npm ci`, which .ci/run does first and this test does when
node_modules is missing). tfjs decodes the float16 weights and runs every op of the graph, decoding
included, so the whole translation is checked: backbone, heads, peak search, top-6, boxes and
keypoints. Inputs are real frames of the shared videos, letterboxed as the engine does it.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from support import ROOT, SHARED

from facebank import models

REFERENCE = ROOT / "tests" / "reference"
MODEL = "persons/movenet_multipose_384.onnx"
SOURCES = ("persons/movenet-multipose.json", "persons/movenet-multipose.bin")
# (video, second): a frame of each clip with people, plus the car clip (no one).
FRAMES = (
    ("intel_classroom.mp4", 1.0),
    ("intel_head-pose-face-detection-female-and-male.mp4", 2.0),
    ("intel_one-by-one-person-detection.mp4", 30.0),
    ("intel_car-detection.mp4", 10.0),
)
# Measured: at most 2.3e-6 on any of the 6 x 56 outputs (normalised coordinates and scores) of these
# frames, what float32 kernels summing in another order give.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def node_reference() -> list[str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run tfjs on the graph model (the parity reference)")
    if not (REFERENCE / "node_modules" / "@tensorflow" / "tfjs").is_dir():
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=REFERENCE, check=True, capture_output=True
        )
    return [node, str(REFERENCE / "movenet_reference.cjs")]


def frame_at(path, second: float) -> np.ndarray:
    pytest.importorskip("av", reason="PyAV decodes the shared videos")
    from facebank.engine.video import sample_frames

    with open(path, "rb") as f:
        return next(sample_frames(f, 1.0, start_ms=int(second * 1000)))[1]


@pytest.fixture(scope="module")
def detector(model_env):
    from facebank.engine.persons import PersonDetector
    from facebank.settings import Settings

    settings = Settings.from_env(model_env)
    try:  # the converted file, and its sources verified beside it in the cache (the reference reads them)
        path, source, _ = models.fetch(
            [MODEL, *SOURCES], model_dir=settings.resolved_model_dir, mirror=settings.model_mirror
        )
    except models.ModelError as exc:
        pytest.skip(f"MoveNet unavailable (no mirror at {settings.model_mirror}, offline): {exc}")
    return PersonDetector(path, threads=settings.ort_threads), source


@pytest.mark.slow  # tfjs's pure-JS kernels take about 15 s a frame here
def test_onnx_matches_tfjs_graph_model(node_reference, detector, tmp_path):
    detector, source = detector
    videos = SHARED / "videos"
    if not videos.is_dir():
        pytest.skip(f"the shared videos are not at {videos} (set FACEBANK_SHARED to the shared/ folder)")
    blobs = np.concatenate([detector.preprocess(frame_at(videos / name, second))[0] for name, second in FRAMES])
    blobs.astype(np.uint8).tofile(tmp_path / "frames.u8")  # the exact int32 0..255 input tensors
    run = subprocess.run(
        [*node_reference, str(source), str(tmp_path / "frames.u8"), str(len(FRAMES)), "384"],
        capture_output=True,
        text=True,
        check=True,
    )
    reference = json.loads(run.stdout)
    assert reference["backend"] == "cpu" and reference["versions"] == {"tfjs": "4.22.0"}
    ours = np.stack([detector.infer(blob[None]) for blob in blobs])
    theirs = np.array(reference["outputs"], np.float32)
    assert ours.shape == theirs.shape == (len(FRAMES), 6, 56)
    gap = float(np.abs(ours - theirs).max())
    assert gap < TOLERANCE, gap
    # Real content, not noise: the reference itself finds people on the people clips and none on the car clip.
    people = (theirs[:, :, 55] >= detector.min_score).sum(axis=1)
    assert people.tolist() == [4, 2, 1, 0], people
