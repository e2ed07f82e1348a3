"""Model packs: which detector, recogniser(s) and attribute models a collection was built with, and
how the pack's cosine similarity maps onto Rekognition's 0-100 Similarity scale.

A pack is plain data (no model is loaded here, and importing this module loads neither numpy nor
onnxruntime: metadata operations read calibration from it); ``facebank.engine.FaceEngine`` builds
it. Numbers in the comments are from ``python bench/accuracy.py`` / ``bench/calibrate.py`` on
shared/faces/dev.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from facebank.models import ModelError


@dataclass(frozen=True)
class Calibration:
    """Logistic map from cosine to 0-100, pinned at two operating points.

    ``at_80`` is where the false-match rate per pair stays at or below 1e-3, and ``at_99`` at or
    below 1e-5, for 90% of groups of people the fit never saw (``bench/calibrate.py``): a normal
    curve through the 90th and 99th percentiles of the impostor cosines (in Fisher's z) of all 34
    faces/dev identities, each point moved out by the margin that cross-validation over identities
    (fit on half the people, count on the other half, 4,000 times) showed it needs. 1e-5 is an
    extrapolation of the test halves' fitted tails: ~6k impostor pairs per half cannot show it.
    Monotonic, so thresholds and rankings keep their order.
    """

    at_80: float
    at_99: float

    _LOGIT80, _LOGIT99 = math.log(0.8 / 0.2), math.log(0.99 / 0.01)

    @property
    def _slope(self) -> float:
        return (self._LOGIT99 - self._LOGIT80) / (self.at_99 - self.at_80)

    def similarity(self, cosine: float) -> float:
        z = self._LOGIT80 + self._slope * (cosine - self.at_80)
        return 100.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def cosine_floor(self, similarity: float) -> float:
        """The cosine at which Similarity reaches ``similarity`` (the map's inverse, less 1e-6 so
        float32 rounding never prunes a match); searches prune with it, then compare Similarity
        itself at the boundary."""
        if similarity <= 0:
            return -math.inf
        if similarity >= 100:
            return math.inf
        z = math.log(similarity / (100.0 - similarity))
        return self.at_80 + (z - self._LOGIT80) / self._slope - 1e-6


@dataclass(frozen=True)
class Recognizer:
    kind: str  # a class in facebank.engine.RECOGNIZERS
    files: tuple[str, ...]  # manifest paths, in the order the class takes them
    # Share of the pack's cosine. Each model's unit vector is scaled by sqrt(weight) before the
    # parts are concatenated, so the cosine of two pack vectors is the weighted sum of per-model
    # cosines (score fusion) and search stays one matmul.
    weight: float = 1.0


@dataclass(frozen=True)
class Pack:
    name: str
    # Rekognition's form ("7.0"; IndexFacesModelVersion must match [0-9.]+): the major number names
    # the pack, the minor one changes with its models, its face pipeline or its maps. A collection
    # records the version it was created with (and answers with it in FaceModelVersion).
    face_model_version: str
    detector: str  # manifest path
    recognizers: tuple[Recognizer, ...]
    dimension: int  # length of the pack's embedding
    licence: str
    calibration: Calibration
    attributes: tuple[str, ...] = ()  # manifest paths of attribute models
    # Earlier versions of this pack whose stored vectors today's vectors are compared with: the same
    # recognisers with the same weights, so the same vector space (what changed is a map, or how a
    # face is cut out, which moves a photo's vector far less than another photo of the person
    # does: docs/collections.md, "Old collections"). A collection or celebrity of such a version
    # keeps answering, scored on today's maps: a refit corrects what a cosine means, for vectors
    # stored before it too. A version not listed (other recognisers or weights) is refused with
    # the fix (operations.collections.get_collection).
    compatible: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not math.isclose(sum(r.weight for r in self.recognizers), 1.0, abs_tol=1e-9):
            raise ValueError(f"pack {self.name}: recogniser weights must sum to 1 (unit-norm fused vectors)")

    def searches(self, face_model_version: str) -> bool:
        """Whether vectors stored under ``face_model_version`` are compared with this pack's."""
        return face_model_version == self.face_model_version or face_model_version in self.compatible

    @property
    def files(self) -> list[str]:
        """Every model file the pack needs: what `facebank models fetch` and the Lambda layer get."""
        return [self.detector, *(f for r in self.recognizers for f in r.files), *self.attributes]


class UnknownPack(ModelError):
    """A pack name (``--pack`` or FACEBANK_PACK) that is not in PACKS."""


YUNET = "yunet/face_detection_yunet_2023mar_dynamic.onnx"  # input relabelled H x W at fetch time
DLIB = ("dlib/dlib_face_recognition_resnet_model_v1.onnx", "dlib/shape_predictor_5_face_landmarks.npz")
MOBILEFACENET = ("mobilefacenet/mobilefacenet.onnx",)
MOBILEFACENET_LICENCE = "MobileFaceNet: MIT code, weights trained on MS1M (non-commercial research terms)"
# Every pack: MediaPipe mesh + iris (Apache-2.0), in the order attributes.FaceAttributes takes them.
MESH_FILES = ("mediapipe/face_landmark.onnx", "mediapipe/iris_landmark.onnx", "mediapipe/canonical_face_model.obj")
# and face-api.js's AgeRange/Gender and Emotions networks (attributes.MODELS), converted at fetch time.
FACEAPI_AGE_GENDER = "faceapi/age_gender_net.onnx"
FACEAPI_EXPRESSION = "faceapi/face_expression_net.onnx"
# and the Eyeglasses/Sunglasses/Beard/Mustache/FaceOccluded heads (engine/appearance.py), built at fetch
# time from coefficients fitted on hand-labelled LFW faces (appearance_heads.json).
APPEARANCE_HEADS = "facebank/appearance_heads.onnx"
ATTRIBUTE_FILES = (*MESH_FILES, FACEAPI_AGE_GENDER, FACEAPI_EXPRESSION, APPEARANCE_HEADS)
FACEAPI_LICENCE = (
    "AgeRange, Gender, Emotions: face-api.js MIT code and weights, trained on research-use datasets "
    "(UTK, IMDB-WIKI, ...); Eyeglasses, Sunglasses, Beard, Mustache, FaceOccluded: facebank's heads "
    "fitted on hand-labelled LFW photos (research/benchmark use)"
)

PACKS = {
    p.name: p
    for p in (
        Pack(
            name="open",
            face_model_version="1.3",
            compatible=("1.0", "1.1", "1.2"),
            detector=YUNET,
            recognizers=(Recognizer("dlib-resnet", DLIB),),
            dimension=128,
            licence="detection and recognition permissive: YuNet MIT; dlib ResNet and 5-point predictor CC0 "
            f"(public domain); {FACEAPI_LICENCE}",
            calibration=Calibration(at_80=0.9297, at_99=0.9562),
            attributes=ATTRIBUTE_FILES,
        ),
        Pack(
            name="fused",
            face_model_version="2.3",
            compatible=("2.0", "2.1", "2.2"),
            detector=YUNET,
            # Weights: inverse impostor-cosine spread on the tuning half (z-score fusion), not searched;
            # this linear fusion is exactly score fusion of the two cosines (see Recognizer.weight).
            recognizers=(Recognizer("dlib-resnet", DLIB, 0.758), Recognizer("mobilefacenet", MOBILEFACENET, 0.242)),
            dimension=256,
            licence=f"YuNet MIT; dlib CC0; {MOBILEFACENET_LICENCE}; {FACEAPI_LICENCE}",
            calibration=Calibration(at_80=0.7748, at_99=0.8250),
            attributes=ATTRIBUTE_FILES,
        ),
        Pack(
            name="mobile",
            face_model_version="3.3",
            compatible=("3.0", "3.1", "3.2"),
            detector=YUNET,
            recognizers=(Recognizer("mobilefacenet", MOBILEFACENET),),
            dimension=128,
            licence=f"YuNet MIT; {MOBILEFACENET_LICENCE}; {FACEAPI_LICENCE}",
            calibration=Calibration(at_80=0.3470, at_99=0.4818),
            attributes=ATTRIBUTE_FILES,
        ),
    )
}
DEFAULT_PACK = "open"  # permissive licences for everything but AgeRange, Gender and Emotions (FACEAPI_LICENCE)


def pack(name: str | None) -> Pack:
    """The pack called ``name`` (Settings.pack); None means DEFAULT_PACK."""
    chosen = name or DEFAULT_PACK
    if chosen not in PACKS:
        raise UnknownPack(f"unknown model pack {chosen!r} (--pack or FACEBANK_PACK): choose one of {', '.join(PACKS)}")
    return PACKS[chosen]


# Outside the packs, the same whichever pack a server runs: the person detector of person tracking
# (engine.persons, MoveNet MultiPose Lightning, Apache-2.0), fetched with the pack's files.
PERSON_DETECTOR = "persons/movenet_multipose_384.onnx"


def model_layer_files(name: str | None) -> list[str]:
    """What a Lambda model layer for pack ``name`` holds (layers/build.py models, infra/layers.py):
    the pack's files, then the person detector, which the video worker runs for person tracking."""
    return [*pack(name).files, PERSON_DETECTOR]
