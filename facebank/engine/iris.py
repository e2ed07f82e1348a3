"""MediaPipe Iris (Apache-2.0): eyelid contour and iris landmarks on an eye crop.

Following MediaPipe's iris graph: a square of 2.3x the corner-to-corner distance, rotated so the
corners are level, RGB in [0, 1]. The model was trained on the eye that appears on the image
left of an upright face (the subject's right eye); the other eye is mirrored before it goes in,
so its outputs come back through the same mirrored transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebank.engine.mesh import crop_matrix, to_image, warp_crop
from facebank.engine.onnx import session

SIZE = 64
CROP_SCALE = 2.3
# The eyelid contour is the first 16 of the 71 eye points: the lower lid from the outer to the
# inner corner (0..8, mesh 33, 7, ... 133), then the upper lid between them (9..15, mesh 246 ... 173).
LOWER_LID = list(range(9))  # outer corner ... inner corner
UPPER_LID = [0, *range(9, 16), 8]  # outer corner ... inner corner


@dataclass(frozen=True)
class Eye:
    contour: np.ndarray  # 71 x 3 image pixels: eyelid contour (first 16), then brow and surrounds
    iris: np.ndarray  # 5 x 3 image pixels: centre, then four points on the iris edge


class Iris:
    def __init__(self, path: Path, threads: int = 1):
        self.session = session(path, threads)
        self.input = self.session.get_inputs()[0].name

    def preprocess(self, rgb: np.ndarray, outer: np.ndarray, inner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``outer`` and ``inner`` eye corners in image pixels; an image-right eye has outer.x > inner.x."""
        left, right = sorted((outer, inner), key=lambda p: p[0])
        dx, dy = right - left
        mirror = bool(outer[0] > inner[0])  # the subject's left eye: mirror it into a right eye
        matrix = crop_matrix((outer + inner) / 2, CROP_SCALE * np.hypot(dx, dy), np.arctan2(dy, dx), SIZE, mirror)
        crop = warp_crop(rgb, matrix, SIZE).astype(np.float32)
        return (crop / 255.0).transpose(2, 0, 1)[None], matrix

    def infer(self, blob: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input: blob})

    def postprocess(self, out: list[np.ndarray], matrix: np.ndarray) -> Eye:
        contour, iris = (to_image(o.reshape(-1, 3).astype(np.float64), matrix) for o in out)
        return Eye(contour, iris)

    def run(self, rgb: np.ndarray, outer: np.ndarray, inner: np.ndarray) -> Eye:
        blob, matrix = self.preprocess(rgb, outer, inner)
        return self.postprocess(self.infer(blob), matrix)
