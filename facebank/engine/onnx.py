"""onnxruntime sessions: one per model file per process, thread-pinned for predictable latency."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import onnxruntime as ort

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


@functools.cache
def session(path: Path | str, model_bytes: bytes | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # Requests are served concurrently by threads; each inference uses a fixed small pool so
    # parallel requests do not oversubscribe the cores. FACEBANK_ORT_THREADS overrides.
    options.intra_op_num_threads = int(os.environ.get("FACEBANK_ORT_THREADS", "1"))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # symbolic-shape warnings for the resized detector are expected
    return ort.InferenceSession(model_bytes or str(path), options, providers=["CPUExecutionProvider"])
