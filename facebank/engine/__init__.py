"""The face engine: decode -> detect -> align -> embed -> attributes.

One small class per model (``yunet.YuNet``, ``mobilefacenet.MobileFaceNet``); this module only
composes them into faces described the way Rekognition describes them.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field

import numpy as np

from facebank import models
from facebank.engine.align import ARCFACE_112, align
from facebank.engine.detector import FaceDetector
from facebank.engine.geometry import brightness, head_pose, sharpness
from facebank.engine.mobilefacenet import MobileFaceNet
from facebank.engine.packs import Pack, pack
from facebank.engine.yunet import YuNet

MAX_FACES = 100  # Rekognition returns at most the 100 largest faces
LANDMARK_TYPES = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")


@dataclass
class Face:
    """A detected face in pixel coordinates of the decoded image, plus measured attributes."""

    box: np.ndarray  # x1, y1, x2, y2
    landmarks: np.ndarray  # 5 x 2 in LANDMARK_TYPES order
    confidence: float  # 0..100
    pose: dict[str, float]
    quality: dict[str, float]
    image_size: tuple[int, int]  # decoded (height, width), for ratios
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def area(self) -> float:
        return float(np.prod(self.box[2:] - self.box[:2]))

    def bounding_box(self) -> dict[str, float]:
        h, w = self.image_size
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return {"Width": (x2 - x1) / w, "Height": (y2 - y1) / h, "Left": x1 / w, "Top": y1 / h}

    def detail(self) -> dict:
        """Rekognition's FaceDetail for the DEFAULT attributes."""
        h, w = self.image_size
        return {
            "BoundingBox": self.bounding_box(),
            "Landmarks": [
                {"Type": t, "X": float(x) / w, "Y": float(y) / h} for t, (x, y) in zip(LANDMARK_TYPES, self.landmarks)
            ],
            "Pose": self.pose,
            "Quality": self.quality,
            "Confidence": float(self.confidence),
        }


class FaceEngine:
    def __init__(self, model_pack: Pack):
        self.pack = model_pack
        self.detector = FaceDetector(YuNet(models.resolve(model_pack.detector)))
        self.recognizer = MobileFaceNet(models.resolve(model_pack.recognizer))

    def detect(self, rgb: np.ndarray, max_faces: int = MAX_FACES) -> list[Face]:
        """Faces sorted by bounding-box area, largest first."""
        faces = []
        for d in self.detector.detect(rgb):
            aligned = align(rgb, d.landmarks, ARCFACE_112, (112, 112))
            quality = {"Brightness": brightness(rgb, d.box), "Sharpness": sharpness(aligned)}
            faces.append(Face(d.box, d.landmarks, d.score * 100.0, head_pose(d.landmarks), quality, rgb.shape[:2]))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces[:max_faces]

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        if face.embedding is None:
            face.embedding = self.recognizer.embed(rgb, face.landmarks)
        return face.embedding

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        return self.pack.calibration.similarity(float(np.dot(a, b)))


_lock = threading.Lock()


@functools.cache
def _engine(name: str) -> FaceEngine:
    return FaceEngine(pack(name))


def get_engine(name: str | None = None) -> FaceEngine:
    """The process-wide engine for a pack: models load once, on first use."""
    with _lock:
        return _engine(pack(name).name)
