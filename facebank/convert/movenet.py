"""Convert MoveNet MultiPose Lightning (a tfjs graph model) to ONNX at a fixed input size.

MoveNet (Google; TF Hub ``google/tfjs-model/movenet/multipose/lightning/1``, Apache-2.0) ships as
a tfjs graph model: ``movenet-multipose.json`` (the TensorFlow GraphDef as JSON, its weights
manifest inside) and ``movenet-multipose.bin`` (float16-quantised float32 weights and int32
constants). The graph is a MobileNetV2 + FPN CenterNet with its whole decoding inside: person
centres by a 5x5 max-pool peak search, top-6, box regression, and each keypoint from the heatmap
peak closest to the person's regressed joint. About 45 TensorFlow ops occur; this translates them
one by one, without TensorFlow:

- The input is fixed at ``INPUT_SIZE`` square (the graph takes any multiple of 32; at 256 it
  misses half of the shared classroom video, /work/shared/models/MANIFEST.tsv). With every shape
  then known, the ops that compute on shapes (Shape, StridedSlice of a shape, Range, Fill,
  meshgrid, ...) are evaluated here in numpy and land in the ONNX file as constants; only ops on
  the image's data become ONNX nodes. Each op has one numpy implementation (``_EVAL``), used both
  to fold constants and, on zeros, to know the shape of a data-dependent op's output.
- TensorFlow is NHWC, ONNX's Conv NCHW: convolutions, pools and resizes work on NCHW copies and
  element-wise ops follow the layout of their inputs, so transposes appear only where the
  decoding leaves the feature maps (a handful of small tensors), not around every convolution.
- Ops that only move elements (StridedSlice, Tile, Pack, Unpack, Split, ConcatV2) become one
  Gather of precomputed flat indices: exact, and one rule for all their masks and axes.
- TensorFlow's int32 tensors are int64 here (what ONNX's TopK, ArgMax and GatherND give and take);
  FloorDiv on integers is ``(a - Mod(a, b)) / b`` (ONNX's Div truncates).

ONNX contract: input ``input`` int32 [1, S, S, 3], RGB 0..255 (the graph normalises itself);
output ``output`` float32 [1, 6, 56]: per candidate person 17 keypoints (y, x, score; COCO order,
y and x in 0..1 of the input), then the box (ymin, xmin, ymax, xmax, 0..1) and the person score.
The bytes depend only on the source files and the pinned onnx, so the output's sha256 is pinned
in facebank/models/manifest.tsv (``convert:movenet-multipose``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from facebank.convert.onnx_graph import GraphBuilder
from facebank.convert.tfjs import attr, read_weights

INPUT_SIZE = 384
OPSET = 13
IR_VERSION = 7  # pinned (not the onnx package's default) so the bytes do not change with onnx upgrades
_PREFIX = "StatefulPartitionedCall/"
_TF_DTYPES = {"DT_FLOAT": np.float32, "DT_INT32": np.int32, "DT_BOOL": np.bool_}
_ONNX_DTYPES = {np.float32: TensorProto.FLOAT, np.int32: TensorProto.INT64, np.bool_: TensorProto.BOOL}


# --- the tfjs graph (tfjs.py reads it) ---------------------------------------------------------


def _short(name: str) -> str:
    return name.removeprefix(_PREFIX)


# --- numpy semantics of each op (constant folding, and output shapes on zeros) -----------------


def _strided_slice(node: dict[str, Any], x: np.ndarray, begin: np.ndarray, end: np.ndarray, step: np.ndarray):
    masks = {k: attr(node, f"{k}_mask", 0) for k in ("begin", "end", "ellipsis", "new_axis", "shrink_axis")}
    index: list[Any] = []
    for i in range(len(begin)):
        if masks["ellipsis"] >> i & 1:
            index.append(Ellipsis)
        elif masks["new_axis"] >> i & 1:
            index.append(None)
        elif masks["shrink_axis"] >> i & 1:
            index.append(int(begin[i]))
        else:
            start = None if masks["begin"] >> i & 1 else int(begin[i])
            stop = None if masks["end"] >> i & 1 else int(end[i])
            index.append(slice(start, stop, int(step[i])))
    return x[tuple(index)]


def _select(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if cond.ndim == 1 and a.ndim > 1:  # TF's Select picks whole rows by a vector condition
        cond = cond.reshape(-1, *([1] * (a.ndim - 1)))
    return np.where(cond, a, b)


def _top_k(x: np.ndarray, k: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(-x, axis=-1, kind="stable")[..., : int(k)]  # ties: the lower index first, as TF
    return [np.take_along_axis(x, order, -1), order.astype(np.int32)]


def _gather_nd(params: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return params[tuple(np.moveaxis(indices, -1, 0))]


def _reduce(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def reduce(node: dict[str, Any], x: np.ndarray, axes: np.ndarray) -> np.ndarray:
        return fn(x, axis=tuple(np.atleast_1d(axes).tolist()), keepdims=bool(attr(node, "keep_dims", False)))

    return reduce


def _cast(node: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return x.astype(_TF_DTYPES[attr(node, "DstT")])


_EVAL: dict[str, Callable[..., Any]] = {
    "Identity": lambda n, x: x,
    "Cast": _cast,
    "Abs": lambda n, x: np.abs(x),
    "Exp": lambda n, x: np.exp(x),
    "Sigmoid": lambda n, x: (1 / (1 + np.exp(-x))).astype(x.dtype),
    "Reciprocal": lambda n, x: (1 / x).astype(x.dtype),
    "AddV2": lambda n, a, b: a + b,
    "AddN": lambda n, *xs: sum(xs[1:], xs[0]),
    "Sub": lambda n, a, b: a - b,
    "Mul": lambda n, a, b: a * b,
    "RealDiv": lambda n, a, b: a / b,
    "FloorDiv": lambda n, a, b: np.floor_divide(a, b),
    "SquaredDifference": lambda n, a, b: (a - b) * (a - b),
    "Minimum": lambda n, a, b: np.minimum(a, b),
    "Maximum": lambda n, a, b: np.maximum(a, b),
    "Less": lambda n, a, b: a < b,
    "Greater": lambda n, a, b: a > b,
    "GreaterEqual": lambda n, a, b: a >= b,
    "Equal": lambda n, a, b: a == b,
    "LogicalAnd": lambda n, a, b: np.logical_and(a, b),
    "Select": lambda n, c, a, b: _select(c, a, b),
    "Shape": lambda n, x: np.array(x.shape, np.int32),
    "Size": lambda n, x: np.array(x.size, np.int32),
    "Reshape": lambda n, x, shape: x.reshape(shape.tolist()),
    "Squeeze": lambda n, x: np.squeeze(x, tuple(attr(n, "squeeze_dims", []))),
    "ExpandDims": lambda n, x, axis: np.expand_dims(x, int(axis)),
    "StridedSlice": _strided_slice,
    "Pack": lambda n, *xs: np.stack(xs, attr(n, "axis", 0)),
    "Unpack": lambda n, x: [np.take(x, i, attr(n, "axis", 0)) for i in range(attr(n, "num"))],
    "Split": lambda n, axis, x: np.split(x, attr(n, "num_split"), int(axis)),
    "ConcatV2": lambda n, *xs: np.concatenate(xs[:-1], int(xs[-1])),
    "Tile": lambda n, x, multiples: np.tile(x, multiples.tolist()),
    "Fill": lambda n, dims, value: np.full(dims.tolist(), value, value.dtype),
    "Range": lambda n, start, limit, delta: np.arange(start, limit, delta).astype(np.result_type(start, limit)),
    "Sum": _reduce(np.sum),
    "Max": _reduce(np.max),
    "ArgMax": lambda n, x, axis: np.argmax(x, int(axis)).astype(np.int32),
    "TopKV2": lambda n, x, k: _top_k(x, k),
    "GatherNd": lambda n, params, indices: _gather_nd(params, indices),
}
# Element-wise ops as ONNX nodes (same inputs); they follow their inputs' layout.
_UNARY = {"Identity": "Identity", "Abs": "Abs", "Exp": "Exp", "Sigmoid": "Sigmoid", "Reciprocal": "Reciprocal"}
_BINARY = {
    "AddV2": "Add",
    "Sub": "Sub",
    "Mul": "Mul",
    "RealDiv": "Div",
    "Minimum": "Min",
    "Maximum": "Max",
    "Less": "Less",
    "Greater": "Greater",
    "GreaterEqual": "GreaterOrEqual",
    "Equal": "Equal",
    "LogicalAnd": "And",
}
# Ops that only move elements: which of their inputs carry the data (the rest are constants).
_MOVES: dict[str, Callable[[int], range]] = {
    "StridedSlice": lambda n: range(1),
    "Tile": lambda n: range(1),
    "Unpack": lambda n: range(1),
    "Split": lambda n: range(1, 2),
    "Pack": lambda n: range(n),
    "ConcatV2": lambda n: range(n - 1),
}
_STRUCTURAL = {"Reshape", "Squeeze", "ExpandDims", "Select", "Sum", "Max", "ArgMax", "GatherNd", "TopKV2"}
_CONVOLUTIONS = {"_FusedConv2D", "FusedDepthwiseConv2dNative", "DepthwiseConv2dNative"}


# --- conversion ---------------------------------------------------------------------------------


@dataclass
class _Tensor:
    """A TensorFlow tensor: a constant (``value``) or a data-dependent ONNX value, by layout."""

    shape: tuple[int, ...]
    dtype: type
    value: np.ndarray | None = None
    names: dict[str, str] = field(default_factory=dict)  # "nhwc" (TensorFlow's) and/or "nchw"


def _known(t: _Tensor) -> np.ndarray:
    """The value of a tensor the graph computes from constants only (a weight, an axis, a size)."""
    if t.value is None:
        raise ValueError("a data-dependent tensor where the graph needs a constant")
    return t.value


def _same_pads(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> list[int]:
    """TensorFlow's 'SAME' padding [top, left, bottom, right]: the odd pixel at the end."""
    before, after = [], []
    for n, k, s in zip(size, kernel, stride, strict=True):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        before.append(total // 2)
        after.append(total - total // 2)
    return before + after


class _Converter(GraphBuilder):
    def __init__(self, nodes: list[dict[str, Any]], weights: dict[str, np.ndarray], size: int):
        super().__init__()
        self.nodes_by_name = {n["name"]: n for n in nodes}
        self.weights = weights
        self.size = size
        self.tensors: dict[str, _Tensor] = {}
        self._consts: dict[tuple[str, str], str] = {}

    # names and constants

    def onnx_const(self, t: _Tensor, key: str) -> str:
        """A folded tensor as an ONNX initialiser (int32 stored as int64: the graph's integer type)."""
        assert t.value is not None
        if (key, "nhwc") not in self._consts:
            value = t.value.astype(np.int64) if t.dtype is np.int32 else t.value
            self._consts[(key, "nhwc")] = self.const(key, value)
        return self._consts[(key, "nhwc")]

    def shared(self, name: str, value: np.ndarray) -> str:
        """An initialiser many nodes use (added once)."""
        if (name, "shared") not in self._consts:
            self._consts[(name, "shared")] = self.const(name, value)
        return self._consts[(name, "shared")]

    def name(self, t: _Tensor, key: str, layout: str = "nhwc") -> str:
        """``t`` as an ONNX value in ``layout``, transposing (once) when only the other one exists."""
        if t.value is not None:
            if layout == "nchw" and t.value.ndim == 4:
                if (key, "nchw") not in self._consts:
                    self._consts[(key, "nchw")] = self.const(f"{key}#nchw", t.value.transpose(0, 3, 1, 2))
                return self._consts[(key, "nchw")]
            if layout == "nchw" and t.value.ndim == 1 and t.value.size > 1:  # per channel
                if (key, "nchw") not in self._consts:
                    self._consts[(key, "nchw")] = self.const(f"{key}#nchw", t.value.reshape(-1, 1, 1))
                return self._consts[(key, "nchw")]
            return self.onnx_const(t, key)
        if layout not in t.names:
            other = next(iter(t.names.values()))
            perm = [0, 2, 3, 1] if layout == "nhwc" else [0, 3, 1, 2]
            t.names[layout] = self.node("Transpose", [other], f"{other}#{layout}", perm=perm)
        return t.names[layout]

    def tensor(self, ref: str) -> tuple[_Tensor, str]:
        base, _, index = ref.partition(":")
        key = _short(base) + (f":{index}" if index and index != "0" else "")
        return self.tensors[key], key

    # the walk

    def run(self, output: str) -> str:
        for node in self._order(output):
            outputs = self.convert_node(node)
            for i, t in enumerate(outputs):
                self.tensors[_short(node["name"]) + (f":{i}" if i else "")] = t
        out, key = self.tensor(output)
        return self.node("Identity", [self.name(out, key)], "output")

    def _order(self, output: str) -> list[dict[str, Any]]:
        """The nodes ``output`` depends on, each after its inputs (GraphDef order is not promised)."""
        order: list[dict[str, Any]] = []
        seen: set[str] = set()
        stack: list[tuple[str, bool]] = [(output, False)]
        while stack:
            name, done = stack.pop()
            if done:
                order.append(self.nodes_by_name[name])
                continue
            if name in seen:
                continue
            seen.add(name)
            stack.append((name, True))
            for ref in reversed(self.nodes_by_name[name].get("input", [])):
                if not ref.startswith("^"):
                    stack.append((ref.partition(":")[0], False))
        return order

    def convert_node(self, node: dict[str, Any]) -> list[_Tensor]:
        op = node["op"]
        if op == "Const":
            weight: np.ndarray = self.weights[node["name"]].astype(_TF_DTYPES[attr(node, "dtype")])
            return [_Tensor(weight.shape, weight.dtype.type, weight)]
        if op == "Placeholder":
            shape = (1, self.size, self.size, 3)
            return [_Tensor(shape, np.int32, names={"nhwc": self.input_name})]
        inputs = [self.tensor(ref) for ref in node.get("input", []) if not ref.startswith("^")]
        if all(t.value is not None for t, _ in inputs) and op in _EVAL:
            with np.errstate(all="ignore"):
                folded = _EVAL[op](node, *(t.value for t, _ in inputs))
            values = folded if isinstance(folded, list) else [folded]
            return [_Tensor(v.shape, np.asarray(v).dtype.type, np.asarray(v)) for v in values]
        if op in _CONVOLUTIONS:
            return [self.convolution(node, inputs)]
        if op == "MaxPool":
            return [self.max_pool(node, inputs[0])]
        if op == "ResizeBilinear":
            return [self.resize(node, inputs)]
        if op in ("Shape", "Size"):  # of a data-dependent tensor: its shape is known
            dims = inputs[0][0].shape
            known = np.array(dims if op == "Shape" else math.prod(dims), np.int32)
            return [_Tensor(known.shape, np.int32, known)]
        return self.data_op(node, inputs)

    @property
    def input_name(self) -> str:
        return "input"

    # data-dependent ops

    def shapes_of(self, node: dict[str, Any], inputs: list[tuple[_Tensor, str]]) -> list[tuple[tuple[int, ...], type]]:
        """Output shapes and dtypes: the op's numpy semantics run on zeros of the input shapes."""
        probes = [t.value if t.value is not None else np.zeros(t.shape, t.dtype) for t, _ in inputs]
        with np.errstate(all="ignore"):
            result = _EVAL[node["op"]](node, *probes)
        return [(np.shape(r), np.asarray(r).dtype.type) for r in (result if isinstance(result, list) else [result])]

    def data_op(self, node: dict[str, Any], inputs: list[tuple[_Tensor, str]]) -> list[_Tensor]:
        op, out = node["op"], _short(node["name"])
        if op not in _EVAL:
            raise ValueError(f"{node['name']}: TensorFlow op {op} is not supported")
        shapes = self.shapes_of(node, inputs)
        if op in _MOVES:
            return self.move(node, inputs, shapes)
        if op in _STRUCTURAL:
            return self.structural(node, inputs, shapes)
        (shape, dtype), layout = shapes[0], self.layout_of(inputs, shapes[0][0])
        names = [self.name(t, key, layout) for t, key in inputs]
        if op in _UNARY or op in _BINARY:
            result = self.node((_UNARY | _BINARY)[op], names, out)
        elif op == "Cast":
            result = self.node("Cast", names, out, to=_ONNX_DTYPES[_TF_DTYPES[attr(node, "DstT")]])
        elif op == "AddN":  # summed left to right, as tfjs does
            result = names[0]
            for i, other in enumerate(names[1:], 1):
                result = self.node("Add", [result, other], out if i == len(names) - 1 else f"{out}#{i}")
        elif op == "SquaredDifference":
            difference = self.node("Sub", names, f"{out}#difference")
            result = self.node("Mul", [difference, difference], out)
        else:  # FloorDiv
            result = self.floor_div(names, dtype, out)
        return [_Tensor(shape, dtype, names={layout: result})]

    def floor_div(self, names: list[str], dtype: type, out: str) -> str:
        if dtype is np.int32:  # ONNX's integer Div truncates; a - Mod(a, b) (Python's sign) divides exactly
            remainder = self.node("Mod", names, f"{out}#remainder", fmod=0)
            return self.node("Div", [self.node("Sub", [names[0], remainder], f"{out}#exact"), names[1]], out)
        return self.node("Floor", [self.node("Div", names, f"{out}#quotient")], out)

    def layout_of(self, inputs: list[tuple[_Tensor, str]], out_shape: tuple[int, ...]) -> str:
        """NCHW when every data input has an NCHW copy and the constants broadcast in it as well."""
        dynamic = [t for t, _ in inputs if t.value is None]
        if len(out_shape) != 4 or not dynamic or not all("nchw" in t.names and len(t.shape) == 4 for t in dynamic):
            return "nhwc"
        constants = [t.value for t, _ in inputs if t.value is not None]
        fits = all(c.ndim in (0, 4) or (c.ndim == 1 and c.size in (1, out_shape[3])) for c in constants)
        return "nchw" if fits else "nhwc"

    def structural(
        self, node: dict[str, Any], inputs: list[tuple[_Tensor, str]], shapes: list[tuple[tuple[int, ...], type]]
    ) -> list[_Tensor]:
        op, out = node["op"], _short(node["name"])
        data = [self.name(t, k) for t, k in inputs if t.value is None or op in ("Select", "GatherNd")]
        names = data if op in ("Select", "GatherNd") else [self.name(*inputs[0])]
        (shape, dtype) = shapes[0]
        if op in ("Reshape", "Squeeze", "ExpandDims"):
            target = self.const(f"{out}#shape", np.array(shape, np.int64))
            result = self.node("Reshape", [names[0], target], out)
        elif op == "Select":
            cond = names[0]
            if len(inputs[0][0].shape) == 1 and len(shape) > 1:
                rows = np.array([-1] + [1] * (len(shape) - 1), np.int64)
                cond = self.node("Reshape", [cond, self.const(f"{out}#rows", rows)], f"{out}#condition")
            result = self.node("Where", [cond, names[1], names[2]], out)
        elif op in ("Sum", "Max"):
            axes = np.atleast_1d(_known(inputs[1][0])).astype(np.int64)
            keep = int(bool(attr(node, "keep_dims", False)))
            if op == "Sum":
                result = self.node("ReduceSum", [names[0], self.const(f"{out}#axes", axes)], out, keepdims=keep)
            else:
                result = self.node("ReduceMax", [names[0]], out, axes=axes.tolist(), keepdims=keep)
        elif op == "ArgMax":
            result = self.node("ArgMax", [names[0]], out, axis=int(_known(inputs[1][0])), keepdims=0)
        elif op == "GatherNd":
            result = self.node("GatherND", names, out)
        elif op == "TopKV2":
            k = self.const(f"{out}#k", np.array([int(_known(inputs[1][0]))], np.int64))
            self.nodes.append(helper.make_node("TopK", [names[0], k], [out, f"{out}:1"], name=out, axis=-1))
            return [_Tensor(s, d, names={"nhwc": n}) for (s, d), n in zip(shapes, [out, f"{out}:1"], strict=True)]
        else:
            raise ValueError(f"{node['name']}: TensorFlow op {op} on data is not supported")
        return [_Tensor(shape, dtype, names={"nhwc": result})]

    def move(
        self, node: dict[str, Any], inputs: list[tuple[_Tensor, str]], shapes: list[tuple[tuple[int, ...], type]]
    ) -> list[_Tensor]:
        """An op that only moves elements, as Gathers from its data inputs laid end to end."""
        out = _short(node["name"])
        data = set(_MOVES[node["op"]](len(inputs)))
        offset, probes, flat = 0, [], []
        for i, (t, key) in enumerate(inputs):
            if i not in data:
                probes.append(t.value)
                continue
            size = math.prod(t.shape)
            probes.append(np.arange(offset, offset + size, dtype=np.int64).reshape(t.shape))
            flat.append(
                self.node(
                    "Reshape",
                    [self.name(t, key), self.shared("flat#shape", np.array([-1], np.int64))],
                    f"{out}#flat{i}",
                )
            )
            offset += size
        source = flat[0] if len(flat) == 1 else self.node("Concat", flat, f"{out}#elements", axis=0)
        result = _EVAL[node["op"]](node, *probes)
        outputs = []
        for i, (indices, (shape, dtype)) in enumerate(
            zip(result if isinstance(result, list) else [result], shapes, strict=True)
        ):
            name = out + (f":{i}" if i else "")
            gathered = self.node("Gather", [source, self.const(f"{name}#indices", np.asarray(indices, np.int64))], name)
            outputs.append(_Tensor(shape, dtype, names={"nhwc": gathered}))
        return outputs

    # layers on the feature maps (NCHW)

    def convolution(self, node: dict[str, Any], inputs: list[tuple[_Tensor, str]]) -> _Tensor:
        op, out = node["op"], _short(node["name"])
        (x, key), (filters_t, _) = inputs[0], inputs[1]
        assert filters_t.value is not None and attr(node, "data_format", "NHWC") == "NHWC"
        if any(d != 1 for d in attr(node, "dilations", [1, 1, 1, 1])):
            raise ValueError(f"{node['name']}: dilated convolutions are not supported")
        filters = filters_t.value
        kh, kw, c_in, c_out = filters.shape
        if op == "_FusedConv2D":
            weights, group = filters.transpose(3, 2, 0, 1), 1
        else:  # depthwise [kh, kw, in, multiplier] -> [in * multiplier, 1, kh, kw]
            weights, group, c_out = filters.transpose(2, 3, 0, 1).reshape(c_in * c_out, 1, kh, kw), c_in, c_in * c_out
        fused = attr(node, "fused_ops", []) if op != "DepthwiseConv2dNative" else []
        if fused and fused[0] != "BiasAdd" or len(fused) > 2 or fused[1:] not in ([], ["Relu"], ["Relu6"]):
            raise ValueError(f"{node['name']}: fused ops {fused} are not supported")
        stride = tuple(attr(node, "strides")[1:3])
        n, h, w, _ = x.shape
        padding = attr(node, "padding")
        pads = _same_pads((h, w), (kh, kw), stride) if padding == "SAME" else [0, 0, 0, 0]
        conv_inputs = [self.name(x, key, "nchw"), self.filters(out, np.ascontiguousarray(weights))]
        if fused:
            conv_inputs.append(self.const(f"{out}#bias", _known(inputs[2][0])))
        name = out if not fused[1:] else f"{out}#conv"
        result = self.node(
            "Conv", conv_inputs, name, group=group, kernel_shape=[kh, kw], strides=list(stride), pads=pads
        )
        if fused[1:] == ["Relu"]:
            result = self.node("Relu", [result], out)
        elif fused[1:] == ["Relu6"]:
            bounds = [
                self.shared("relu6#min", np.array(0, np.float32)),
                self.shared("relu6#max", np.array(6, np.float32)),
            ]
            result = self.node("Clip", [result, *bounds], out)
        out_h, out_w = (
            (math.ceil(h / stride[0]), math.ceil(w / stride[1]))
            if padding == "SAME"
            else ((h - kh) // stride[0] + 1, (w - kw) // stride[1] + 1)
        )
        return _Tensor((n, out_h, out_w, c_out), np.float32, names={"nchw": result})

    def filters(self, out: str, weights: np.ndarray) -> str:
        """Convolution weights, stored as float16 and widened by a Cast (folded when the session loads)
        when they are exactly float16 values, as the tfjs model's float16-quantised weights are: the
        file is half the size for the same numbers."""
        narrow = weights.astype(np.float16)
        if not np.array_equal(narrow.astype(np.float32), weights):
            return self.const(f"{out}#weights", weights)
        return self.node("Cast", [self.const(f"{out}#weights16", narrow)], f"{out}#weights", to=TensorProto.FLOAT)

    def max_pool(self, node: dict[str, Any], x_in: tuple[_Tensor, str]) -> _Tensor:
        x, key = x_in
        kernel, stride = attr(node, "ksize")[1:3], attr(node, "strides")[1:3]
        if attr(node, "padding") != "SAME" or stride != [1, 1]:
            raise ValueError(f"{node['name']}: only stride-1 'SAME' max pooling is supported")
        pads = _same_pads(x.shape[1:3], tuple(kernel), tuple(stride))  # padding never wins a max, as in TF
        result = self.node(
            "MaxPool", [self.name(x, key, "nchw")], _short(node["name"]), kernel_shape=kernel, strides=stride, pads=pads
        )
        return _Tensor(x.shape, np.float32, names={"nchw": result})

    def resize(self, node: dict[str, Any], inputs: list[tuple[_Tensor, str]]) -> _Tensor:
        (x, key), (size_t, _) = inputs
        if attr(node, "align_corners", False) or not attr(node, "half_pixel_centers", False):
            raise ValueError(f"{node['name']}: only half-pixel-centre bilinear resizing is supported")
        assert size_t.value is not None
        out = _short(node["name"])
        height, width = (int(v) for v in size_t.value)
        sizes = self.const(f"{out}#sizes", np.array([x.shape[0], x.shape[3], height, width], np.int64))
        result = self.node(
            "Resize",
            [self.name(x, key, "nchw"), "", "", sizes],
            out,
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        )
        return _Tensor((x.shape[0], height, width, x.shape[3]), np.float32, names={"nchw": result})


def movenet_graph(
    model_json: dict[str, Any], weights: dict[str, np.ndarray], size: int = INPUT_SIZE
) -> onnx.ModelProto:
    if size % 32:
        raise ValueError(f"MoveNet's input size must be a multiple of 32, not {size}")
    topology = model_json["modelTopology"]
    output = model_json["signature"]["outputs"]["output_0"]["name"].partition(":")[0]
    converter = _Converter(topology["node"], weights, size)
    converter.run(output)
    image = helper.make_tensor_value_info("input", TensorProto.INT32, [1, size, size, 3])
    result = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 6, 56])
    graph = helper.make_graph(converter.nodes, "movenet_multipose_lightning", [image], [result], converter.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="facebank.engine.movenet_convert",  # pinned bytes: the name it had when the sha256 was taken
        doc_string=(
            f"MoveNet MultiPose Lightning (Google, Apache-2.0; {model_json.get('generatedBy', '')}). Input: RGB 0..255 "
            f"NHWC {size}x{size} int32. Output [1, 6, 56]: 17 x (y, x, score), ymin, xmin, ymax, xmax, score."
        ),
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def convert(model_path: str | Path, out: str | Path, size: int = INPUT_SIZE) -> dict[str, object]:
    """Write the ONNX graph of the tfjs graph model ``model_path`` (its weights binary beside it) at
    ``size`` x ``size`` input to ``out``; returns the output's size and sha256."""
    model_path = Path(model_path)
    model_json = json.loads(model_path.read_text())
    if model_json.get("format") != "graph-model":
        raise ValueError(f"{model_path}: not a tfjs graph model")
    weights = read_weights(model_json["weightsManifest"], model_path.parent)
    blob = movenet_graph(model_json, weights, size).SerializeToString(deterministic=True)
    Path(out).write_bytes(blob)
    return {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="tfjs graph model JSON (movenet-multipose.json), its .bin beside it")
    parser.add_argument("out", help="ONNX file to write")
    parser.add_argument("--size", type=int, default=INPUT_SIZE, help="square input size, a multiple of 32")
    args = parser.parse_args(argv)
    print(convert(args.model, args.out, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
