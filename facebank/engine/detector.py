"""Face detection at any image size: scaling, border padding, flip verification, NMS, ranking.

Measured on shared/faces (groups, nonfaces): padding the border by replication lets the
detector see faces cut by the frame edge (a half-visible face went from 0.34 to 0.67), and
averaging each candidate's score with its score in the mirrored image pushes texture false
positives down (rock faces: 0.54 -> below 0.3) while real faces stay above 0.5. The mirrored pass only
runs when some candidate is in the uncertain band, so clean photos pay for one pass.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from facebank.engine.yunet import Detection, YuNet, iou

DETECT_LONG_SIDE = 960  # faces >= ~1.5% of the long side are found; bigger images are scaled down
# Small faces in big photos: Rekognition finds faces of 40 px in a 1920 x 1080 image, which at 960
# are 20 px, where YuNet misses many and scores and places the rest poorly (docs/models.md,
# "Detection"). An image longer than 960 px is searched a second time at up to SMALL_FACE_LONG_SIDE.
# A face narrower than SMALL_FACE_PX at the first pass's scale takes the second pass's detection of
# it when that scores higher; a face found only there is added when it is at least SMALL_FACE_SHARE
# of the long side wide and scores SMALL_FACE_SCORE (the smaller blobs and weaker scores it adds on
# shared/faces are knuckles, taps and shoes). Larger faces keep the first pass's box and landmarks,
# so their vectors do not change.
SMALL_FACE_LONG_SIDE = 1920
SMALL_FACE_PX = 32
SMALL_FACE_SHARE = 0.015
SMALL_FACE_SCORE = 0.6
THRESHOLD = 0.45  # flip-averaged score: faces/nonfaces peak at 0.28, the weakest true group face 0.51
CANDIDATE = 0.2  # below this a candidate cannot reach THRESHOLD even with a perfect mirror score
CERTAIN = 0.85  # above this a candidate cannot fall below THRESHOLD even with a zero mirror score
OVERLAP = 0.3  # a second-pass face overlapping a first-pass one this much (IoU) is the same face


class FaceDetector:
    def __init__(self, model: YuNet):
        self.model = model
        model.score_threshold = CANDIDATE

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        found = self._detect_at(rgb, DETECT_LONG_SIDE)
        long_side = max(rgb.shape[:2])
        if long_side <= DETECT_LONG_SIDE:
            return found
        second = self._detect_at(rgb, SMALL_FACE_LONG_SIDE)
        if not second:
            return found
        boxes = np.array([d.box for d in second])
        small = SMALL_FACE_PX * long_side / DETECT_LONG_SIDE  # SMALL_FACE_PX at the first pass's scale
        matched = np.zeros(len(second), bool)
        out = []
        for face in found:
            overlap = iou(face.box, boxes)
            j = int(overlap.argmax())
            if overlap[j] >= OVERLAP and not matched[j]:  # each second-pass face stands for one face at most
                matched[j] = True
                if face.box[2] - face.box[0] < small and second[j].score > face.score:
                    face = second[j]
            out.append(face)
        out += [
            d
            for d, seen in zip(second, matched, strict=True)
            if not seen
            and d.score >= SMALL_FACE_SCORE
            and d.box[2] - d.box[0] >= SMALL_FACE_SHARE * long_side
            and (not out or iou(d.box, np.array([f.box for f in out])).max() < OVERLAP)
        ]
        return sorted(out, key=lambda d: -d.score)

    def _detect_at(self, rgb: np.ndarray, long_side: int) -> list[Detection]:
        """Faces found with the image scaled to at most ``long_side``, in its own pixels, by score."""
        h, w = rgb.shape[:2]
        scale = min(1.0, long_side / max(h, w))
        small = rgb
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        pad = max(16, round(0.05 * max(small.shape[:2])))
        padded = np.pad(small, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        found = self.model.detect(padded)
        scores = (np.array([d.score for d in found]) + self._mirror_scores(padded, found)) / 2
        keep = [i for i in np.argsort(-scores) if scores[i] >= THRESHOLD]
        ratio = 1.0 / scale
        return [
            Detection((found[i].box - pad) * ratio, (found[i].landmarks - pad) * ratio, float(scores[i])) for i in keep
        ]

    def _mirror_scores(self, image: np.ndarray, found: list[Detection]) -> np.ndarray:
        """Each uncertain candidate's score in the mirrored image (certain ones keep their own).

        Only a window around the candidate is mirrored and re-detected: the detector is fully
        convolutional, so the face is seen at the same scale, at a fraction of the cost.
        """
        out = np.array([d.score for d in found], dtype=np.float64)
        h, w = image.shape[:2]
        for i, d in enumerate(found):
            if not CANDIDATE < d.score < CERTAIN:
                continue
            size = d.box[2:] - d.box[:2]
            x1, y1 = np.clip((d.box[:2] - size).astype(int), 0, [w, h])
            x2, y2 = np.clip((d.box[2:] + size).astype(int), 0, [w, h])
            window = np.ascontiguousarray(image[y1:y2, x1:x2][:, ::-1])
            mirrored = self.model.detect(window) if window.shape[0] >= 8 and window.shape[1] >= 8 else []
            out[i] = 0.0
            if mirrored:
                # Back to image coordinates: un-mirror x inside the window, then shift.
                boxes = np.array([[x2 - m.box[2], y1 + m.box[1], x2 - m.box[0], y1 + m.box[3]] for m in mirrored])
                overlap = iou(d.box, boxes)
                j = int(overlap.argmax())
                out[i] = mirrored[j].score if overlap[j] > 0.5 else 0.0
        return out
