"""Fit a pack's Similarity calibration on faces/dev and print the measured rates.

    python bench/calibrate.py [--pack mobile]

Embeds the largest face of every faces/dev image, forms all genuine and impostor pairs, and
prints the cosine at false-match rate 1e-3 (empirical) and 1e-5 (normal fit to the impostor
scores: faces/dev has ~25k impostor pairs, too few to observe 1e-5 directly), the values to pin
in ``facebank/engine/packs.py``, and the rates the pinned calibration gives at Similarity 80/99.
"""

from __future__ import annotations

import argparse
from statistics import NormalDist

import numpy as np

from common import dev_images
from facebank.engine import get_engine
from facebank.engine.image import decode


def pair_scores(pack: str) -> tuple[np.ndarray, np.ndarray, int]:
    engine = get_engine(pack)
    vectors, labels, misses = [], [], 0
    for path, identity in dev_images():
        rgb = decode(path.read_bytes())
        faces = engine.detect(rgb, max_faces=1)
        if not faces:
            misses += 1
            continue
        vectors.append(engine.embed(rgb, faces[0]))
        labels.append(identity)
    v = np.stack(vectors)
    sims = v @ v.T
    lab = np.array(labels)
    upper = np.triu_indices(len(lab), 1)
    same = lab[upper[0]] == lab[upper[1]]
    return sims[upper][same], sims[upper][~same], misses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pack", default=None)
    args = parser.parse_args()
    genuine, impostor, misses = pair_scores(args.pack)
    at_1e3 = float(np.quantile(impostor, 1 - 1e-3))
    fit = NormalDist(float(impostor.mean()), float(impostor.std()))
    at_1e5 = fit.inv_cdf(1 - 1e-5)
    print(f"images without a face: {misses}; genuine pairs {genuine.size}, impostor pairs {impostor.size}")
    print(f"cosine at FAR 1e-3 (empirical): {at_1e3:.4f}; normal fit gives {fit.inv_cdf(1 - 1e-3):.4f}")
    print(f"cosine at FAR 1e-5 (normal-fit extrapolation): {at_1e5:.4f}")
    print(f"TAR at FAR 1e-3: {(genuine >= at_1e3).mean():.3f}")
    engine = get_engine(args.pack)
    cal = engine.pack.calibration
    gen_sim = np.array([cal.similarity(c) for c in genuine])
    imp_sim = np.array([cal.similarity(c) for c in impostor])
    for t in (80, 99):
        print(
            f"pinned calibration ({cal.at_80:.4f}, {cal.at_99:.4f}) at Similarity {t}: "
            f"false-match rate {(imp_sim >= t).mean():.2e} ({(imp_sim >= t).sum()} pairs), "
            f"true-match rate {(gen_sim >= t).mean():.3f}"
        )


if __name__ == "__main__":
    main()
