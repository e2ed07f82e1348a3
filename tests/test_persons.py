"""The person detector (engine/persons.py, MoveNet MultiPose Lightning) on the shared videos (issue 15).

Per-frame person counts at 5 fps against the hand labels in tests/data/video_person_labels.tsv
(from ../shared/videos/MANIFEST.tsv), as bench/persons.py measures them: every person in view found
and nothing else, on all five clips. Tests skip when the shared videos or PyAV are absent.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from support import ROOT, SHARED

from facebank import models

MODEL = "persons/movenet_multipose_384.onnx"
SOURCES = ("persons/movenet-multipose.json", "persons/movenet-multipose.bin")
VIDEOS = SHARED / "videos"
LABELS = ROOT / "tests" / "data" / "video_person_labels.tsv"
FPS = 5.0


def _require_videos() -> None:
    if not VIDEOS.is_dir():
        pytest.skip(f"the shared videos are not at {VIDEOS} (set FACEBANK_SHARED to the shared/ folder)")


def sampled_frames(name: str, fps: float = FPS):
    """(seconds, RGB frame) of the clip as a video job samples it (engine.video.sample_frames)."""
    pytest.importorskip("av", reason="PyAV decodes the shared videos")
    from facebank.engine.video import sample_frames

    with open(VIDEOS / name, "rb") as f:
        for timestamp, rgb in sample_frames(f, fps):
            yield timestamp / 1000, rgb


def people_in_view(name: str, t: float) -> int | None:
    """The labelled number of people at ``t`` s, None within a label's uncertainty of a span's ends."""
    with open(LABELS) as f:
        rows = [
            r for r in csv.DictReader((x for x in f if not x.startswith("#")), delimiter="\t") if r["video"] == name
        ]
    assert rows, name
    spans = [(float(r["start_s"]), float(r["end_s"]), int(r["people"]), float(r["uncertain_s"])) for r in rows]
    if any(min(abs(t - start), abs(t - end)) < margin for start, end, _, margin in spans):
        return None
    return next((n for start, end, n, _ in spans if start <= t < end), 0)


@pytest.fixture(scope="module")
def detector(model_env):
    from facebank.engine.persons import PersonDetector
    from facebank.settings import Settings

    settings = Settings.from_env(model_env)
    try:
        path = models.fetch([MODEL], model_dir=settings.resolved_model_dir, mirror=settings.model_mirror)[0]
    except models.ModelError as exc:
        pytest.skip(f"MoveNet unavailable (no mirror at {settings.model_mirror}, offline): {exc}")
    return PersonDetector(path, threads=settings.ort_threads)


def test_movenet_is_converted_at_fetch_and_pinned(tmp_path, model_env) -> None:
    from pathlib import Path

    from facebank.settings import Settings

    configured = Settings.from_env(model_env).model_mirror
    mirror = Path(configured) if configured else None
    if mirror is None or not all((mirror / s).is_file() for s in SOURCES):
        pytest.skip(f"the tfjs MoveNet files are not in the model mirror {mirror}")
    entry = models.manifest()[MODEL]
    assert entry.url == "convert:movenet-multipose" and "Apache-2.0" in entry.license
    # The mirror holds only the tfjs files: the ONNX file is made from them, then verified against its pin.
    assert models.fetch([MODEL], model_dir=tmp_path, mirror=mirror) == [tmp_path / MODEL]
    assert models.sha256_of(tmp_path / MODEL) == entry.sha256
    assert all(models.sha256_of(tmp_path / s) == models.manifest()[s].sha256 for s in SOURCES)  # fetched first

    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / MODEL), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("input", [1, 384, 384, 3])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("output", [1, 6, 56])]


def test_person_boxes_and_keypoints_are_in_frame_pixels(detector) -> None:
    """One signer facing the camera (asl clip, 640 x 480, letterboxed with bars above and below): the
    box lies in the frame, its keypoints inside it, and the face keypoints at the top of the body."""
    _require_videos()
    t, rgb = next(sampled_frames("intel_asl-book.mp4"))
    (person,) = detector.detect(rgb)
    x1, y1, x2, y2 = person.box
    assert 0 <= x1 < x2 <= rgb.shape[1] and 0 <= y1 < y2 <= rgb.shape[0]
    assert (x2 - x1) * (y2 - y1) > 0.1 * rgb.shape[0] * rgb.shape[1]  # a person near the camera
    assert person.keypoints.shape == (17, 3)
    visible = person.keypoints[person.keypoints[:, 2] > 0.3]
    assert len(visible) >= 5
    margin = 0.1 * max(x2 - x1, y2 - y1)
    assert np.all((visible[:, 0] >= x1 - margin) & (visible[:, 0] <= x2 + margin))
    assert np.all((visible[:, 1] >= y1 - margin) & (visible[:, 1] <= y2 + margin))
    nose, left_hip = person.keypoints[0], person.keypoints[11]
    assert nose[1] < y1 + 0.5 * (y2 - y1)  # the head is in the upper half of the box
    if left_hip[2] > 0.3:
        assert nose[1] < left_hip[1]


@pytest.mark.slow  # about 700 frames through the detector
@pytest.mark.parametrize(
    "video",
    [
        "intel_one-by-one-person-detection.mp4",
        "intel_classroom.mp4",
        "intel_head-pose-face-detection-female-and-male.mp4",
        "intel_car-detection.mp4",
        "intel_asl-book.mp4",
    ],
)
def test_per_frame_person_counts_match_the_labels(detector, video) -> None:
    """Every person in view found and nothing else, frame by frame (bench/persons.py measures 1.000
    recall and precision on all five clips; one missed or extra person in any frame fails here)."""
    _require_videos()
    scored = wrong = 0
    for t, rgb in sampled_frames(video):
        expected = people_in_view(video, t)
        if expected is None:
            continue
        scored += 1
        found = detector.detect(rgb)
        wrong += len(found) != expected
        for person in found:  # every reported box is a real region of the frame
            assert 0 <= person.box[0] < person.box[2] <= rgb.shape[1]
            assert 0 <= person.box[1] < person.box[3] <= rgb.shape[0]
    assert scored >= 14, scored
    assert wrong == 0, f"{wrong} of {scored} frames with the wrong number of people"


def test_the_converter_refuses_what_it_cannot_translate(model_env) -> None:
    """An op it does not know, or an input size MoveNet cannot take, is an error naming it, never
    a silently different graph."""
    import json
    from pathlib import Path

    from facebank.convert import movenet as movenet_convert
    from facebank.settings import Settings

    configured = Settings.from_env(model_env).model_mirror
    source = Path(configured or "/nonexistent") / SOURCES[0]
    if not source.is_file():
        pytest.skip(f"the tfjs MoveNet files are not in the model mirror {configured}")
    model = json.loads(source.read_text())
    weights = movenet_convert.read_weights(model["weightsManifest"], source.parent)
    with pytest.raises(ValueError, match="multiple of 32"):
        movenet_convert.movenet_graph(model, weights, size=300)
    sigmoid = next(n for n in model["modelTopology"]["node"] if n["op"] == "Sigmoid")
    sigmoid["op"] = "Softsign"
    with pytest.raises(ValueError, match=f"{sigmoid['name']}: TensorFlow op Softsign is not supported"):
        movenet_convert.movenet_graph(model, weights)
