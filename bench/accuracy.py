"""Recognition accuracy of every model pack, and of face_recognition as a peer, on shared/faces/dev.

    python bench/accuracy.py [--packs open,fused,mobile] [--no-peer] [--common]

The identities of faces/dev are split in two by a hash of their name (``half``). Fitted on the
tuning half only: the fusion weights and the dlib shape predictor's start box
(``bench/calibrate.py``, ``facebank/engine/dlib_shape.py``). Two yes/no choices, dlib's own
landmarks over a template and flip averaging, were kept because they improved both halves. So the
held-out TAR, EER and rank-1 are the ones to expect elsewhere, within sampling error: 17 people
(113 images), ~5.9k impostor pairs, so TAR@1e-3 rests on the ~6 highest impostor scores. The
Similarity calibration is fitted on all identities (its out-of-sample rates come from the
cross-validation in ``bench/calibrate.py``), so the FMR@ and TMR@ columns here are in sample on
both halves.

Protocol: the largest face of every image, all pairs of images. An image where no face is found
keeps no vector: its genuine pairs count as misses, it never false-matches, and as a rank-1 probe
it is wrong. Rank-1 is leave-one-out over images whose identity has another image. Packs score by
cosine; the peer by its native negative Euclidean distance (it has no Similarity scale). Embed
ms/face is the median CPU time of embedding one detected face (alignment included), one thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ["FACEBANK_ORT_THREADS"] = "1"  # one thread for every pipeline, as bench/latency.py
os.environ.setdefault("OMP_NUM_THREADS", "1")  # dlib (the peer)

import numpy as np
from common import HALVES, dev_images, half, load_engine

from facebank.engine.image import decode
from facebank.engine.packs import PACKS, Calibration

PEER = "face_recognition"


@dataclass
class Run:
    name: str
    vectors: np.ndarray  # N x d, one per image; rows where found is False are unused
    found: np.ndarray  # N, a face was detected
    labels: np.ndarray  # N identities
    ms: list[float]  # embed time per face
    euclidean: bool = False  # the peer compares raw descriptors by distance

    def scores(self) -> np.ndarray:
        """All-pairs scores (higher = more alike); -inf wherever an image has no face."""
        v = self.vectors.astype(np.float64)
        s = -np.linalg.norm(v[:, None] - v[None], axis=2) if self.euclidean else v @ v.T
        s[~self.found], s[:, ~self.found] = -np.inf, -np.inf
        return s


def _timed(fn: Callable, *args) -> tuple[np.ndarray, float]:
    # CPU time of this process: every pipeline runs on one thread, so it equals wall time on an idle
    # machine and, unlike wall time, stays put when others share the cores.
    start = time.process_time()
    result = fn(*args)
    return result, (time.process_time() - start) * 1000


def _run(name: str, images: list, embed: Callable, dim: int, euclidean: bool = False) -> Run:
    """``embed(rgb)`` gives (vector, ms) for the image's largest face, or None when it finds none."""
    vectors, found, ms = np.zeros((len(images), dim), np.float32), np.zeros(len(images), bool), []
    for i, (path, _) in enumerate(images):
        result = embed(decode(path.read_bytes()))
        if result is not None:
            vectors[i], found[i] = result[0], True
            ms.append(result[1])
    return Run(name, vectors, found, np.array([identity for _, identity in images]), ms, euclidean)


def embed_pack(name: str, images: list) -> Run:
    engine = load_engine(name)

    def embed(rgb: np.ndarray) -> tuple[np.ndarray, float] | None:
        faces = engine.detect(rgb, max_faces=1)
        return _timed(engine.embed, rgb, faces[0]) if faces else None

    return _run(name, images, embed, engine.pack.dimension)


def embed_peer(images: list) -> Run | None:
    """face_recognition's default pipeline: HOG detector (1 upsample), 5-point landmarks, dlib ResNet."""
    try:
        import face_recognition
    except ImportError:
        return None

    def embed(rgb: np.ndarray) -> tuple[np.ndarray, float] | None:
        boxes = face_recognition.face_locations(rgb)  # (top, right, bottom, left)
        if not boxes:
            return None
        largest = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
        vectors, ms = _timed(face_recognition.face_encodings, rgb, [largest])
        return vectors[0], ms

    return _run(PEER, images, embed, 128, euclidean=True)


def pairs(scores: np.ndarray, labels: np.ndarray, subset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor scores of all pairs within ``subset`` (boolean mask)."""
    idx = np.flatnonzero(subset)
    a, b = np.triu_indices(len(idx), 1)
    s, same = scores[idx[a], idx[b]], labels[idx[a]] == labels[idx[b]]
    return s[same], s[~same]


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """True-accept rate at the strictest threshold letting through at most ``far`` of impostors."""
    allowed = int(np.floor(far * impostor.size))
    threshold = np.sort(impostor)[::-1][allowed]
    return float((genuine > threshold).mean())


def eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    frr = np.searchsorted(np.sort(genuine), thresholds) / genuine.size  # genuine below the threshold
    far = 1 - np.searchsorted(np.sort(impostor), thresholds) / impostor.size  # impostors at or above
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2)


def rank1(scores: np.ndarray, labels: np.ndarray, found: np.ndarray, subset: np.ndarray) -> float:
    idx = np.flatnonzero(subset)
    s, lab = scores[np.ix_(idx, idx)].copy(), labels[idx]
    np.fill_diagonal(s, -np.inf)
    probes = [i for i in range(len(idx)) if (lab == lab[i]).sum() > 1]
    return float(np.mean([found[idx[i]] and lab[int(s[i].argmax())] == lab[i] for i in probes]))


def evaluate(run: Run, subset: np.ndarray, calibration: Calibration | None = None) -> dict[str, float]:
    scores = run.scores()
    genuine, impostor = pairs(scores, run.labels, subset)
    out = {
        "images": int(subset.sum()),
        "no face": int((subset & ~run.found).sum()),
        "TAR@1e-2": tar_at_far(genuine, impostor, 1e-2),
        "TAR@1e-3": tar_at_far(genuine, impostor, 1e-3),
        "EER": eer(genuine, impostor),
        "rank-1": rank1(scores, run.labels, run.found, subset),
    }
    if calibration is not None:
        similarity = np.vectorize(calibration.similarity, otypes=[float])
        gen_sim = similarity(np.where(np.isfinite(genuine), genuine, -1.0))
        imp_sim = similarity(np.where(np.isfinite(impostor), impostor, -1.0))
        for t in (80, 99):
            out[f"FMR@{t}"], out[f"TMR@{t}"] = float((imp_sim >= t).mean()), float((gen_sim >= t).mean())
    return out


def _cell(column: str, value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.1e}" if column.startswith("FMR") else f"{value:.3f}"


def table(rows: list[tuple[str, str, dict, float]]) -> str:
    cols = ["images", "no face", "TAR@1e-2", "TAR@1e-3", "EER", "rank-1", "FMR@80", "TMR@80", "FMR@99", "TMR@99"]
    lines = [f"{'pipeline':17s} {'half':9s} " + " ".join(f"{c:>8s}" for c in cols) + f" {'embed ms':>8s}"]
    for name, part, m, ms in rows:
        cells = [_cell(c, m.get(c)) for c in cols]
        lines.append(f"{name:17s} {part:9s} " + " ".join(f"{c:>8s}" for c in cells) + f" {ms:8.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packs", default=",".join(PACKS), help="comma-separated pack names")
    parser.add_argument("--no-peer", action="store_true", help=f"skip {PEER} (dlib) as a peer")
    parser.add_argument("--common", action="store_true", help=f"only the images where {PEER} finds a face")
    args = parser.parse_args()
    images = dev_images()
    halves = np.array([half(identity) for _, identity in images])
    runs = [(embed_pack(name, images), PACKS[name].calibration) for name in args.packs.split(",")]
    peer = None if args.no_peer else embed_peer(images)
    if peer is not None:
        runs.append((peer, None))
    elif not args.no_peer:
        print(f"({PEER} not installed, no peer row: pip install dlib-bin && pip install --no-deps face_recognition)")
    # --common: the peer's own protocol (shared/README.md), which drops the images it cannot detect
    kept = peer.found if args.common and peer is not None else np.ones(len(images), bool)
    rows = []
    for run, calibration in runs:
        ms = statistics.median(run.ms)
        for part in (*HALVES, "all"):
            subset = kept & (True if part == "all" else halves == part)
            rows.append((run.name, part, evaluate(run, subset, calibration), ms))
    print(
        f"faces/dev: {len(images)} images, {len(set(run.labels))} identities; "
        f"tuning {int((halves == 'tuning').sum())} images, held-out {int((halves == 'held-out').sum())}"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
