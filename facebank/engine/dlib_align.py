"""dlib's face chip alignment in numpy (no dlib at run time).

Reproduces ``dlib.get_face_chip(img, shape5, size, padding)``: ``get_face_chip_details`` fits a
similarity transform (``find_similarity_transform``, Umeyama) from template points in the chip to
the landmarks, keeps it as a rotated rectangle, and ``extract_image_chip`` samples that rectangle
bilinearly -- from a ``pyramid_down<2>`` level when the rectangle is more than ~4x the chip's area,
so a large face is low-pass filtered the same way before it is shrunk to 150x150.

dlib's 5-point predictor (``shape_predictor_5_face_landmarks.dat``) gives, in this order: outer and
inner corner of the image-right eye, outer and inner corner of the image-left eye, base of the
nose. A detector such as YuNet gives other points (eye centres, nose tip, mouth corners):
``face_chip_from_eye_nose_mouth`` maps their mean position in dlib's chips onto the same 150x150
frame, but the engine predicts dlib's own five points instead (``dlib_shape``), which measured
better; the template remains the frame in which that predictor's start box is placed.
"""

from __future__ import annotations

import math

import numpy as np

# Template of dlib's 5-point mapping (interpolation.h, get_face_chip_details), in units of the
# unpadded face square: x, y in [0, 1].
DLIB5_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],  # image-right eye, outer corner
        [0.6460604764104, 0.2289674387677],  # image-right eye, inner corner
        [0.1205750620789, 0.2137274526848],  # image-left eye, outer corner
        [0.3340850613712, 0.2290642403242],  # image-left eye, inner corner
        [0.4901123135679, 0.6277975316475],  # base of the nose
    ]
)

# Mean position, in the same units, of YuNet's five points inside dlib's own chips (dlib HOG
# detector + 5-point predictor + get_face_chip_details) over shared/faces/dev: the 220 images where
# YuNet's largest face is dlib's. Per-face spread is ~3-7 chip pixels; two halves of the identities
# agree to 2 pixels.
EYE_NOSE_MOUTH_TEMPLATE = np.array(
    [
        [0.2280, 0.2077],  # image-left eye centre (the subject's right eye)
        [0.7736, 0.2054],  # image-right eye centre
        [0.4945, 0.5269],  # nose tip
        [0.2732, 0.7690],  # image-left mouth corner
        [0.7352, 0.7681],  # image-right mouth corner
    ]
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (m, t) with dst ~ m @ src + t, as dlib's find_similarity_transform."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mean_src, mean_dst = src.mean(0), dst.mean(0)
    a, b = src - mean_src, dst - mean_dst
    sigma_src = (a * a).sum() / len(src)
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.ones(2)
    # dlib tests det(cov) < 0 (or == 0 and this); the same for full-rank cov, and robust to rounding
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[1 if d[1] < d[0] else 0] = -1  # a rotation, never a reflection
    r = u @ np.diag(s) @ vt
    c = (d * s).sum() / sigma_src if sigma_src else 1.0
    return c * r, mean_dst - c * r @ mean_src


def extract_chip(rgb: np.ndarray, chip_points: np.ndarray, image_points: np.ndarray, size: int) -> np.ndarray:
    """Chip of size x size whose ``chip_points`` land on ``image_points``, sampled as dlib does."""
    m, t = similarity_transform(chip_points, image_points)
    # chip_details: the similarity becomes a rectangle (dlib drectangle: l, t, r, b, inclusive) + angle.
    angle, scale = math.atan2(m[1, 0], m[0, 0]), math.hypot(m[0, 0], m[1, 0])
    cx, cy = m @ np.array([size / 2.0, size / 2.0]) + t
    half = (size * scale - 1) / 2  # centered_drect(p, w, h) spans p -+ (w - 1) / 2
    rect = np.array([cx - half, cy - half, cx + half, cy + half])

    # The region the pyramid is built from: the rotated rectangle grown by 2 px per pyramid level
    # (scaled back up), as extract_image_chips crops it; it decides the rounding at the crop edge.
    grow, down = 2.0, _rect_down(rect)
    while _area(down) > size * size:
        down, grow = _rect_down(down), grow * 2 + 2
    corners = _rotated_corners(rect, angle)
    h, w = rgb.shape[:2]
    lo = np.maximum(corners.min(0) - grow, 0)
    hi = np.minimum(corners.max(0) + grow, [w - 1, h - 1])
    # drectangle -> rectangle conversion rounds each side
    (left, top), (right, bottom) = np.floor(lo + 0.5).astype(int), np.floor(hi + 0.5).astype(int)
    image = rgb[top : bottom + 1, left : right + 1] if right >= left and bottom >= top else rgb[:0, :0]

    # (dlib copies pixels directly when angle == 0 and the rectangle is exactly size x size; with
    # real landmarks that never happens, and bilinear sampling at integer offsets gives the same.)
    rect = rect - [left, top, left, top]
    while _area(_rect_down(rect)) > size * size:  # sample from the level whose rect is still >= chip
        rect, image = _rect_down(rect), _pyramid_down(image)
    # dlib maps the chip's tl, tr, bl corners onto the rotated rectangle's and samples bilinearly.
    tl, tr, bl = _rotated_corners(rect, angle)[:3]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    px = tl[0] + xs * ((tr[0] - tl[0]) / (size - 1)) + ys * ((bl[0] - tl[0]) / (size - 1))
    py = tl[1] + xs * ((tr[1] - tl[1]) / (size - 1)) + ys * ((bl[1] - tl[1]) / (size - 1))
    return _bilinear(image, px, py)


def face_chip(rgb: np.ndarray, landmarks5_dlib: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """``dlib.get_face_chip`` for dlib's 5-point predictor output (5 x 2, x then y)."""
    return extract_chip(rgb, _template(DLIB5_TEMPLATE, size, padding), landmarks5_dlib, size)


def face_chip_from_eye_nose_mouth(
    rgb: np.ndarray, pts5: np.ndarray, size: int = 150, padding: float = 0.25
) -> np.ndarray:
    """Same chip frame from detector points: eye centres (image-left first), nose tip, mouth corners."""
    return extract_chip(rgb, _template(EYE_NOSE_MOUTH_TEMPLATE, size, padding), pts5, size)


def _template(points: np.ndarray, size: int, padding: float) -> np.ndarray:
    return (padding + points) / (2 * padding + 1) * size


def _rect_down(rect: np.ndarray) -> np.ndarray:
    return rect / 2.0 - [1.25, 0.75, 1.25, 0.75]  # pyramid_down<2>::point_down on both corners


def _area(rect: np.ndarray) -> float:
    width, height = rect[2] - rect[0] + 1, rect[3] - rect[1] + 1
    return 0.0 if rect[0] > rect[2] or rect[1] > rect[3] else width * height


def _rotated_corners(rect: np.ndarray, angle: float) -> np.ndarray:
    """tl, tr, bl, br of ``rect`` rotated by ``angle`` about its centre (dlib's rotate_point)."""
    center = np.array([(rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2])
    corners = np.array([[rect[0], rect[1]], [rect[2], rect[1]], [rect[0], rect[3]], [rect[2], rect[3]]]) - center
    cos, sin = math.cos(angle), math.sin(angle)
    return np.stack([cos * corners[:, 0] - sin * corners[:, 1], sin * corners[:, 0] + cos * corners[:, 1]], 1) + center


def _pyramid_down(image: np.ndarray) -> np.ndarray:
    """dlib pyramid_down<2> for RGB: [1 4 6 4 1]^2 / 256 filter, integer truncation, 2x decimation."""
    h, w = image.shape[:2]
    if h <= 8 or w <= 8:
        return image[:0, :0]
    x = image.astype(np.int32)
    cols = (w - 3) // 2
    taps = [x[:, k : k + 2 * cols : 2] for k in range(5)]
    horizontal = taps[0] + 4 * taps[1] + 6 * taps[2] + 4 * taps[3] + taps[4]
    rows = (h - 3) // 2
    taps = [horizontal[k : k + 2 * rows : 2] for k in range(5)]
    return ((taps[0] + 4 * taps[1] + 6 * taps[2] + 4 * taps[3] + taps[4]) // 256).astype(np.uint8)


def _bilinear(image: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """interpolate_bilinear + transform_image: black outside, values truncated to uint8."""
    h, w = image.shape[:2]
    if h < 2 or w < 2:
        return np.zeros((*px.shape, 3), np.uint8)
    left, top = np.floor(px), np.floor(py)
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    lr, tb = (px - left)[..., None], (py - top)[..., None]
    li, ti = np.clip(left, 0, w - 2).astype(np.int64), np.clip(top, 0, h - 2).astype(np.int64)
    corners = ((ti, li), (ti, li + 1), (ti + 1, li), (ti + 1, li + 1))
    tl, tr, bl, br = (image[r, c].astype(np.float64) for r, c in corners)
    value = (1 - tb) * ((1 - lr) * tl + lr * tr) + tb * ((1 - lr) * bl + lr * br)
    return np.where(inside[..., None], np.clip(value, 0, 255), 0).astype(np.uint8)
