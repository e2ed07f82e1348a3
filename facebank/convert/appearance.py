"""Build the appearance heads' ONNX file from their committed coefficients (``appearance_heads.json``).

The fetch step runs this (manifest row ``convert:appearance-heads``): the JSON is package data of
facebank itself, pinned by sha256 in ``facebank.models.CONVERSIONS``, and the bytes written depend only
on it and the pinned onnx/protobuf, so the output is pinned in the manifest too. Each head is a
logistic regression on standardised ``appearance.pixel_features`` followed by Platt calibration; all
three are affine in the features, so they are folded (in float64) into one MatMul + Add, then a
Sigmoid gives P(true) per head, one output per head named by its botocore Attribute name. Heads that
missed their target are built too (the bench and tests read them) but the model's ``shipped``
metadata leaves them out, and the engine returns only the shipped ones.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def folded(spec: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(head names, weights [features x heads], bias [heads]) of calibrated logit = x @ W + b."""
    mean, scale = np.array(spec["mean"], np.float64), np.array(spec["scale"], np.float64)
    names, columns, biases = [], [], []
    for name, head in spec["heads"].items():
        weights, bias = np.array(head["weights"], np.float64), float(head["bias"])
        slope, intercept = head["calibration"]
        names.append(name)
        columns.append(slope * weights / scale)
        biases.append(slope * (bias - float(np.dot(weights, mean / scale))) + intercept)
    return names, np.stack(columns, axis=1), np.array(biases)


def graph(spec: dict) -> bytes:
    names, weights, bias = folded(spec)
    nodes = [
        helper.make_node("MatMul", ["features", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["p"]),
        helper.make_node("Split", ["p", "split"], list(names), axis=1),
    ]
    inits = [
        numpy_helper.from_array(weights.astype(np.float32), "W"),
        numpy_helper.from_array(bias.astype(np.float32), "b"),
        numpy_helper.from_array(np.ones(len(names), np.int64), "split"),
    ]
    g = helper.make_graph(
        nodes,
        "facebank_appearance_heads",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", weights.shape[0]])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 1]) for n in names],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facebank")
    model.ir_version = 8
    # The heads that met their accuracy target (bench/appearance.py): the only ones the engine returns.
    onnx.helper.set_model_props(model, {"shipped": ",".join(n for n in names if n in spec["shipped"])})
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def convert(source: str | Path, out: str | Path) -> dict[str, object]:
    """Write the heads in the JSON ``source`` to ``out`` as ONNX; returns its size and sha256."""
    blob = graph(json.loads(Path(source).read_text()))
    Path(out).write_bytes(blob)
    return {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


if __name__ == "__main__":  # python -m facebank.convert.appearance SOURCE OUT
    print(convert(sys.argv[1], sys.argv[2]))
