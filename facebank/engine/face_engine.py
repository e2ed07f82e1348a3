"""The face engine: one small class per model (``yunet.YuNet``, ``mobilefacenet.MobileFaceNet``, ...);
this module only composes them into faces described the way Rekognition describes them.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facebank import models
from facebank.engine import attributes as face_attributes
from facebank.engine.align import ARCFACE_112, align
from facebank.engine.detector import FaceDetector
from facebank.engine.dlib_resnet import DlibResNet
from facebank.engine.geometry import brightness, fit_similarity, head_pose, pose_angles, sharpness
from facebank.engine.mesh import FaceMesh, upright_angle
from facebank.engine.mobilefacenet import MobileFaceNet
from facebank.engine.packs import MESH_FILES, Pack, pack
from facebank.engine.yunet import YuNet

MAX_FACES = 100  # Rekognition returns at most the 100 largest faces
# Pose: the mesh is cropped upright by the detector's points, then again by its own Roll while that
# differs by more than POSE_SETTLED degrees (YuNet's points follow a face turned by 30 degrees only
# about a third of the way; the mesh sees the rest), at most POSE_PASSES times.
POSE_PASSES, POSE_SETTLED = 3, 8.0
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
    # Measured only when attributes beyond DEFAULT are requested (FaceEngine.attribute_models):
    dense_landmarks: np.ndarray | None = field(default=None, repr=False)  # 30 x 2, attributes.LANDMARK_TYPES
    mesh: np.ndarray | None = field(default=None, repr=False)  # 468 x 3 Face Mesh points, measured with Pose
    attributes: dict[str, Any] = field(default_factory=dict)  # FaceDetail members, e.g. "Smile"

    @property
    def visible_area(self) -> float:
        """Area of the box clipped to the image, in pixels."""
        h, w = self.image_size
        x1, y1, x2, y2 = np.clip(self.box, 0, [w, h, w, h])
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))

    @property
    def prominence(self) -> float:
        """How large a face is when the API takes "the largest" (and orders faces): its visible box
        area times the share of its box that is visible. A neighbour cut off at the image edge has a
        box running outside the image that out-measured the whole face in the middle (17 of 774 LFW
        photos of fold 1); counted by visible area it still won in 8 of 1,732 LFW and faces/dev
        photos, by this measure in 2 (docs/models.md, "Which face is the largest")."""
        full = float(np.prod(self.box[2:] - self.box[:2]))
        return self.visible_area**2 / full if full > 0 else 0.0

    def bounding_box(self) -> dict[str, float]:
        h, w = self.image_size
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return {"Width": (x2 - x1) / w, "Height": (y2 - y1) / h, "Left": x1 / w, "Top": y1 / h}

    def detail(self) -> dict:
        """Rekognition's FaceDetail: the DEFAULT members plus every attribute measured, in its key order."""
        h, w = self.image_size
        types: tuple[str, ...] = LANDMARK_TYPES
        points = self.landmarks
        if self.dense_landmarks is not None:
            types, points = face_attributes.LANDMARK_TYPES, self.dense_landmarks
        members = {
            "BoundingBox": self.bounding_box(),
            "Landmarks": [
                {"Type": t, "X": float(x) / w, "Y": float(y) / h} for t, (x, y) in zip(types, points, strict=True)
            ],
            "Pose": self.pose,
            "Quality": self.quality,
            "Confidence": float(self.confidence),
            **self.attributes,
        }
        return {k: members[k] for k in face_attributes.FACE_DETAIL if k in members}


class RecognizerModel(Protocol):
    """What FaceEngine needs of a recogniser (dlib_resnet.DlibResNet, mobilefacenet.MobileFaceNet)."""

    dimension: int

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray: ...  # unit vector


# packs.Recognizer.kind -> class, called with the pack's files (in Recognizer.files order) and threads=
RECOGNIZERS: dict[str, Callable[..., RecognizerModel]] = {"dlib-resnet": DlibResNet, "mobilefacenet": MobileFaceNet}


class FaceEngine:
    """A pack's models over the verified files in ``model_dir``, each inference on ``ort_threads``."""

    def __init__(self, model_pack: Pack, model_dir: Path, ort_threads: int = 1):
        self.pack = model_pack
        self.model_dir = model_dir
        self.ort_threads = ort_threads
        self.detector = FaceDetector(YuNet(self._resolve(model_pack.detector), ort_threads))

    def _resolve(self, name: str) -> Path:
        return models.resolve(name, self.model_dir)

    # Recognisers and attribute models load on first use, so a process that only detects (a
    # DetectFaces Lambda) never pays for them at cold start. A race loads one twice, harmlessly.
    @functools.cached_property
    def recognizers(self) -> list[tuple[RecognizerModel, float]]:
        """(recogniser, sqrt(weight)) pairs: see packs.Recognizer.weight."""
        return [
            (RECOGNIZERS[r.kind](*(self._resolve(f) for f in r.files), threads=self.ort_threads), math.sqrt(r.weight))
            for r in self.pack.recognizers
        ]

    @functools.cached_property
    def pose_model(self) -> tuple[FaceMesh, np.ndarray] | None:
        """Face Mesh and MediaPipe's canonical face, which give every face its Pose; None when the
        pack has no mesh (Pose then comes from the five detector points, ``geometry.head_pose``)."""
        if not set(MESH_FILES) <= set(self.pack.attributes):
            return None
        mesh, _, canonical = (self._resolve(f) for f in MESH_FILES)
        return FaceMesh(mesh, self.ort_threads), face_attributes.canonical_face(canonical)

    def pose(self, rgb: np.ndarray, face: Face) -> dict[str, float]:
        """One Pose per face, whatever the Attributes asked for: the canonical 3-D face fitted to the
        face's mesh (kept in ``face.mesh`` for the attributes measured on it). Five points cannot
        carry a 3-D pose: fitted to them, a profile face came out at Roll 164 for an upright head."""
        if self.pose_model is None:
            return head_pose(face.landmarks)
        model, canonical = self.pose_model
        angle = upright_angle(face.landmarks)
        for _ in range(POSE_PASSES):
            face.mesh = model.run(rgb, face.box, face.landmarks, angle).points
            pose = pose_angles(fit_similarity(canonical, face.mesh)[1])
            if abs(math.remainder(math.radians(pose["Roll"]) - angle, math.tau)) < math.radians(POSE_SETTLED):
                break
            angle = math.radians(pose["Roll"])  # YuNet's points lag a turned face: crop it upright and look again
        return pose

    @functools.cached_property
    def attribute_models(self) -> face_attributes.FaceAttributes | None:
        return face_attributes.load(self.pack.attributes, self._resolve, self.ort_threads)

    def detect(
        self, rgb: np.ndarray, max_faces: int = MAX_FACES, attributes: Iterable[str] = ("DEFAULT",)
    ) -> list[Face]:
        """Faces sorted by ``Face.prominence`` (visible box area, less for a face cut by the edge),
        largest first, each with its Pose (``pose``) and the requested botocore ``Attribute``s
        (DEFAULT, ALL or names such as SMILE) measured; those no model here can give are left out."""
        faces = []
        for d in self.detector.detect(rgb):
            aligned = align(rgb, d.landmarks, ARCFACE_112, (112, 112))
            quality = {"Brightness": brightness(rgb, d.box), "Sharpness": sharpness(aligned)}
            faces.append(Face(d.box, d.landmarks, d.score * 100.0, {}, quality, rgb.shape[:2]))
        faces.sort(key=lambda f: f.prominence, reverse=True)
        faces = faces[:max_faces]
        for face in faces:
            face.pose = self.pose(rgb, face)
        self.describe(rgb, faces, attributes)
        return faces

    def describe(self, rgb: np.ndarray, faces: Iterable[Face], attributes: Iterable[str], refine: bool = True) -> None:
        """Measure the requested ``Attribute``s beyond DEFAULT on detected faces (DEFAULT loads no
        attribute model). ``refine=False`` keeps each face's 5 landmarks from the detector
        (attributes.FaceAttributes.describe): CompareFaces' ComparedFace has Rekognition's 5 points."""
        names = face_attributes.requested(attributes)
        if names and self.attribute_models is not None:
            for face in faces:
                self.attribute_models.describe(rgb, face, names, refine)

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The pack's L2-normalised vector: per-model unit vectors, weighted and concatenated."""
        if face.embedding is None:
            vector = np.concatenate([scale * r.embed(rgb, face.landmarks) for r, scale in self.recognizers])
            face.embedding = (vector / np.linalg.norm(vector)).astype(np.float32)  # weights sum to 1: ~1 already
        return face.embedding

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        return self.pack.calibration.similarity(float(np.dot(a, b)))


_lock = threading.Lock()


@functools.cache
def _engine(pack_name: str, model_dir: Path, ort_threads: int) -> FaceEngine:
    return FaceEngine(pack(pack_name), model_dir, ort_threads)


def get_engine(pack_name: str | None, model_dir: Path, ort_threads: int = 1) -> FaceEngine:
    """The process-wide engine of a pack (None: the default pack) over the model cache ``model_dir``
    (``Settings.resolved_model_dir``), one per distinct arguments: the detector loads on the first
    call, recognisers and attribute models on first use."""
    with _lock:
        return _engine(pack(pack_name).name, Path(model_dir), ort_threads)
