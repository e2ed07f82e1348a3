"""Convert face-api.js's AgeGenderNet and FaceExpressionNet (tfjs weight manifests) to ONNX.

The weights are MIT-licensed (face-api.js by Vincent Mühler; the fork @vladmandic/face-api 1.7.15
ships them as ``model/*-weights_manifest.json`` with uint8-quantised ``.bin`` files). Neither tfjs
nor node is needed here: the manifest is read as tfjs's ``io.decodeWeights`` reads it (tensors laid
end to end in the manifest's order; a quantised tensor is ``q * scale + min``, computed in double
and stored as float32, as tfjs does) and the two networks are rebuilt, op for op, from face-api's
source, then written with the ``onnx`` helper API:

- AgeGenderNet (``src/ageGenderNet``, ``src/xception/TinyXception.ts`` with 2 main blocks): conv
  3x3/2 -> relu -> two reduction blocks -> two main blocks -> a reduction block -> separable conv ->
  relu -> average pool 7x7/2 (valid: the 7x7 map becomes 1x1) -> two fully connected heads: age
  (one value, years) and gender (softmax over male, female).
- FaceExpressionNet (``src/faceExpressionNet``, ``src/faceFeatureExtractor``): four dense blocks
  (each halves the size) -> average pool 7x7/2 -> fully connected -> softmax over neutral, happy,
  sad, angry, fearful, disgusted, surprised (``FACE_EXPRESSION_LABELS``).

Separable convolutions are tfjs's ``separableConv2d`` (3x3 depthwise, then 1x1 pointwise, then the
bias); "same" padding is TensorFlow's: the odd pixel of a stride-2 layer's padding goes at the end.

ONNX contract (both files): input ``image`` float32 [N, 3, 112, 112], RGB 0..255, the face crop
as face-api's ``NetInput.toBatchTensor(112)`` makes it (the engine's crop is in
``facebank/engine/faceapi.py``); the per-channel mean subtraction and /255 of face-api 1.7.15 are
inside the graph (face-api.js before the fork divided TinyXception's input by 256: the fork's 255 is
what the parity reference computes). Outputs: ``age`` [N] and ``gender`` [N, 2]; ``expressions``
[N, 7]. The bytes depend only on the source files and the pinned onnx, so the outputs' sha256 are
pinned in facebank/models/manifest.tsv (``convert:faceapi-*``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from facebank.convert.onnx_graph import GraphBuilder

INPUT_SIZE = 112
MEAN_RGB = (122.782, 117.001, 104.298)  # face-api's normalize(): the same for both networks
INPUT_DIVISOR = 255.0  # @vladmandic/face-api 1.7.15 (face-api.js divided TinyXception's input by 256)
EXPRESSIONS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")  # output order
OPSET = 13
IR_VERSION = 7  # pinned (not the onnx package's default) so the bytes do not change with onnx upgrades
_QUANTISED = {"uint8": np.uint8, "uint16": np.uint16}
_STORED = {"float32": np.float32, "int32": np.int32}


# --- tfjs weights --------------------------------------------------------------------------------


def read_weights(manifest_path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a tfjs weights manifest, dequantised to float32, by name (in manifest order).

    The binaries are the manifest's ``paths``, relative to the manifest (tfjs's convention); each
    group's files are one byte stream holding its tensors end to end.
    """
    manifest_path = Path(manifest_path)
    tensors: dict[str, np.ndarray] = {}
    for group in json.loads(manifest_path.read_text()):
        stream = b"".join((manifest_path.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            count = math.prod(spec["shape"])
            quantisation = spec.get("quantization")
            if quantisation:
                stored = np.dtype(_QUANTISED[quantisation["dtype"]])
                raw = np.frombuffer(stream, stored, count, offset)
                values = (raw.astype(np.float64) * quantisation["scale"] + quantisation["min"]).astype(np.float32)
            else:
                stored = np.dtype(_STORED[spec["dtype"]])
                values = np.frombuffer(stream, stored, count, offset).astype(np.float32)
            offset += count * stored.itemsize
            tensors[spec["name"]] = values.reshape(spec["shape"])
        if offset != len(stream):
            raise ValueError(f"{manifest_path.name}: the weights use {offset} of {len(stream)} bytes")
    return tensors


class _Weights:
    """The manifest's tensors, each taken once by name; ``finish`` refuses any left untaken."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.tensors = dict(tensors)

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        value = self.tensors.pop(name)
        if value.shape != shape:
            raise ValueError(f"{name}: shape {value.shape}, expected {shape}")
        return value

    def finish(self) -> None:
        if self.tensors:
            raise ValueError(f"weights the network does not use: {sorted(self.tensors)}")


# --- ONNX graph ----------------------------------------------------------------------------------


class _Graph(GraphBuilder):
    """One network's graph, with the dequantised weights its layers are built from."""

    def __init__(self, weights: _Weights):
        super().__init__()
        self.weights = weights

    def normalized_input(self) -> str:
        mean = np.array(MEAN_RGB, np.float32).reshape(1, 3, 1, 1)
        x = self.node("Sub", ["image", self.const("mean_rgb", mean)], "centered")
        return self.node("Div", [x, self.const("divisor", np.array(INPUT_DIVISOR, np.float32))], "normalized")

    def conv(self, x: str, prefix: str, channels: tuple[int, int], size: int, kernel: int, stride: int) -> str:
        """tf.conv2d(x, filters, stride, 'same') + bias, filters [k, k, in, out]."""
        c_in, c_out = channels
        filters = self.weights.take(f"{prefix}/filters", (kernel, kernel, c_in, c_out)).transpose(3, 2, 0, 1)
        bias = self.weights.take(f"{prefix}/bias", (c_out,))
        inputs = [x, self.const(f"{prefix}/filters", filters), self.const(f"{prefix}/bias", bias)]
        pads = _same_pads(size, kernel, stride)
        return self.node("Conv", inputs, prefix, kernel_shape=[kernel, kernel], strides=[stride, stride], pads=pads)

    def separable(self, x: str, prefix: str, channels: tuple[int, int], size: int, stride: int) -> str:
        """tf.separableConv2d(x, depthwise [3, 3, in, 1], pointwise [1, 1, in, out], stride, 'same') + bias."""
        c_in, c_out = channels
        depthwise = self.weights.take(f"{prefix}/depthwise_filter", (3, 3, c_in, 1)).transpose(2, 3, 0, 1)
        pointwise = self.weights.take(f"{prefix}/pointwise_filter", (1, 1, c_in, c_out)).transpose(3, 2, 0, 1)
        bias = self.weights.take(f"{prefix}/bias", (c_out,))
        depthwise_inputs = [x, self.const(f"{prefix}/depthwise_filter", depthwise)]
        pads = _same_pads(size, 3, stride)
        x = self.node(
            "Conv",
            depthwise_inputs,
            f"{prefix}/depthwise",
            group=c_in,
            kernel_shape=[3, 3],
            strides=[stride, stride],
            pads=pads,
        )
        inputs = [x, self.const(f"{prefix}/pointwise_filter", pointwise), self.const(f"{prefix}/bias", bias)]
        return self.node("Conv", inputs, prefix, kernel_shape=[1, 1])

    def relu(self, x: str) -> str:
        return self.node("Relu", [x], f"{x}/relu")

    def add(self, a: str, b: str, name: str) -> str:
        return self.node("Add", [a, b], name)

    def pooled_features(self, x: str) -> str:
        """tf.avgPool(x, [7, 7], [2, 2], 'valid') on the 7x7 map, flattened to [N, C]."""
        x = self.node("AveragePool", [x], "avg_pool", kernel_shape=[7, 7], strides=[2, 2])
        return self.node("Flatten", [x], "features", axis=1)

    def dense(self, x: str, prefix: str, c_in: int, c_out: int, name: str) -> str:
        """face-api's fullyConnectedLayer: x @ weights [in, out] + bias."""
        weights = self.weights.take(f"{prefix}/weights", (c_in, c_out))
        bias = self.weights.take(f"{prefix}/bias", (c_out,))
        x = self.node("MatMul", [x, self.const(f"{prefix}/weights", weights)], f"{prefix}/matmul")
        return self.node("Add", [x, self.const(f"{prefix}/bias", bias)], name)


def _same_pads(size: int, kernel: int, stride: int) -> list[int]:
    """TensorFlow's 'same' padding of a square input [top, left, bottom, right]: the odd pixel at the end."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return [total // 2, total // 2, total - total // 2, total - total // 2]


def _reduction_block(g: _Graph, x: str, prefix: str, channels: tuple[int, int], size: int, activate: bool) -> str:
    c_in, c_out = channels
    out = g.relu(x) if activate else x
    out = g.separable(out, f"{prefix}/separable_conv0", (c_in, c_out), size, 1)
    out = g.separable(g.relu(out), f"{prefix}/separable_conv1", (c_out, c_out), size, 1)
    out = g.node(
        "MaxPool", [out], f"{prefix}/max_pool", kernel_shape=[3, 3], strides=[2, 2], pads=_same_pads(size, 3, 2)
    )
    return g.add(out, g.conv(x, f"{prefix}/expansion_conv", (c_in, c_out), size, 1, 2), prefix)


def _main_block(g: _Graph, x: str, prefix: str, channels: int, size: int) -> str:
    out = x
    for i in range(3):
        out = g.separable(g.relu(out), f"{prefix}/separable_conv{i}", (channels, channels), size, 1)
    return g.add(out, x, prefix)


def _dense_block(g: _Graph, x: str, prefix: str, channels: tuple[int, int], size: int, first: bool) -> str:
    """denseBlock4: each conv takes the relu of the sum of the outputs before it (sums in face-api's
    order, so float rounding matches too)."""
    c_in, c_out = channels
    if first:
        out1 = g.relu(g.conv(x, f"{prefix}/conv0", (c_in, c_out), size, 3, 2))
    else:
        out1 = g.relu(g.separable(x, f"{prefix}/conv0", (c_in, c_out), size, 2))
    half = size // 2
    out2 = g.separable(out1, f"{prefix}/conv1", (c_out, c_out), half, 1)
    in3 = g.relu(g.add(out1, out2, f"{prefix}/in3"))
    out3 = g.separable(in3, f"{prefix}/conv2", (c_out, c_out), half, 1)
    in4 = g.relu(g.add(out1, g.add(out2, out3, f"{prefix}/in4_23"), f"{prefix}/in4"))
    out4 = g.separable(in4, f"{prefix}/conv3", (c_out, c_out), half, 1)
    total = g.add(out1, g.add(out2, g.add(out3, out4, f"{prefix}/out_34"), f"{prefix}/out_234"), f"{prefix}/out")
    return g.relu(total)


def age_gender_graph(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    g = _Graph(_Weights(weights))
    x = g.relu(g.conv(g.normalized_input(), "entry_flow/conv_in", (3, 32), 112, 3, 2))  # 56
    x = _reduction_block(g, x, "entry_flow/reduction_block_0", (32, 64), 56, activate=False)  # 28
    x = _reduction_block(g, x, "entry_flow/reduction_block_1", (64, 128), 28, activate=True)  # 14
    for i in range(2):  # AgeGenderNet's TinyXception(2)
        x = _main_block(g, x, f"middle_flow/main_block_{i}", 128, 14)
    x = _reduction_block(g, x, "exit_flow/reduction_block", (128, 256), 14, activate=True)  # 7
    x = g.relu(g.separable(x, "exit_flow/separable_conv", (256, 512), 7, 1))
    features = g.pooled_features(x)
    age = g.dense(features, "fc/age", 512, 1, "age_column")
    g.node("Reshape", [age, g.const("age_shape", np.array([-1], np.int64))], "age")  # face-api's as1D()
    gender = g.dense(features, "fc/gender", 512, 2, "gender_logits")
    g.node("Softmax", [gender], "gender", axis=1)
    g.weights.finish()
    outputs = [
        helper.make_tensor_value_info("age", TensorProto.FLOAT, ["N"]),
        helper.make_tensor_value_info("gender", TensorProto.FLOAT, ["N", 2]),
    ]
    return _model(
        g, "faceapi_age_gender_net", outputs, "face-api.js AgeGenderNet (MIT): age in years; P(male), P(female)"
    )


def face_expression_graph(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    g = _Graph(_Weights(weights))
    x = g.normalized_input()
    for i, (channels, size) in enumerate((((3, 32), 112), ((32, 64), 56), ((64, 128), 28), ((128, 256), 14))):
        x = _dense_block(g, x, f"dense{i}", channels, size, first=i == 0)  # 56, 28, 14, 7
    logits = g.dense(g.pooled_features(x), "fc", 256, len(EXPRESSIONS), "expression_logits")
    g.node("Softmax", [logits], "expressions", axis=1)
    g.weights.finish()
    outputs = [helper.make_tensor_value_info("expressions", TensorProto.FLOAT, ["N", len(EXPRESSIONS)])]
    doc = f"face-api.js FaceExpressionNet (MIT): probabilities of {', '.join(EXPRESSIONS)}"
    return _model(g, "faceapi_face_expression_net", outputs, doc)


def _model(g: _Graph, name: str, outputs: list[onnx.ValueInfoProto], doc: str) -> onnx.ModelProto:
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])
    graph = helper.make_graph(g.nodes, name, [image], outputs, g.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="facebank.engine.faceapi_convert",  # pinned bytes: the name it had when the sha256 was taken
        doc_string=f"{doc}. Input: RGB 0..255 NCHW 112x112 face crop (face-api's toBatchTensor(112)).",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


NETWORKS = {"age_gender_model": age_gender_graph, "face_expression_model": face_expression_graph}


def convert(manifest_path: str | Path, out: str | Path) -> dict[str, object]:
    """Write the ONNX graph of the network whose weights manifest is ``manifest_path`` (its binaries
    beside it) to ``out``; returns the output's size and sha256."""
    network = Path(manifest_path).name.removesuffix("-weights_manifest.json")
    if network not in NETWORKS:
        raise ValueError(f"{manifest_path}: not one of face-api's {', '.join(NETWORKS)} weights manifests")
    blob = NETWORKS[network](read_weights(manifest_path)).SerializeToString(deterministic=True)
    Path(out).write_bytes(blob)
    return {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", help="face-api weights manifest (age_gender_model-weights_manifest.json, ...)")
    parser.add_argument("out", help="ONNX file to write")
    args = parser.parse_args(argv)
    print(convert(args.manifest, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
