"""Model packs: which detector and recogniser a collection was built with, and how the
recogniser's cosine similarity maps onto Rekognition's 0-100 Similarity scale."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Calibration:
    """Logistic map from cosine to 0-100, pinned at two measured operating points.

    ``at_80`` is the cosine whose false-match rate on faces/dev impostor pairs is 1e-3, ``at_99``
    the cosine for 1e-5 (extrapolated from a normal fit to the impostor tail: faces/dev has only
    ~25k impostor pairs). Monotonic, so thresholds and rankings keep their order.
    """

    at_80: float
    at_99: float

    def similarity(self, cosine: float) -> float:
        logit80, logit99 = math.log(0.8 / 0.2), math.log(0.99 / 0.01)
        slope = (logit99 - logit80) / (self.at_99 - self.at_80)
        z = logit80 + slope * (cosine - self.at_80)
        return 100.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


@dataclass(frozen=True)
class Pack:
    name: str
    face_model_version: str
    detector: str  # manifest path
    recognizer: str  # manifest path
    licence: str
    calibration: Calibration

    @property
    def files(self) -> list[str]:
        return [self.detector, self.recognizer]


PACKS = {
    "mobile": Pack(
        name="mobile",
        face_model_version="facebank-mobile-1",
        detector="yunet/face_detection_yunet_2023mar.onnx",
        recognizer="mobilefacenet/mobilefacenet.onnx",
        licence="MIT code; MobileFaceNet weights trained on MS1M (non-commercial research terms)",
        calibration=Calibration(at_80=0.3391, at_99=0.4491),  # bench/calibrate.py --pack mobile
    ),
}
DEFAULT_PACK = "mobile"


def pack(name: str | None = None) -> Pack:
    return PACKS[name or os.environ.get("FACEBANK_PACK") or DEFAULT_PACK]
