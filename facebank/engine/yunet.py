"""YuNet face detector (OpenCV Zoo, MIT): boxes, 5 landmarks and a score per face.

The model file is YuNet with its fixed 640x640 input relabelled H x W at fetch time
(``yunet_convert``), so each image runs at its own (padded to a multiple of 32) size: no letterbox
distortion, and small images cost little.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebank.engine.onnx import session

STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # x1, y1, x2, y2 in pixels of the image passed in
    landmarks: np.ndarray  # 5 x 2: image-left eye, image-right eye, nose tip, image-left / right mouth corner
    score: float  # 0..1


class YuNet:
    def __init__(self, path: Path, threads: int = 1, score_threshold: float = 0.6, nms_iou: float = 0.3):
        self.session = session(path, threads)  # the H x W model file (packs.YUNET)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :h, :w] = rgb[:, :, ::-1].transpose(2, 0, 1)  # the model wants BGR, 0..255
        return blob

    def infer(self, blob: np.ndarray) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, {"input": blob}), strict=True))

    def postprocess(self, out: dict[str, np.ndarray], blob_shape: tuple[int, ...]) -> list[Detection]:
        width = blob_shape[3]
        boxes, points, scores = [], [], []
        for stride in STRIDES:
            cols = width // stride
            score = np.sqrt(np.clip(out[f"cls_{stride}"][0, :, 0] * out[f"obj_{stride}"][0, :, 0], 0, 1))
            keep = np.flatnonzero(score >= self.score_threshold)
            if keep.size == 0:
                continue
            anchor = np.stack([keep % cols, keep // cols], axis=1).astype(np.float32)
            bbox = out[f"bbox_{stride}"][0, keep]
            center = (anchor + bbox[:, :2]) * stride
            size = np.exp(bbox[:, 2:]) * stride
            boxes.append(np.concatenate([center - size / 2, center + size / 2], axis=1))
            kps = out[f"kps_{stride}"][0, keep].reshape(-1, 5, 2)
            points.append((anchor[:, None, :] + kps) * stride)
            scores.append(score[keep])
        if not boxes:
            return []
        boxes_a, points_a, scores_a = np.concatenate(boxes), np.concatenate(points), np.concatenate(scores)
        kept = nms(boxes_a, scores_a, self.nms_iou)
        return [Detection(boxes_a[i], points_a[i], float(scores_a[i])) for i in kept]

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        blob = self.preprocess(rgb)
        return self.postprocess(self.infer(blob), blob.shape)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression; returns kept indices by descending score."""
    order = np.argsort(-scores)
    kept: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        kept.append(int(i))
        order = rest[iou(boxes[i], boxes[rest]) <= iou_threshold]
    return kept


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one x1,y1,x2,y2 box against many."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(np.clip(box[2:] - box[:2], 0, None))
    areas = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
    return inter / (area + areas - inter + 1e-9)
