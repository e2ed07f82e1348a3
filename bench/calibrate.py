"""Fit every pack's Similarity calibration (and a fused pack's weights) on the tuning half of faces/dev.

    python bench/calibrate.py [--packs open,fused,mobile]

Only the tuning half of the identities (``accuracy.half``) is used for fitting; the held-out half
is reported beside it. For a pack of several recognisers, each model's weight is the inverse spread
(std) of its impostor cosines (z-score fusion: the fused cosine is then a sum of standardised
scores, nothing searched). The calibration's two cosines come from a normal distribution drawn
through the 90th and 99th percentiles of the impostor cosines: it follows the upper tail rather
than the bulk (dlib's impostor scores are skewed, and a whole-sample normal put FMR 1e-3 well
off), gives 1e-3 without resting on the ~6 highest pairs, and extrapolates 1e-5, which ~6.1k
tuning impostor pairs (115 images of 17 identities) cannot show. Print the values, pin them in
facebank/engine/packs.py.
"""

from __future__ import annotations

import argparse
from statistics import NormalDist

import numpy as np
from accuracy import HALVES, embed_pack, evaluate, half, pairs
from common import dev_images, load_engine

from facebank.engine.packs import PACKS, Calibration


def tail_fit(impostor: np.ndarray) -> NormalDist:
    """Normal distribution through the 90th and 99th percentiles of the impostor scores."""
    z90, z99 = NormalDist().inv_cdf(0.90), NormalDist().inv_cdf(0.99)
    q90, q99 = np.quantile(impostor, [0.90, 0.99])
    sigma = (q99 - q90) / (z99 - z90)
    return NormalDist(float(q90 - z90 * sigma), float(sigma))


def part_cosines(vectors: np.ndarray, name: str) -> list[np.ndarray]:
    """Per-recogniser cosine matrices, undoing the pack's sqrt(weight) scaling of each part."""
    out, start = [], 0
    for recognizer, scale in load_engine(name).recognizers:
        part = vectors[:, start : start + recognizer.dimension] / scale
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        out.append(part @ part.T)
        start += recognizer.dimension
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packs", default=",".join(PACKS))
    args = parser.parse_args()
    images = dev_images()
    halves = np.array([half(identity) for _, identity in images])
    tuning = halves == HALVES[0]
    for name in args.packs.split(","):
        run = embed_pack(name, images)
        scores = run.scores()
        pinned = PACKS[name]
        if len(pinned.recognizers) > 1:
            parts = part_cosines(run.vectors, name)
            spread = np.array([pairs(c, run.labels, tuning & run.found)[1].std() for c in parts])
            weights = np.round((1 / spread) / (1 / spread).sum(), 3).astype(float)
            print(f"{name}: fitted weights {weights.tolist()} (pinned {[r.weight for r in pinned.recognizers]})")
            scores = sum(w * c for w, c in zip(weights, parts, strict=True))
        impostor = pairs(scores, run.labels, tuning & run.found)[1]
        fit = tail_fit(impostor)
        fitted = Calibration(round(fit.inv_cdf(1 - 1e-3), 4), round(fit.inv_cdf(1 - 1e-5), 4))
        empirical = float(np.quantile(impostor, 1 - 1e-3))
        print(
            f"{name}: fitted {fitted} (tuning impostor pairs {impostor.size}; empirical 1e-3 cosine "
            f"{empirical:.4f}); pinned {pinned.calibration}"
        )
        for part in HALVES:
            m = evaluate(run, halves == part, pinned.calibration)
            print(
                f"  pinned, {part:8s}: FMR@80 {m['FMR@80']:.1e} TMR@80 {m['TMR@80']:.3f}  "
                f"FMR@99 {m['FMR@99']:.1e} TMR@99 {m['TMR@99']:.3f}"
            )


if __name__ == "__main__":
    main()
