"""Fetch-time converters: model files built from a package's or another manifest file's bytes
(``facebank.models.CONVERSIONS`` names them). Each may import onnx; serving never runs one when
the cache (or a model layer) already holds the verified output.

The ``*_model`` functions here are what ``CONVERSIONS`` refers to: ``(source, out) -> stats``,
each importing its converter module plainly on first call (named apart from the modules), so
``import facebank.models`` stays cheap and the layering test sees every converter import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

Stats = dict[str, Any]


def dlib_resnet_model(source: Path, out: Path) -> Stats:
    """dlib's face ResNet (.dat) -> ONNX (``dlib_resnet.py``)."""
    from facebank.convert import dlib_resnet

    return dlib_resnet.convert(source, out)


def dlib_shape_model(source: Path, out: Path) -> Stats:
    """dlib's 5-point shape predictor (.dat) -> the npz the runtime predictor loads (its own
    module, ``engine/dlib_shape.py``, reads both)."""
    from facebank.engine import dlib_shape

    return dlib_shape.convert(source, out)


def yunet_model(source: Path, out: Path) -> Stats:
    """YuNet with its input relabelled H x W (``yunet.py``)."""
    from facebank.convert import yunet

    return yunet.convert(source, out)


def faceapi_model(source: Path, out: Path) -> Stats:
    """A face-api.js network from its tfjs weights (``faceapi.py``)."""
    from facebank.convert import faceapi

    return faceapi.convert(source, out)


def movenet_model(source: Path, out: Path) -> Stats:
    """MoveNet MultiPose from its tfjs graph (``movenet.py``)."""
    from facebank.convert import movenet

    return movenet.convert(source, out)


def appearance_model(source: Path, out: Path) -> Stats:
    """The appearance heads from their committed coefficients (``appearance.py``)."""
    from facebank.convert import appearance

    return appearance.convert(source, out)
