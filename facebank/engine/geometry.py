"""Head pose and image quality measured on a detected face."""

from __future__ import annotations

import numpy as np

# Eye centres, nose tip and mouth corners of MediaPipe's canonical face model (Apache-2.0,
# canonical_face_model.obj: vertices mean(33,133), mean(362,263), 1, 61, 291), re-expressed with
# x to the image right, y down and z away from the camera, so a frontal face has rotation I.
FACE_3D = np.array(
    [[-3.15, -2.62, -3.47], [3.15, -2.62, -3.47], [0.0, 1.13, -7.48], [-2.46, 4.34, -4.28], [2.46, 4.34, -4.28]]
)


def head_pose(landmarks: np.ndarray) -> dict[str, float]:
    """Roll, Yaw, Pitch in degrees from 5 landmarks, by a scaled-orthographic fit of FACE_3D.

    Signs: Roll > 0 when the face is turned clockwise in the image; Yaw > 0 when the nose points
    towards the image's right; Pitch > 0 when the face tilts up.
    """
    model = FACE_3D - FACE_3D.mean(0)
    image = landmarks - landmarks.mean(0)
    projection = np.linalg.lstsq(model, image, rcond=None)[0].T  # 2x3 = scale * first two rows of R
    u, _, vt = np.linalg.svd(projection, full_matrices=False)
    rows = u @ vt  # nearest matrix with orthonormal rows
    return pose_angles(np.vstack([rows, np.cross(rows[0], rows[1])]))


def pose_angles(rotation: np.ndarray) -> dict[str, float]:
    """Rekognition's Roll, Yaw, Pitch (degrees, signs as in ``head_pose``) of a model-to-camera rotation.

    The rotation is read as roll (about the camera axis) after yaw after pitch, so turning the
    image by an angle adds exactly that angle to Roll and leaves Yaw and Pitch alone.
    """
    yaw = np.degrees(np.arcsin(np.clip(rotation[2, 0], -1, 1)))
    pitch = np.degrees(np.arctan2(-rotation[2, 1], rotation[2, 2]))
    roll = np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0]))
    return {"Roll": float(roll), "Yaw": float(yaw), "Pitch": float(pitch)}


def pose_rotation(roll: float, yaw: float, pitch: float) -> np.ndarray:
    """The rotation whose ``pose_angles`` are the given degrees."""
    r, y, p = np.radians([roll, -yaw, -pitch])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return rz @ ry @ rx


def fit_similarity(model: np.ndarray, points: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares scale, rotation and shift with ``points ~ scale * rotation @ model + shift``.

    Umeyama (1991): both point sets are N x D in corresponding order; no reflections.
    """
    model_mean, points_mean = model.mean(0), points.mean(0)
    model_c, points_c = model - model_mean, points - points_mean
    u, s, vt = np.linalg.svd(points_c.T @ model_c)
    d = np.eye(model.shape[1])
    d[-1, -1] = np.sign(np.linalg.det(u @ vt))
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(s) @ d) / (model_c**2).sum())
    return scale, rotation, points_mean - scale * rotation @ model_mean


def brightness(rgb: np.ndarray, box: np.ndarray) -> float:
    """Mean luma (BT.601) of the face box, 0..100."""
    h, w = rgb.shape[:2]
    x1, y1 = np.clip(np.floor(box[:2]).astype(int), 0, [w, h])
    x2, y2 = np.clip(np.ceil(box[2:]).astype(int), 0, [w, h])
    region = rgb[y1:y2, x1:x2].astype(np.float32)
    if region.size == 0:
        return 0.0
    luma = region @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(luma.mean() / 255.0 * 100.0)


def sharpness(face: np.ndarray) -> float:
    """No-reference sharpness of an aligned face, 0..100.

    Crete et al., "The blur effect: perception and estimation with a new no-reference perceptual
    blur metric" (SPIE 2007): re-blur the image and measure how much of its local variation
    survives. A sharp face loses much (score near 100), an already blurred one loses little.
    """
    gray = face.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    blurs = []
    for axis in (0, 1):
        blurred = _box_blur(gray, axis, 9)
        d_f = np.abs(np.diff(gray, axis=axis))
        d_b = np.abs(np.diff(blurred, axis=axis))
        s_f = d_f.sum()
        s_v = np.maximum(0, d_f - d_b).sum()
        blurs.append(1.0 if s_f == 0 else (s_f - s_v) / s_f)
    return float(np.clip(100.0 * (1.0 - max(blurs)), 0, 100))


def _box_blur(image: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Moving average along one axis with edge replication, via a cumulative sum."""
    half = size // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (half + 1, half)
    total = np.cumsum(np.pad(image, pad, mode="edge"), axis=axis)
    upper = np.take(total, np.arange(size, total.shape[axis]), axis=axis)
    lower = np.take(total, np.arange(0, total.shape[axis] - size), axis=axis)
    return (upper - lower) / size
