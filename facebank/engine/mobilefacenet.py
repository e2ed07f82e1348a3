"""MobileFaceNet recogniser (128-d, ArcFace 112x112 alignment), with flip test-time augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebank.engine.align import ARCFACE_112, align
from facebank.engine.onnx import session


class MobileFaceNet:
    dimension = 128

    def __init__(self, path: Path, threads: int = 1):
        self.session = session(path, threads)
        self.input = self.session.get_inputs()[0].name

    def preprocess(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        face = align(rgb, landmarks, ARCFACE_112, (112, 112)).astype(np.float32)
        blob = ((face - 127.5) / 127.5).transpose(2, 0, 1)
        # The mirrored face is a second view of the same person; summing both embeddings is a
        # cheap, well-known gain (measured +0.02 TAR@FAR=1e-3 on faces/dev, see shared/README.md).
        return np.stack([blob, blob[:, :, ::-1]])

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.concatenate([self.session.run(None, {self.input: b[None]})[0] for b in batch])

    def postprocess(self, out: np.ndarray) -> np.ndarray:
        vector = out.sum(0)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.postprocess(self.infer(self.preprocess(rgb, landmarks)))
