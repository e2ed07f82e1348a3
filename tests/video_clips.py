"""Videos made in the tests with PyAV, for exact ground truth: known photos shown between known
timestamps on a plain background (a uniquely named helper module, like storage_helpers)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Shown:
    """A photo pasted at (left, top) pixels of the frame for frames with start_ms <= t < end_ms."""

    photo: Path
    left: int
    top: int
    start_ms: int
    end_ms: int
    height: int = 240  # the photo is scaled to this height


def make_clip(
    shown: list[Shown],
    duration_ms: int,
    fps: int = 10,
    size: tuple[int, int] = (640, 360),
    codec: str = "libx264",
    container_format: str = "mp4",
) -> bytes:
    import av

    width, height = size
    photos = {}
    for s in shown:
        img = Image.open(s.photo).convert("RGB")
        photos[s] = np.asarray(img.resize((round(img.width * s.height / img.height), s.height)))
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(duration_ms * fps // 1000):
            t = i * 1000 // fps
            frame = np.full((height, width, 3), 90, np.uint8)
            for s, pixels in photos.items():
                if s.start_ms <= t < s.end_ms:
                    h, w = pixels.shape[:2]
                    frame[s.top : s.top + h, s.left : s.left + w] = pixels[: height - s.top, : width - s.left]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()
