"""Live video for stream processors (issue 26): the fragments a runtime reads from its input.

A Kinesis Video stream delivers MKV fragments, each with a number and two timestamps
(``facebank.engine.mkv``); other sources (a file, RTSP, HTTP, HLS) are cut into fragments of the
same shape here, so the analysis (``facebank.operations.stream_run``) sees one kind of input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Fragment:
    number: str  # KVS fragment number (a decimal string); synthesised for non-KVS sources
    server_timestamp: float  # epoch seconds (KVS: AWS_KINESISVIDEO_SERVER_TIMESTAMP)
    producer_timestamp: float  # epoch seconds (KVS: AWS_KINESISVIDEO_PRODUCER_TIMESTAMP)
    # (offset in seconds from the fragment's start, RGB uint8 HxWx3), decoded lazily.
    frames: Iterable[tuple[float, np.ndarray]]
