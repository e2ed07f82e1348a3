"""Similarity alignment of a face to a recogniser's landmark template."""

from __future__ import annotations

import numpy as np
from PIL import Image

# ArcFace / InsightFace 112x112 template: image-left eye, image-right eye, nose tip, mouth corners.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991) mapping src points onto dst; returns a 2x3 matrix."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1  # no reflections
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(0).sum()
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def warp(rgb: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Sample the output image of ``size`` (w, h) whose pixel p comes from source ``matrix^-1 p``."""
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    coefficients = inverse.ravel().tolist()
    out = Image.fromarray(rgb).transform(size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
    return np.asarray(out)


def align(rgb: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return warp(rgb, similarity_transform(landmarks, template), size)
