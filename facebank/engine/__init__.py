"""The face engine: decode -> detect -> align -> embed -> attributes.

Importing this package costs nothing: ``Face``, ``FaceEngine`` and ``get_engine`` (in
``face_engine``) load numpy and the model classes on first access, and onnxruntime loads with the
first model session. So ``facebank.engine.packs`` (pack descriptions and calibration, all that
metadata operations need) imports without either.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facebank.engine.face_engine import LANDMARK_TYPES, MAX_FACES, RECOGNIZERS, Face, FaceEngine, get_engine

__all__ = ["LANDMARK_TYPES", "MAX_FACES", "RECOGNIZERS", "Face", "FaceEngine", "get_engine"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("facebank.engine.face_engine"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
