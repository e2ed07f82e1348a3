"""Face attributes beyond DEFAULT: geometry on MediaPipe's Face Mesh and Iris models, and the
attribute models a pack adds (``MODELS``).

All 30 landmarks, Pose (the canonical 3-D face fitted to the mesh), EyesOpen, MouthOpen, Smile and
EyeDirection. Shapes are measured in the head's own frame (the mesh mapped back through the fitted
pose, in the canonical model's centimetres), so turning or tilting the head does not change them.
Each binary attribute is one ratio with a logistic Confidence; the thresholds and slopes are fitted
on tests/data/attribute_labels.tsv by ``python bench/attributes.py --fit`` (README "Attributes").

Attributes no geometry can give come only from an ``AttributeModel`` a pack supplies: AgeRange,
Gender and Emotions from face-api.js's networks (``faceapi.py``). Eyeglasses, Sunglasses, Beard,
Mustache and FaceOccluded come from small heads on the mesh's pixels (``appearance.py``), fitted on
hand-labelled LFW faces by ``bench/appearance.py``; only the heads that met their accuracy target on
people the fit never saw are in the pack's file, so the others are never returned (docs/faces.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from facebank.engine.appearance import HEADS, AppearanceHeads
from facebank.engine.faceapi import AgeGenderNet, FaceExpressionNet
from facebank.engine.geometry import fit_similarity, pose_angles, pose_rotation
from facebank.engine.iris import LOWER_LID, UPPER_LID, Eye, Iris
from facebank.engine.mesh import FaceMesh
from facebank.engine.packs import APPEARANCE_HEADS, FACEAPI_AGE_GENDER, FACEAPI_EXPRESSION, MESH_FILES

if TYPE_CHECKING:
    from facebank.engine import Face

# botocore's FaceDetail members, in its order (responses keep it).
FACE_DETAIL = (
    "BoundingBox",
    "AgeRange",
    "Smile",
    "Eyeglasses",
    "Sunglasses",
    "Gender",
    "Beard",
    "Mustache",
    "EyesOpen",
    "MouthOpen",
    "Emotions",
    "Landmarks",
    "Pose",
    "Quality",
    "Confidence",
    "FaceOccluded",
    "EyeDirection",
)
GEOMETRY = ("EYES_OPEN", "MOUTH_OPEN", "SMILE", "EYE_DIRECTION")  # botocore Attribute names measured here
APPEARANCE = tuple(name for name, _ in HEADS)  # from appearance.AppearanceHeads, on the same mesh
MODELLED = ("AGE_RANGE", "GENDER", "EMOTIONS", "EYEGLASSES", "SUNGLASSES", "BEARD", "MUSTACHE", "FACE_OCCLUDED")
# The FaceDetail member each modelled Attribute name asks for (a model may measure more at once).
MEMBERS = {
    "AGE_RANGE": "AgeRange",
    "GENDER": "Gender",
    "EMOTIONS": "Emotions",
    "EYEGLASSES": "Eyeglasses",
    "SUNGLASSES": "Sunglasses",
    "BEARD": "Beard",
    "MUSTACHE": "Mustache",
    "FACE_OCCLUDED": "FaceOccluded",
}

# Rekognition's 30 landmark types in botocore's order, "left" being the image's left as in our
# DEFAULT eyeLeft. Each is the mean of some points of one source: "mesh" (MediaPipe mesh indices),
# "eye0"/"eye1" (the image-left/right eye's eyelid contour from the iris model: 0 outer corner,
# 4 lower lid middle, 8 inner corner, 12 upper lid middle) or "iris0"/"iris1" (0 = iris centre).
LANDMARKS = (
    ("eyeLeft", "eye0", tuple(range(16))),
    ("eyeRight", "eye1", tuple(range(16))),
    ("nose", "mesh", (1,)),
    ("mouthLeft", "mesh", (61,)),
    ("mouthRight", "mesh", (291,)),
    ("leftEyeBrowLeft", "mesh", (46, 70)),
    ("leftEyeBrowRight", "mesh", (55, 107)),
    ("leftEyeBrowUp", "mesh", (105,)),
    ("rightEyeBrowLeft", "mesh", (285, 336)),
    ("rightEyeBrowRight", "mesh", (276, 300)),
    ("rightEyeBrowUp", "mesh", (334,)),
    ("leftEyeLeft", "eye0", (0,)),
    ("leftEyeRight", "eye0", (8,)),
    ("leftEyeUp", "eye0", (12,)),
    ("leftEyeDown", "eye0", (4,)),
    ("rightEyeLeft", "eye1", (8,)),
    ("rightEyeRight", "eye1", (0,)),
    ("rightEyeUp", "eye1", (12,)),
    ("rightEyeDown", "eye1", (4,)),
    ("noseLeft", "mesh", (129,)),
    ("noseRight", "mesh", (358,)),
    ("mouthUp", "mesh", (0,)),
    ("mouthDown", "mesh", (17,)),
    ("leftPupil", "iris0", (0,)),
    ("rightPupil", "iris1", (0,)),
    ("upperJawlineLeft", "mesh", (234,)),
    ("midJawlineLeft", "mesh", (172,)),
    ("chinBottom", "mesh", (152,)),
    ("midJawlineRight", "mesh", (397,)),
    ("upperJawlineRight", "mesh", (454,)),
)
LANDMARK_TYPES = tuple(t for t, _, _ in LANDMARKS)

# (threshold, slope) of P(true) = 1 / (1 + exp(-slope * (ratio - threshold))), from bench --fit.
EYES_OPEN = (0.136, 41.9)  # eyelid gap / eye width, mean of both eyes
MOUTH_OPEN = (0.072, 51.4)  # inner-lip gap / mouth width
SMILE = (1.190, 28.3)  # mouth width / the canonical (neutral) face's mouth width
EYEBALL_RADIUS = 1.2  # cm: the iris centre turns on a sphere of this radius about the eye's centre
GAZE_PITCH_OFFSET = 2.1  # degrees: makes faces looking at the camera average Pitch 0 (bench --fit)
GAZE_AGREEMENT = 15.0  # degrees: EyeDirection Confidence is x0.61 when the two eyes disagree by this


class AttributeModel(Protocol):
    """The interface a pack fills for attributes geometry cannot measure (``MODELLED``).

    A pack lists the model's file in ``Pack.attributes`` and registers a loader for it in
    ``MODELS`` (called with the file and the onnxruntime thread count); ``estimate`` returns
    FaceDetail members (e.g. {"AgeRange": {...}, "Gender": {...}}), of which the requested ones are kept.
    """

    provides: frozenset[str]  # botocore Attribute names, e.g. {"AGE_RANGE", "GENDER"}

    def estimate(self, rgb: np.ndarray, face: Face) -> dict[str, Any]: ...


# manifest path -> loader(path, threads)
MODELS: dict[str, Callable[[Path, int], AttributeModel]] = {
    FACEAPI_AGE_GENDER: AgeGenderNet,
    FACEAPI_EXPRESSION: FaceExpressionNet,
}


def requested(attributes: Iterable[str]) -> set[str]:
    """botocore Attribute names beyond DEFAULT; ALL means every one (DEFAULT members always come)."""
    names = set(attributes)
    return set(GEOMETRY + MODELLED) if "ALL" in names else names - {"DEFAULT"}


def canonical_face(path: Path) -> np.ndarray:
    """MediaPipe's canonical face (468 x 3, cm) with x to the image right, y down, z away from the camera."""
    vertices = [line.split()[1:4] for line in path.read_text().splitlines() if line.startswith("v ")]
    return np.array(vertices, dtype=np.float64) * [1.0, -1.0, -1.0]


def _probability(ratio: float, fit: tuple[float, float]) -> float:
    return float(1.0 / (1.0 + np.exp(-fit[1] * (ratio - fit[0]))))


def _binary(p: float) -> dict[str, Any]:
    return {"Value": p >= 0.5, "Confidence": 100.0 * max(p, 1.0 - p)}


@dataclass(frozen=True)
class Measurement:
    """The mesh and both eyes of one face, with the head frame they define."""

    mesh: np.ndarray  # 468 x 3 image pixels
    eyes: tuple[Eye, Eye] | None  # image-left eye, image-right eye (None: measured without the iris model)
    scale: float
    rotation: np.ndarray  # canonical face -> camera
    shift: np.ndarray

    @property
    def both_eyes(self) -> tuple[Eye, Eye]:
        if self.eyes is None:
            raise ValueError("this face was measured without the iris model")
        return self.eyes

    def head(self, points: np.ndarray) -> np.ndarray:
        """Image points (N x 3) in the head's frame, in canonical-face centimetres."""
        return (points - self.shift) @ self.rotation / self.scale

    def landmarks(self) -> np.ndarray:
        sources = {
            "mesh": self.mesh,
            "eye0": self.both_eyes[0].contour,
            "eye1": self.both_eyes[1].contour,
            "iris0": self.both_eyes[0].iris,
            "iris1": self.both_eyes[1].iris,
        }
        return np.array([sources[s][list(i), :2].mean(0) for _, s, i in LANDMARKS])

    def eye_ratio(self) -> float:
        ratios = []
        for eye in self.both_eyes:
            lids = self.head(eye.contour[:16])
            gap = np.abs(lids[UPPER_LID[1:-1], 1] - lids[LOWER_LID[1:-1], 1]).mean()
            ratios.append(gap / np.linalg.norm(lids[0, :2] - lids[8, :2]))
        return float(np.mean(ratios))

    def mouth(self, canonical: np.ndarray) -> tuple[float, float]:
        """(inner-lip gap / mouth width, mouth width / the canonical face's mouth width)."""
        head = self.head(self.mesh)
        width = np.linalg.norm(head[61, :2] - head[291, :2])
        gap = np.mean([head[lower, 1] - head[upper, 1] for upper, lower in ((13, 14), (82, 87), (312, 317))])
        return float(gap / width), float(width / np.linalg.norm(canonical[61, :2] - canonical[291, :2]))

    def eye_direction(self, eyes_open: float) -> dict[str, float]:  # eyes_open: P(open), 0..1
        """Where the eyes look, in Pose's angles and signs: the head's rotation followed by the eyes'
        rotation in the head, read from where the iris centre sits between the eye corners (a sphere
        of EYEBALL_RADIUS). Eyes looking straight ahead give exactly the head's Yaw and Pitch. The eye
        nearer the camera counts more (the far one is foreshortened); Confidence falls as the eyes
        close or disagree."""
        angles = []
        for eye in self.both_eyes:
            corners, iris = self.head(eye.contour[[0, 8]]), self.head(eye.iris[:1])[0]
            dx, dy = (iris[:2] - corners.mean(0)[:2]) / EYEBALL_RADIUS
            angles.append(np.degrees(np.arcsin(np.clip([dx, -dy], -1, 1))))  # yaw, pitch in the head
        head = pose_angles(self.rotation)
        near = 1.0 / (1.0 + np.exp(-head["Yaw"] / 10.0))  # weight of the image-left eye
        yaw, pitch = near * angles[0] + (1 - near) * angles[1] - [0.0, GAZE_PITCH_OFFSET]
        gaze = pose_angles(self.rotation @ pose_rotation(0.0, yaw, pitch))
        disagreement = np.linalg.norm(angles[0] - angles[1])
        confidence = eyes_open * 100.0 * np.exp(-0.5 * (disagreement / GAZE_AGREEMENT) ** 2)
        return {"Yaw": gaze["Yaw"], "Pitch": gaze["Pitch"], "Confidence": float(confidence)}


class FaceAttributes:
    def __init__(
        self,
        mesh: Path,
        iris: Path,
        canonical: Path,
        models: Iterable[AttributeModel] = (),
        threads: int = 1,
        appearance: Path | None = None,
    ):
        self.mesh, self.iris = FaceMesh(mesh, threads), Iris(iris, threads)
        self.canonical = canonical_face(canonical)
        self.models = list(models)
        self.appearance_path, self.threads = appearance, threads

    @functools.cached_property
    def appearance(self) -> AppearanceHeads | None:
        """The appearance heads, loaded when one of APPEARANCE is first asked for (a race loads twice, harmlessly)."""
        return AppearanceHeads(self.appearance_path, self.threads) if self.appearance_path else None

    def measure(self, rgb: np.ndarray, face: Face, eyes: bool = True) -> Measurement:
        """The mesh of ``face`` and, with ``eyes``, the iris model's view of each eye."""
        mesh = face.mesh if face.mesh is not None else self.mesh.run(rgb, face.box, face.landmarks).points
        both = None
        if eyes:
            both = (self.iris.run(rgb, mesh[33, :2], mesh[133, :2]), self.iris.run(rgb, mesh[263, :2], mesh[362, :2]))
        return Measurement(mesh, both, *fit_similarity(self.canonical, mesh))

    def describe(self, rgb: np.ndarray, face: Face, names: set[str], refine: bool = True) -> None:
        """Add the requested attributes to ``face``. With ``refine`` (DetectFaces, IndexFaces), any
        geometric one also brings all 30 landmarks, since they are then measured anyway; without it
        (CompareFaces' ComparedFace keeps Rekognition's 5 points) the detector's landmarks stay, and
        Smile or MouthOpen alone need no iris model. Pose is never changed here: the engine measured
        it on the same mesh (``face.mesh``), so every request gives the same Pose."""
        appearance = names & set(APPEARANCE)
        if appearance and self.appearance is not None:
            appearance &= self.appearance.provides
        else:
            appearance = set()
        geometry = names & set(GEOMETRY)
        if geometry or appearance:
            with_eyes = bool(geometry) and (refine or bool(names & {"EYES_OPEN", "EYE_DIRECTION"}))
            m = self.measure(rgb, face, eyes=with_eyes)
            if appearance and self.appearance is not None:
                found = self.appearance.describe(rgb, face, m.mesh)
                face.attributes.update((MEMBERS[n], found[MEMBERS[n]]) for n in sorted(appearance))
        if geometry:
            mouth_ratio, width_ratio = m.mouth(self.canonical)
            measured = {
                "MOUTH_OPEN": ("MouthOpen", _binary(_probability(mouth_ratio, MOUTH_OPEN))),
                "SMILE": ("Smile", _binary(_probability(width_ratio, SMILE))),
            }
            if with_eyes:
                eyes_open = _probability(m.eye_ratio(), EYES_OPEN)
                measured["EYES_OPEN"] = ("EyesOpen", _binary(eyes_open))
                measured["EYE_DIRECTION"] = ("EyeDirection", m.eye_direction(eyes_open))
            if refine:  # Pose stays the engine's (FaceEngine.pose, the same mesh): one answer per face
                face.dense_landmarks = m.landmarks()
            face.attributes.update(measured[n] for n in GEOMETRY if n in names)
        for model in self.models:
            if names & model.provides:
                wanted = {MEMBERS[n] for n in names & model.provides}
                face.attributes.update((k, v) for k, v in model.estimate(rgb, face).items() if k in wanted)


def load(files: Iterable[str], resolve: Callable[[str], Path], threads: int = 1) -> FaceAttributes | None:
    """The attribute models of a pack (``Pack.attributes``), or None when it has none; ``resolve``
    maps a manifest path to its verified file."""
    files = list(files)
    if not set(MESH_FILES) <= set(files):
        return None
    extra = [MODELS[f](resolve(f), threads) for f in files if f in MODELS]
    mesh, iris, canonical = (resolve(f) for f in MESH_FILES)
    appearance = resolve(APPEARANCE_HEADS) if APPEARANCE_HEADS in files else None
    return FaceAttributes(mesh, iris, canonical, models=extra, threads=threads, appearance=appearance)
