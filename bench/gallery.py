"""Face-collection search accuracy on shared/faces/dev, and how sure those figures are.

    python bench/gallery.py [--packs open,fused,mobile] [--cache-dir /tmp] [--boot 2000]

Protocol (tests/test_collections.py::test_gallery_search_accuracy runs gallery photo 0 through the
API; for `open` it counts the same): one gallery photo per identity, indexed under its name; every other
photo of a gallery identity is a probe, found when its own face is the top SearchFacesByImage match
at the default FaceMatchThreshold 80. Identities take turns as strangers (``names[r::4]``, four
rotations, each a stranger once); a stranger probe false-matches when any face reaches 80. An
image with no detected face is not found and matches nobody.

The figures move with which photo is the gallery one, so the script runs photos 0, 1 and 2 (the
photo in path order; identities with fewer photos wrap). "found at 2%" is the found rate at the
cosine where 2% of stranger probes match (the issue's stranger bar): it compares packs apart from
their calibration. The intervals are 90% percentile bootstraps over identities (each resample
draws the 34 identities with replacement and keeps all of their probes), so they show how far a
figure measured on 34 people may be from the same pipeline's figure on other people.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import embed_all, identity_bootstrap

from facebank.engine.packs import PACKS

THRESHOLD = 80.0
ROTATIONS = 4
STRANGER_BAR = 0.02
PHOTOS = (0, 1, 2)


def protocol(people: dict, gallery_photo: int) -> tuple[list, list]:
    """(identity, top match is right, top cosine) per genuine probe; (identity, best cosine) per
    stranger probe. A probe without a face has cosine -inf."""
    names = sorted(people)
    genuine, strangers_best = [], []
    for rotation in range(ROTATIONS):
        strangers = set(names[rotation::ROTATIONS])
        gallery = {}
        for name in names:
            if name not in strangers:
                vector = people[name][gallery_photo % len(people[name])]
                if vector is not None:
                    gallery[name] = vector
        keys = list(gallery)
        matrix = np.stack([gallery[k] for k in keys])
        for name in names:
            pick = gallery_photo % len(people[name])
            for j, vector in enumerate(people[name]):
                if name not in strangers and j == pick:
                    continue
                if vector is None:
                    top, score = None, -np.inf
                else:
                    scores = matrix @ vector
                    top, score = keys[int(np.argmax(scores))], float(scores.max())
                if name in strangers:
                    strangers_best.append((name, score))
                else:
                    genuine.append((name, top == name, score))
    return genuine, strangers_best


def rates(genuine: list, strangers: list, cosine: float) -> tuple[float, float]:
    """(found, strangers unmatched) with matches at cosine >= ``cosine``."""
    found = np.mean([right and score >= cosine for _, right, score in genuine])
    clean = np.mean([score < cosine for _, score in strangers])
    return float(found), float(clean)


def found_at_bar(genuine: list, strangers: list) -> float:
    scores = np.array([s for _, s in strangers])
    bar = float(np.quantile(scores, 1 - STRANGER_BAR, method="higher"))
    return float(np.mean([right and score > bar for _, right, score in genuine]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packs", default="open,fused,mobile")
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep each pack's embeddings here")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    args = parser.parse_args()
    print("pack    gallery photo   found@80  unmatched strangers@80  found at 2% strangers")
    for name in args.packs.split(","):
        cache = args.cache_dir / f"gallery-{name}.npz" if args.cache_dir else None
        people, _ = embed_all(name, cache)
        cosine = PACKS[name].calibration.cosine_floor(THRESHOLD)
        pooled_g, pooled_s = [], []
        for photo in PHOTOS:
            g, s = protocol(people, photo)
            pooled_g += g
            pooled_s += s
            found, clean = rates(g, s, cosine)
            print(f"{name:<7} {photo:<15} {found:8.3f}  {clean:22.3f}  {found_at_bar(g, s):21.3f}")
        found, clean = rates(pooled_g, pooled_s, cosine)
        (f_lo, c_lo, b_lo), (f_hi, c_hi, b_hi) = identity_bootstrap(
            pooled_g, pooled_s, lambda g, s, c=cosine: (*rates(g, s, c), found_at_bar(g, s)), args.boot
        )
        print(f"{name:<7} {'0-2 pooled':<15} {found:8.3f}  {clean:22.3f}  {found_at_bar(pooled_g, pooled_s):21.3f}")
        print(f"{'':<7} {'90% interval':<15} {f_lo:.3f}-{f_hi:.3f}  {c_lo:11.3f}-{c_hi:.3f}  {b_lo:15.3f}-{b_hi:.3f}")


if __name__ == "__main__":
    main()
