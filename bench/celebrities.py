"""The celebrity match threshold on shared/faces/dev: the MatchConfidence calibration of
face-celebrity pairs, and the recognition rates RecognizeCelebrities gives with it.

    python bench/celebrities.py [--packs open,fused,mobile] [--cache-dir /tmp] [--photos 3] [--repeats 2000]

A celebrity is what ``facebank celebrities import`` builds: the re-normalised mean of the largest
face of each of its photos (facebank/operations/celebrities.py), here of ``--photos`` photos.

(1) Calibration, exactly as bench/calibrate.py fits faces and bench/users.py users
(``common.cross_validated_calibration``), on face-celebrity pairs (``celebrity_pairs``: a
celebrity from every run of ``--photos`` consecutive photos of an identity with that many, against
every face of every other identity (impostor) and its own photos it was not built from (genuine)).
MatchConfidence 80 and 99 sit where the false-match rate per pair stays at or below 1e-3 and 1e-5
(extrapolated) for 90 % of the test halves of people the fit never saw. Pin the printed values in
CELEBRITY_CALIBRATIONS. Also printed: the pinned map's in-sample rates when celebrities have 1, 2,
3 or 5 photos, because a gallery's photo count moves the impostor cosines of a mean vector.

(2) Recognition through the operation's rule (MATCH_THRESHOLD on the pinned calibration), as
tests/test_celebrities.py runs it through the API: identities in four rotations by name order
(``names[r::4]`` are outside the gallery in rotation r, so each identity is a stranger once);
every other identity with more than ``--photos`` photos is a celebrity of photos s..s+photos-1
(split s = 0, 1, 2); its other photos are probes, recognised when their own celebrity is the best
and reaches 80; every photo of the rotation's strangers is a stranger probe, in UnrecognizedFaces
when no celebrity reaches 80. "at 2 %" is the recognised rate where 2 % of stranger probes would be
named (it compares packs apart from their calibration). 90 % intervals: bootstrap over identities
(``common.identity_bootstrap``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("FACEBANK_ORT_THREADS", "1")

import numpy as np
from common import (
    HALVES,
    LabelledScores,
    People,
    _stacked,
    cross_validated_calibration,
    embed_all,
    half,
    identity_bootstrap,
    rates_in_sample,
)

from facebank.engine.packs import Calibration
from facebank.operations.celebrities import CELEBRITY_CALIBRATIONS, MATCH_THRESHOLD
from facebank.search.users import mean_vector

ROTATIONS = 4
SPLITS = (0, 1, 2)
STRANGER_BAR = 0.02


def celebrity_pairs(people: People, photos: int) -> LabelledScores:
    """Celebrities of ``photos`` consecutive photos (every start s of each identity with at least
    that many photos) against every face: other identities' (impostor) and the identity's photos
    outside the celebrity (genuine). A photo without a face scores -1."""
    names, vectors, owner, photo = _stacked(people)
    found = np.linalg.norm(vectors, axis=1) > 0
    cosines, left, right = [], [], []
    for index, name in enumerate(names):
        count = len(people[name])
        if count < photos:
            continue
        for enrolment in sorted({tuple(sorted((s + i) % count for i in range(photos))) for s in range(count)}):
            enrolled = (owner == index) & np.isin(photo, enrolment) & found
            if not enrolled.any():
                continue
            celebrity = mean_vector(vectors[enrolled]).astype(np.float64)
            others = (owner != index) | ~np.isin(photo, enrolment)
            cosines.append(np.where(found[others], vectors[others] @ celebrity, -1.0))
            left.append(np.full(int(others.sum()), index))
            right.append(owner[others])
    return LabelledScores(np.concatenate(cosines), np.concatenate(left), np.concatenate(right), names)


Probe = tuple[str, float | None]  # (identity, cosine: own celebrity's if it ranks first / best celebrity's)


def protocol(people: People, photos: int, split: int) -> tuple[list[Probe], list[Probe]]:
    names = sorted(people)
    genuine: list[Probe] = []
    strangers_best: list[Probe] = []
    for rotation in range(ROTATIONS):
        strangers = set(names[rotation::ROTATIONS])
        gallery, probes = {}, {}
        for i, name in enumerate(names):
            vectors = people[name]
            if name in strangers or len(vectors) <= photos:
                continue
            picks = [(split + j) % len(vectors) for j in range(photos)]
            enrolled = [vectors[p] for p in picks if vectors[p] is not None]
            if enrolled:
                gallery[name] = mean_vector(np.stack(enrolled)).astype(np.float64)
            if (i + 1) % ROTATIONS == rotation:  # each identity's probes counted in one rotation
                probes[name] = [v for j, v in enumerate(vectors) if j not in picks]
        keys = list(gallery)
        matrix = np.stack([gallery[k] for k in keys])
        for name, vectors in probes.items():
            for v in vectors:
                if v is None or name not in gallery:
                    genuine.append((name, None))
                    continue
                scores = matrix @ v
                top = int(np.argmax(scores))
                genuine.append((name, float(scores[top]) if keys[top] == name else None))
        for name in sorted(strangers):
            for v in people[name]:
                strangers_best.append((name, None if v is None else float((matrix @ v).max())))
    return genuine, strangers_best


def recognition(genuine: list[Probe], strangers: list[Probe], cosine: float) -> tuple[float, float, float]:
    """(recognised, strangers unrecognised, recognised at STRANGER_BAR strangers)."""
    found = np.mean([g is not None and g >= cosine for _, g in genuine])
    clean = np.mean([s is None or s < cosine for _, s in strangers])
    scores = np.array([-np.inf if s is None else s for _, s in strangers])
    bar = float(np.quantile(scores, 1 - STRANGER_BAR, method="higher"))
    at_bar = np.mean([g is not None and g > bar for _, g in genuine])
    return float(found), float(clean), float(at_bar)


def report_pack(name: str, people: People, args: argparse.Namespace) -> None:
    pinned = CELEBRITY_CALIBRATIONS.get(name)
    print(f"{name}: celebrities of {args.photos} photos")
    print("(1) calibration, cross-validated over identities (face-celebrity pairs)")
    held_out = np.array([half(identity) == HALVES[1] for identity in sorted(people)])
    scores = celebrity_pairs(people, args.photos)
    fitted = cross_validated_calibration(scores, pinned or Calibration(0.9, 0.95), held_out, args.repeats, args.seed)
    calibration = pinned or fitted
    for photos in (1, 2, 3, 5):
        in_sample = rates_in_sample(celebrity_pairs(people, photos), calibration)
        print(f"  pinned map, celebrities of {photos} photos: {in_sample}")
    cosine = calibration.cosine_floor(MATCH_THRESHOLD) + 1e-6
    print(f"(2) recognition at MatchConfidence {MATCH_THRESHOLD:.0f} (cosine {cosine:.4f}), per split and pooled")
    pooled_g, pooled_s = [], []
    for split in SPLITS:
        g, s = protocol(people, args.photos, split)
        pooled_g += g
        pooled_s += s
        found, clean, at_bar = recognition(g, s, cosine)
        print(
            f"  split {split}: recognised {found:.3f} of {len(g)} probes; strangers unrecognised {clean:.3f} of "
            f"{len(s)}; recognised at {STRANGER_BAR:.0%} strangers {at_bar:.3f}"
        )
    found, clean, at_bar = recognition(pooled_g, pooled_s, cosine)
    (f_lo, c_lo, b_lo), (f_hi, c_hi, b_hi) = identity_bootstrap(
        pooled_g, pooled_s, lambda g, s: recognition(g, s, cosine), args.boot
    )
    print(
        f"  pooled: recognised {found:.3f} [{f_lo:.3f}-{f_hi:.3f}] of {len(pooled_g)} probes; strangers unrecognised "
        f"{clean:.3f} [{c_lo:.3f}-{c_hi:.3f}] of {len(pooled_s)}; at {STRANGER_BAR:.0%} strangers {at_bar:.3f} "
        f"[{b_lo:.3f}-{b_hi:.3f}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packs", default="open,fused,mobile")
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep each pack's embeddings here")
    parser.add_argument("--photos", type=int, default=3, help="photos per celebrity")
    parser.add_argument("--repeats", type=int, default=2000, help="random halvings of the identities")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in args.packs.split(","):
        people, _ = embed_all(name, args.cache_dir / f"gallery-{name}.npz" if args.cache_dir else None)
        report_pack(name, people, args)


if __name__ == "__main__":
    main()
