"""Eyeglasses, Sunglasses, Beard, Mustache and FaceOccluded: small heads on features the engine
already has for a face under ALL (the Face Mesh's 468 points and the pixels around them).

``pixel_features`` is the one feature function: ``bench/appearance.py`` fits the heads on it over
hand-labelled LFW faces (tests/data/lfw_attributes.tsv) and the engine calls the same function at
request time, so training and serving cannot drift apart. The fitted heads (standardisation,
logistic weights, calibration) are committed as numbers in ``appearance_heads.json`` and turned into
an ONNX file by the fetch step (``facebank/convert/appearance.py``, manifest row ``convert:appearance-heads``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facebank.engine.onnx import session

if TYPE_CHECKING:
    from facebank.engine import Face

GREY = np.array([0.299, 0.587, 0.114])
MARGIN = 0.15  # of the mesh's extent: the region the features read, beyond the mesh's bounding box
MAX_WIDTH = 160  # pixels: wider faces are reduced to at most this first (``_region``)


def _region(rgb: np.ndarray, mesh: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(grey crop around the mesh, the mesh in that crop's pixels, the mesh's width in pixels). A face
    wider than MAX_WIDTH is reduced by a whole factor first (four interleaved subsamplings averaged): the
    features are ratios to the face's size, and a 600-pixel face would otherwise cost ~130 ms (LFW's
    faces, the training data, are 60-130 pixels wide and never reduced)."""
    h, w = rgb.shape[:2]
    low, high = mesh[:, :2].min(0), mesh[:, :2].max(0)
    extent = float(max(high - low))
    x0, y0 = np.clip(np.floor(low - MARGIN * extent).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(high + MARGIN * extent).astype(int) + 1, 0, [w, h])
    region, points, width = rgb[y0:y1, x0:x1], mesh[:, :2] - [x0, y0], float(high[0] - low[0])
    factor = int(np.ceil(width / MAX_WIDTH))
    if factor > 1 and min(region.shape[:2]) >= 2 * factor:
        rows, cols = (n // factor * factor for n in region.shape[:2])
        half = factor // 2
        # the four phases summed as integers (exact), then luma and the mean in one product
        total = region[0:rows:factor, 0:cols:factor].astype(np.uint16)
        for dy, dx in ((0, half), (half, 0), (half, half)):
            total += region[dy:rows:factor, dx:cols:factor]
        return _grey(total, GREY / 4), points / factor, width / factor
    return _grey(region), points, width


def _grey(rgb: np.ndarray, weights: np.ndarray = GREY) -> np.ndarray:
    """Luma of an H x W x 3 image as float64 (one BLAS product: a 3-D ``@`` loops in Python-speed gufuncs)."""
    return (np.ascontiguousarray(rgb, dtype=np.float64).reshape(-1, 3) @ weights).reshape(rgb.shape[:2])


def _integral(image: np.ndarray) -> np.ndarray:
    """Summed-area table of an H x W x C image, with a leading row and column of zeros."""
    out = np.zeros((image.shape[0] + 1, image.shape[1] + 1, *image.shape[2:]))
    np.cumsum(image, axis=0, out=out[1:, 1:])
    np.cumsum(out[1:, 1:], axis=1, out=out[1:, 1:])
    return out


def _box_means(integral: np.ndarray, points: np.ndarray, radius: int) -> np.ndarray:
    """Mean of the image in a (2 radius + 1) square around each point (clipped to the image), from its
    summed-area table ``_integral``: one vectorised lookup of four corners per point."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    x = np.clip(np.round(points[:, 0]).astype(int), 0, w - 1)
    y = np.clip(np.round(points[:, 1]).astype(int), 0, h - 1)
    x0, x1 = np.clip(x - radius, 0, w), np.clip(x + radius + 1, 0, w)
    y0, y1 = np.clip(y - radius, 0, h), np.clip(y + radius + 1, 0, h)
    sums = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    return sums / area[:, None]


# MediaPipe's face oval (FACEMESH_FACE_OVAL, in order round the face): rings of points outside it, at
# RINGS times their distance from the mesh's centre, read the jaw's edge and below the chin.
OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
        176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)  # fmt: skip
RINGS = (1.1, 1.2)
FINE, COARSE = 40, 12  # box sides: the face's width over these
POINTS = 468 + len(OVAL) * len(RINGS)
FEATURES = 2 * 468 + 2 * POINTS + 2 * (POINTS - 468)  # 2,160


def pixel_features(rgb: np.ndarray, mesh: np.ndarray) -> np.ndarray:
    """FEATURES numbers for one face from its Face Mesh (468 x 3 image pixels). At each vertex, in a box
    1/40 of the face wide: the grey level, standardised within the face (dark lenses, hair on the jaw, a
    hand or a microphone), and the grey-level gradient magnitude over its mean on the face (frames,
    beard texture, an outline across the face). Then the same two at the vertices and at two rings
    outside the face oval, in a box 1/12 of the face wide (a frame's outline, the jaw's edge), and the
    fine-scale pair at the rings alone."""
    if not rgb.size or mesh.shape[0] != 468:
        return np.zeros(FEATURES)
    crop, points, width = _region(rgb, mesh)
    if crop.shape[0] < 3 or crop.shape[1] < 3:
        return np.zeros(FEATURES)
    fine, coarse = max(1, int(round(width / FINE))), max(1, int(round(width / COARSE)))
    dy, dx = np.gradient(crop)
    # grey level and gradient magnitude side by side: one summed-area table serves every box
    table = _integral(np.stack([crop, np.sqrt(dx * dx + dy * dy)], axis=-1))
    centre = points.mean(0)
    ring = np.vstack([centre + scale * (points[list(OVAL)] - centre) for scale in RINGS])
    everywhere = np.vstack([points, ring])
    narrow, wide = _box_means(table, everywhere, fine), _box_means(table, everywhere, coarse)
    luminance, edges = narrow[:468, 0], narrow[:468, 1]
    wide_luminance, wide_edges = wide[:, 0], wide[:, 1]
    ring_fine = np.concatenate([narrow[468:, 0], narrow[468:, 1]])
    return np.concatenate(
        [
            (luminance - luminance.mean()) / (luminance.std() + 1e-6),
            edges / (edges.mean() + 1e-6),
            (wide_luminance - wide_luminance.mean()) / (wide_luminance.std() + 1e-6),
            wide_edges / (wide_edges.mean() + 1e-6),
            ring_fine / (np.abs(ring_fine).mean() + 1e-6),
        ]
    )


# Head order in the ONNX file's output (botocore Attribute name, FaceDetail member).
HEADS = (
    ("EYEGLASSES", "Eyeglasses"),
    ("SUNGLASSES", "Sunglasses"),
    ("BEARD", "Beard"),
    ("MUSTACHE", "Mustache"),
    ("FACE_OCCLUDED", "FaceOccluded"),
)


class AppearanceHeads:
    """The fetched heads (``facebank/convert/appearance.py``): features in, P(true) per head out. Only the
    heads that met their target (the file's ``shipped`` metadata) are run and returned (``provides``)."""

    def __init__(self, path: Path, threads: int = 1):
        self.session = session(path, threads)
        shipped = self.session.get_modelmeta().custom_metadata_map.get("shipped", "").split(",")
        self.members = {name: member for name, member in HEADS if name in shipped}
        self.provides = frozenset(self.members)

    def infer(self, features: np.ndarray) -> dict[str, float]:
        if not self.members:
            return {}
        outputs = self.session.run(list(self.members), {"features": features.astype(np.float32)[None]})
        return {name: float(p[0, 0]) for name, p in zip(self.members, outputs, strict=True)}

    def postprocess(self, probabilities: dict[str, float]) -> dict[str, Any]:
        return {
            self.members[n]: {"Value": p >= 0.5, "Confidence": 100.0 * max(p, 1.0 - p)}
            for n, p in probabilities.items()
        }

    def describe(self, rgb: np.ndarray, face: Face, mesh: np.ndarray) -> dict[str, Any]:
        return self.postprocess(self.infer(pixel_features(rgb, mesh)))
