"""MediaPipe Face Mesh v1 (Apache-2.0): 468 3-D landmarks and a face-presence score per face.

The model wants an upright face crop: we rotate the image so the face is upright (``upright_angle``:
the detector's five points fitted to a frontal template, not the eye line alone, which turns at
random when a profile face's two eye points nearly meet) and take a square around the detector box.
MediaPipe crops 1.5x the bounding box of the previous mesh; on faces/dev that box is 0.90x YuNet's
longer side and centred 0.05 of it lower, so the same crop from a YuNet box is 1.35x its side, moved
down by 0.05x (a fixed point: the mesh's size drifts with the crop, so this was iterated until the
two agreed).
Indices follow MediaPipe's mesh topology, where "right" is the subject's right (image left).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebank.engine.align import ARCFACE_112, similarity_transform, warp
from facebank.engine.onnx import session

SIZE = 192
CROP_SCALE = 1.35  # crop side / longer side of the YuNet box
CROP_SHIFT = 0.05  # crop centre below the box centre, along the face's vertical, / longer side


@dataclass(frozen=True)
class Mesh:
    points: np.ndarray  # 468 x 3 in image pixels; z (away from the camera) in the same scale as x
    presence: float  # face-presence probability, 0..1 (~1 even behind sunglasses or a hand: README)


def upright_angle(points: np.ndarray) -> float:
    """Angle (radians) of the face's horizontal in the image, from the detector's points: with all
    five, the similarity that maps them onto the ArcFace template (the eyes above the mouth keep it
    right for a profile face); with two (eye centres, image-left first), the eye line."""
    if len(points) >= 5:
        m = similarity_transform(ARCFACE_112, np.asarray(points[:5], np.float64))
        return float(np.arctan2(m[1, 0], m[0, 0]))
    dx, dy = points[1] - points[0]
    return float(np.arctan2(dy, dx))


def crop_matrix(center: np.ndarray, side: float, angle: float, size: int, mirror: bool = False) -> np.ndarray:
    """2x3 similarity taking the image to a ``size`` square crop of ``side`` pixels, rotated by ``angle``."""
    c, s = np.cos(angle) * size / side, np.sin(angle) * size / side
    linear = np.array([[c, s], [-s, c]])
    if mirror:
        linear[0] *= -1
    shift = size / 2 - linear @ center
    return np.hstack([linear, shift[:, None]])


def warp_crop(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``align.warp`` of only the pixels the crop can reach: a face in a large photo costs the same
    as in a small one (warping the whole 2.6-megapixel photo took ~5 ms per crop)."""
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]]) @ inverse[:, :2].T + inverse[:, 2]
    h, w = rgb.shape[:2]
    x1, y1 = np.clip(np.floor(corners.min(0)).astype(int) - 1, 0, [w, h])
    x2, y2 = np.clip(np.ceil(corners.max(0)).astype(int) + 2, 0, [w, h])
    if x2 <= x1 or y2 <= y1:
        return np.zeros((size, size, 3), np.uint8)
    shifted = matrix + matrix[:, :2] @ [[0, 0, x1], [0, 0, y1]]  # the same crop, from the region's origin
    return warp(np.ascontiguousarray(rgb[y1:y2, x1:x2]), shifted, (size, size))


def to_image(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Crop coordinates (x, y, z) back to the image; z is scaled like x and y."""
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    xy = points[:, :2] @ inverse[:, :2].T + inverse[:, 2]
    z = points[:, 2:] * np.sqrt(abs(np.linalg.det(inverse[:, :2])))
    return np.hstack([xy, z])


class FaceMesh:
    def __init__(self, path: Path, threads: int = 1):
        self.session = session(path, threads)
        self.input = self.session.get_inputs()[0].name

    def preprocess(
        self, rgb: np.ndarray, box: np.ndarray, points: np.ndarray, angle: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        long_side = float(np.max(box[2:] - box[:2]))
        angle = upright_angle(points) if angle is None else angle
        down = np.array([-np.sin(angle), np.cos(angle)])  # the face's vertical in the image
        center = (box[:2] + box[2:]) / 2 + CROP_SHIFT * long_side * down
        matrix = crop_matrix(center, CROP_SCALE * long_side, angle, SIZE)
        crop = warp_crop(rgb, matrix, SIZE).astype(np.float32)
        return (crop / 255.0).transpose(2, 0, 1)[None], matrix  # MediaPipe feeds RGB in [0, 1]

    def infer(self, blob: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input: blob})

    def postprocess(self, out: list[np.ndarray], matrix: np.ndarray) -> Mesh:
        points = to_image(out[0].reshape(-1, 3).astype(np.float64), matrix)
        return Mesh(points, float(1.0 / (1.0 + np.exp(-out[1].item()))))

    def run(self, rgb: np.ndarray, box: np.ndarray, points: np.ndarray, angle: float | None = None) -> Mesh:
        """Mesh of the face in ``box`` whose detector points are ``points`` (5 x 2 as YuNet gives them,
        or only the image-left and image-right eye centres); ``angle`` (radians) turns the crop
        instead of ``upright_angle(points)``."""
        blob, matrix = self.preprocess(rgb, box, points, angle)
        return self.postprocess(self.infer(blob), matrix)
