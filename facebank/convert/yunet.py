"""Relabel YuNet's fixed 640x640 input as H x W: the model file the detector serves from.

The published graph (OpenCV Zoo, MIT) is fully convolutional, so only its declared shapes pin it to
640x640; relabelling the input (and the anchor axis of the outputs) as symbolic lets each image run
at its own size (padded to a multiple of 32): no letterbox distortion, and small images cost little.
This runs once, in the model fetch step (``facebank.models``, ``convert:yunet-dynamic``), so the
serving path needs onnxruntime only, never ``onnx``. The bytes written depend only on the source
and the pinned onnx/protobuf, so the output's sha256 is pinned in the manifest.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import onnx


def dynamic_graph(source: str | Path) -> bytes:
    model = onnx.load(str(source))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[1].dim_param = "anchors"
    del model.graph.value_info[:]  # stale 640x640 shapes would only produce warnings
    return model.SerializeToString(deterministic=True)


def convert(source: str | Path, out: str | Path) -> dict[str, object]:
    """Write the relabelled graph of ``source`` to ``out``; returns its size and sha256."""
    blob = dynamic_graph(source)
    Path(out).write_bytes(blob)
    return {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


if __name__ == "__main__":  # python -m facebank.convert.yunet SOURCE OUT
    print(convert(sys.argv[1], sys.argv[2]))
