"""MoveNet MultiPose Lightning: whole-body person boxes, scores and 17 keypoints.

Google's MoveNet (Apache-2.0 per TF Hub; trained on COCO and a Google-internal set, per its model
card), converted from its tfjs graph model at fetch time (``movenet_convert.py``) with the input
fixed at 384 x 384 (``movenet_convert.INPUT_SIZE``). The graph does its own decoding (person centres by peak search, up
to six people, boxes and keypoints), so postprocessing here only maps its normalised coordinates
back to the frame's pixels and keeps people above ``min_score``.

A frame is letterboxed: scaled so its longer side is the model's input size (bilinear) and centred on a
black square, so MoveNet sees people undistorted whatever the aspect ratio. Centred rather than at
the top left, and not stretched to the square, because that is what separates people from
everything else best on the shared videos (bench/persons.py: the lowest score of a real person vs
the highest of anything else, 0.266 vs 0.216 centred, 0.248 vs 0.223 top left, 0.160 vs 0.263
stretched).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebank.engine.onnx import session
from facebank.engine.packs import PERSON_DETECTOR

MODEL = PERSON_DETECTOR  # its manifest path
MAX_PEOPLE = 6  # the graph's top-k
KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)  # COCO's order, the graph's
# The person score from which a detection is a person: midway between the lowest score of a real
# person (0.266, a seated student in the classroom clip) and the highest of anything else (0.216, on
# the car clip) over the five shared videos at 5 fps (bench/persons.py --sweep; docs/models.md).
MIN_SCORE = 0.24


@dataclass(frozen=True)
class Person:
    box: np.ndarray  # x1, y1, x2, y2 in pixels of the frame passed in
    score: float  # 0..1, MoveNet's person score
    keypoints: np.ndarray  # 17 x 3: x, y (pixels) and score 0..1, in KEYPOINTS order


@dataclass(frozen=True)
class Letterbox:
    scale: float  # frame pixels x scale + offset = input pixels
    offset_x: int
    offset_y: int
    width: int  # of the frame
    height: int


class PersonDetector:
    """Person boxes, scores and keypoints of one RGB frame (MoveNet MultiPose Lightning)."""

    def __init__(self, path: Path, threads: int = 1, min_score: float = MIN_SCORE):
        self.session = session(path, threads)
        self.min_score = min_score
        self.size = int(self.session.get_inputs()[0].shape[1])  # the square the file was converted at

    def preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        from PIL import Image  # only a frame to scale pays for Pillow

        height, width = rgb.shape[:2]
        scale = self.size / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        scaled = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        blob = np.zeros((1, self.size, self.size, 3), np.int32)
        left, top = (self.size - size[0]) // 2, (self.size - size[1]) // 2
        blob[0, top : top + size[1], left : left + size[0]] = scaled
        return blob, Letterbox(scale, left, top, width, height)

    def infer(self, blob: np.ndarray) -> np.ndarray:
        """The graph's output for one frame: 6 x 56 (17 x (y, x, score), ymin, xmin, ymax, xmax, score)."""
        (out,) = self.session.run(None, {"input": blob})
        return out[0]

    def postprocess(self, raw: np.ndarray, letterbox: Letterbox) -> list[Person]:
        offset = np.array([letterbox.offset_x, letterbox.offset_y], np.float32)
        limits = np.array([letterbox.width, letterbox.height] * 2, np.float32)

        def to_pixels(xy: np.ndarray) -> np.ndarray:  # N x 2 normalised (x, y) -> frame pixels
            return (xy * self.size - offset) / letterbox.scale

        people = []
        for row in raw[np.argsort(-raw[:, 55], kind="stable")]:
            score = float(row[55])
            if score < self.min_score:
                break
            ymin, xmin, ymax, xmax = row[51:55]
            corners = to_pixels(np.array([[xmin, ymin], [xmax, ymax]], np.float32))
            box = np.clip(corners.reshape(4), 0, limits)
            points = row[:51].reshape(17, 3)
            keypoints = np.concatenate([to_pixels(points[:, 1::-1]), points[:, 2:]], axis=1)
            people.append(Person(box, score, keypoints.astype(np.float32)))
        return people

    def detect(self, rgb: np.ndarray) -> list[Person]:
        blob, letterbox = self.preprocess(rgb)
        return self.postprocess(self.infer(blob), letterbox)
