"""face-api.js's AgeGenderNet and FaceExpressionNet: AgeRange, Gender and Emotions.

MIT-licensed networks (face-api.js by Vincent Mühler, weights of @vladmandic/face-api 1.7.15),
converted to ONNX at fetch time (``faceapi_convert.py``). Their training data carries research-use
terms: AgeGenderNet was trained on UTK, FG-NET, ChaLearn, WIKI, IMDB, CACD, MegaAge and MegaAge-Asian,
FaceExpressionNet on public datasets and web images (face-api's README and tutorial).

Both take the crop face-api's own pipeline gives them (``detectAllFaces().withFaceLandmarks()``):
the box of its 68 landmarks grown by 20 % of its width and height, padded to a square with black
(``padToSquare``, centred), resized to 112 x 112. On faces/dev that box is, in units of YuNet's
longer box side, ``CROP_WIDTH`` wide, ``CROP_HEIGHT`` high and centred ``CROP_SHIFT`` below YuNet's
box centre (MediaPipe mesh points at the 68 landmarks' places, medians over the 228 images;
``bench/attributes.py --fit``), so the same crop is cut here from the detector box, rotated so the
eyes are level (face-api crops upright boxes: levelling only helps tilted heads).

The numbers that turn the networks' outputs into Rekognition's members (``AGE_INTERVAL``,
``EXPRESSION_TEMPERATURE``) are fitted by ``python bench/attributes.py --fit``; how well they hold is
in docs/faces.md ("Attribute accuracy").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facebank.engine.mesh import crop_matrix, warp_crop
from facebank.engine.onnx import session

if TYPE_CHECKING:
    from facebank.engine import Face

SIZE = 112  # face-api's toBatchTensor(112)
CROP_WIDTH = 0.92  # face-api's crop, / the longer side of YuNet's box
CROP_HEIGHT = 0.89
CROP_SHIFT = 0.12  # crop centre below the box centre, along the face's vertical, / longer side

# AgeRange = the estimate plus these offsets (years), rounded: the 7.5th and 92.5th percentiles of
# (true age - estimate) on the faces/dev photos with a known age (85 % nominal coverage; adults
# 18-70). Below AGE_ADULT the offsets shrink in proportion to the estimate: errors in years grow
# through childhood (Rekognition's own example: 4-6 for a five-year-old), while among the adults
# here they did not grow with age (an interval proportional to age was measured too: wider for
# the same coverage, docs/faces.md).
AGE_INTERVAL = (-10.9, 10.9)
AGE_ADULT = 20.0
# The expression softmax is sharpened or softened by this temperature so that HAPPY's Confidence
# matches how often faces so scored are labelled smiling (tests/data/attribute_labels.tsv).
EXPRESSION_TEMPERATURE = 2.57
# face-api's expressions (faceapi_convert.EXPRESSIONS order) as Rekognition's EmotionName. CONFUSED
# and UNKNOWN have no counterpart among the network's outputs and are left out.
EMOTIONS = ("CALM", "HAPPY", "SAD", "ANGRY", "FEAR", "DISGUSTED", "SURPRISED")


def face_crop(rgb: np.ndarray, face: Face) -> np.ndarray:
    """The 112 x 112 RGB uint8 crop face-api's networks take, from the detector's box and eyes."""
    (left_x, left_y), (right_x, right_y) = face.landmarks[:2]
    angle = math.atan2(right_y - left_y, right_x - left_x)
    long_side = float(np.max(face.box[2:] - face.box[:2]))
    down = np.array([-math.sin(angle), math.cos(angle)])  # the face's vertical in the image
    center = (face.box[:2] + face.box[2:]) / 2 + CROP_SHIFT * long_side * down
    side = max(CROP_WIDTH, CROP_HEIGHT) * long_side
    crop = warp_crop(rgb, crop_matrix(center, side, angle, SIZE), SIZE).copy()
    # padToSquare: the shorter side of face-api's box is filled out with black, equally on both sides
    bar = round((1 - min(CROP_WIDTH, CROP_HEIGHT) / max(CROP_WIDTH, CROP_HEIGHT)) * SIZE / 2)
    if bar:
        if CROP_HEIGHT < CROP_WIDTH:
            crop[:bar], crop[SIZE - bar :] = 0, 0
        else:
            crop[:, :bar], crop[:, SIZE - bar :] = 0, 0
    return crop


def to_blob(crop: np.ndarray) -> np.ndarray:
    """[1, 3, 112, 112] float32 RGB 0..255: the graphs subtract face-api's mean and scale themselves."""
    return crop.astype(np.float32).transpose(2, 0, 1)[None]


def age_range(age: float, interval: tuple[float, float] = AGE_INTERVAL) -> dict[str, int]:
    """Rekognition's AgeRange {Low, High} (whole years) around an age estimate."""
    scale = min(max(age, 0.0), AGE_ADULT) / AGE_ADULT
    low, high = (max(0, round(age + offset * scale)) for offset in interval)
    return {"Low": low, "High": max(high, low)}


def emotions(probabilities: np.ndarray, temperature: float = EXPRESSION_TEMPERATURE) -> list[dict[str, Any]]:
    """Rekognition's Emotions, most confident first: the network's softmax at ``temperature``, x 100."""
    logits = np.log(np.maximum(probabilities.astype(np.float64), 1e-30)) / temperature
    tempered = np.exp(logits - logits.max())
    tempered /= tempered.sum()
    ranked = sorted(zip(EMOTIONS, tempered, strict=True), key=lambda item: -item[1])
    return [{"Type": name, "Confidence": float(100.0 * p)} for name, p in ranked]


class AgeGenderNet:
    """AgeRange and Gender (face-api's AgeGenderNet: an age regression and a male/female softmax)."""

    provides = frozenset({"AGE_RANGE", "GENDER"})

    def __init__(self, path: Path, threads: int = 1):
        self.session = session(path, threads)

    def preprocess(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        return to_blob(face_crop(rgb, face))

    def infer(self, blob: np.ndarray) -> tuple[float, float]:
        """(age in years, P(male))."""
        age, gender = self.session.run(None, {"image": blob})
        return float(age[0]), float(gender[0, 0])

    def postprocess(self, age: float, p_male: float) -> dict[str, Any]:
        gender = {"Value": "Male" if p_male >= 0.5 else "Female", "Confidence": 100.0 * max(p_male, 1.0 - p_male)}
        return {"AgeRange": age_range(age), "Gender": gender}

    def estimate(self, rgb: np.ndarray, face: Face) -> dict[str, Any]:
        return self.postprocess(*self.infer(self.preprocess(rgb, face)))


class FaceExpressionNet:
    """Emotions (face-api's FaceExpressionNet: a 7-way expression softmax)."""

    provides = frozenset({"EMOTIONS"})

    def __init__(self, path: Path, threads: int = 1):
        self.session = session(path, threads)

    def preprocess(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        return to_blob(face_crop(rgb, face))

    def infer(self, blob: np.ndarray) -> np.ndarray:
        """The 7 expression probabilities, in faceapi_convert.EXPRESSIONS order."""
        return self.session.run(None, {"image": blob})[0][0]

    def postprocess(self, probabilities: np.ndarray) -> dict[str, Any]:
        return {"Emotions": emotions(probabilities)}

    def estimate(self, rgb: np.ndarray, face: Face) -> dict[str, Any]:
        return self.postprocess(self.infer(self.preprocess(rgb, face)))
