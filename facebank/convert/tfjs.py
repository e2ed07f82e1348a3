"""Reading a tfjs graph model: its weights manifest's tensors and its GraphDef node attributes
(for the MoveNet converter, ``movenet.py``)."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import numpy as np

STORED = {"float32": np.float32, "int32": np.int32}


def read_weights(groups: list[dict[str, Any]], directory: Path) -> dict[str, np.ndarray]:
    """The tensors of a tfjs weights manifest (tfjs's ``io.decodeWeights``): each group's files are
    one byte stream holding its tensors end to end; ``float16`` quantisation stores float32
    weights as float16, widened exactly."""
    tensors: dict[str, np.ndarray] = {}
    for group in groups:
        stream = b"".join((directory / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            count = math.prod(spec["shape"])
            quantisation = spec.get("quantization")
            if quantisation and quantisation["dtype"] != "float16":
                raise ValueError(f"{spec['name']}: quantisation {quantisation['dtype']} is not supported")
            stored = np.dtype(np.float16 if quantisation else STORED[spec["dtype"]])
            values = np.frombuffer(stream, stored, count, offset).astype(STORED[spec["dtype"]])
            offset += count * stored.itemsize
            tensors[spec["name"]] = values.reshape(spec["shape"])
        if offset != len(stream):
            raise ValueError(f"the weights use {offset} of {len(stream)} bytes")
    return tensors


def attr(node: dict[str, Any], name: str, default: Any = None) -> Any:
    """A GraphDef attribute as a Python value (ints, bools, strings, types, lists of ints/strings)."""
    value = node.get("attr", {}).get(name)
    if value is None:
        return default
    if "list" in value:
        items = value["list"]
        if "i" in items:
            return [int(i) for i in items["i"]]
        return [base64.b64decode(s).decode() for s in items.get("s", [])]
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "i" in value:
        return int(value["i"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    if "f" in value:
        return float(value["f"])
    return default
