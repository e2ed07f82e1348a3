"""onnxruntime sessions: one per model file and thread count per process, thread-pinned for
predictable latency. onnxruntime is imported by the first session, not by importing the engine,
so a process that never runs a model (a metadata-only Lambda) never loads it."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime as ort


@functools.cache
def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    import onnxruntime as ort

    ort.disable_telemetry_events()  # a no-op off Windows; set in code so no environment is touched
    options = ort.SessionOptions()
    # Requests are served concurrently by threads; each inference uses a fixed small pool
    # (Settings.ort_threads) so parallel requests do not oversubscribe the cores.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # symbolic-shape warnings for the H x W detector are expected
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
