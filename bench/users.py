"""User vectors on shared/faces/dev: the mean of a user's face vectors against best-face matching,
and the Similarity calibration of user matches.

    python bench/users.py [--pack open] [--cache /tmp/gallery-open.npz] [--repeats 2000]

Protocol (tests/test_users.py runs the same through the API): the largest face of every faces/dev
image is embedded once. Identities are split into four rotations by name order (``names[r::4]``
are the strangers of rotation r), so every identity is a stranger exactly once and no split is
picked. In each rotation every other identity with >= 3 photos is enrolled as a user built from
two of its photos; its other photos are probes, each probed once over the four rotations
(identity i in rotation (i + 1) % 4, where it is enrolled); every photo of the rotation's
strangers is a stranger probe. A probe is found when its own user is the top match at or above
UserMatchThreshold 80; a stranger probe false-matches when any user reaches 80. An image with no
detected face is not found, and matches nobody (SearchUsersByImage answers it with no matches).
Split 0 (each identity's first two photos, as the test) is reported, and the sum over splits
0-2 (photos s and s+1) so a conclusion does not rest on one choice of photos.

Methods:
- mean: one user vector, the re-normalised mean of the user's face vectors.
- best: the best of the user's faces (what grouping face-search hits by user gives).
- single: one photo per identity: plain face search, for reference.
Each is reported (1) at Similarity 80 of the pack's face calibration and (2) at an equal
false-match rate: the score at which 2% of stranger probes match (the test's bar), found rate
there. (2) compares the methods themselves; (1) mixes in the calibration, which was fitted on
face-face pairs, not face-user pairs.

User calibration: the face calibration pins Similarity 80 at a false-match rate of 1e-3 per
face pair. A mean vector scores impostors differently (in a space where unrelated faces are far
from orthogonal, as dlib's, renormalising the mean lifts their cosines too), so the same cosine
does not mean the same rate. The user calibration pins 80 and 99 at 1e-3 and 1e-5 per face-user
pair, fitted and cross-validated over identities exactly as bench/calibrate.py does for faces
(``common.cross_validated_calibration``) on user-face pairs (``common.user_pairs``: a user from
every two consecutive photos of an identity, against every face). Pin the printed values in
facebank/operations/users.py (USER_CALIBRATIONS); (3) then shows the test's protocol at 80 with
the pinned and the fitted user calibration.

How sure: 90% percentile bootstrap intervals over identities (each resample draws the identities
with replacement, keeping all of their probes) for the mean method over splits 0-2.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("FACEBANK_ORT_THREADS", "2")

import numpy as np
from common import HALVES, People, cross_validated_calibration, embed_all, half, identity_bootstrap, user_pairs

from facebank.engine.packs import PACKS
from facebank.operations.users import USER_CALIBRATIONS
from facebank.search.users import mean_vector

THRESHOLD = 80.0
ROTATIONS = 4
STRANGER_BAR = 0.02  # the test's bar: strangers match nobody in >= 98% of cases
METHODS = ("mean", "best", "single")


def score(method: str, enrolled: list[np.ndarray], probe: np.ndarray) -> float:
    if method == "mean":
        return float(mean_vector(np.stack(enrolled)) @ probe)
    if method == "best":
        return max(float(v @ probe) for v in enrolled)
    return float(enrolled[0] @ probe)


Scored = list[tuple[str, float | None]]  # (probe's identity, cosine)


def protocol(people: People, method: str, split: int) -> tuple[Scored, Scored]:
    """Cosines of the test's protocol: for each genuine probe, its own user's score if that user
    ranks first (else None); for each stranger probe, the best score of any user (None: no face)."""
    names = sorted(people)
    genuine: Scored = []
    strangers_best: Scored = []
    for rotation in range(ROTATIONS):
        strangers = set(names[rotation::ROTATIONS])
        users: dict[str, list[np.ndarray]] = {}
        probes: dict[str, list[np.ndarray | None]] = {}
        for i, name in enumerate(names):
            photos = people[name]
            if name in strangers or len(photos) < 3:
                continue
            picks = [(split + j) % len(photos) for j in range(2)]
            enrolled = [photos[p] for p in picks if photos[p] is not None]
            if enrolled:
                users[name] = enrolled[:1] if method == "single" else enrolled
            if (i + 1) % ROTATIONS == rotation:
                probes[name] = [v for j, v in enumerate(photos) if j not in picks]
        for name, vectors in probes.items():
            for v in vectors:
                if v is None or name not in users:
                    genuine.append((name, None))
                    continue
                s = {u: score(method, e, v) for u, e in users.items()}
                top = max(s, key=s.get)
                genuine.append((name, s[top] if top == name else None))
        for name in sorted(strangers):
            for v in people[name]:
                best = None if v is None else max(score(method, e, v) for e in users.values())
                strangers_best.append((name, best))
    return genuine, strangers_best


def rates(genuine, strangers, at) -> tuple[int, int, int, int]:
    """(found, probes, false matches, stranger probes) with `at(cosine)` deciding a match."""
    found = sum(g is not None and at(g) for _, g in genuine)
    false = sum(s is not None and at(s) for _, s in strangers)
    return found, len(genuine), false, len(strangers)


def stranger_bar(strangers: Scored) -> float:
    """The cosine above which STRANGER_BAR of the stranger probes match."""
    scores = np.array([-np.inf if s is None else s for _, s in strangers])
    return float(np.quantile(scores, 1 - STRANGER_BAR, method="higher"))


def fmt(found, probes, false, strangers) -> str:
    return f"{found:>3}/{probes:<3} {found / probes:5.3f}   {false:>3}/{strangers:<3} {false / strangers:5.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pack", default=None)
    parser.add_argument("--cache", type=Path, default=None, help="npz file to keep the embeddings in")
    parser.add_argument("--repeats", type=int, default=2000, help="random halvings of the identities (calibration)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    people, pack_name = embed_all(args.pack, args.cache)
    face_cal = PACKS[pack_name].calibration
    missing = sum(v is None for vs in people.values() for v in vs)
    print(
        f"pack {pack_name}: {sum(map(len, people.values()))} images, {missing} without a face; "
        f"face calibration {face_cal}"
    )

    runs = {(m, s): protocol(people, m, s) for m in METHODS for s in range(3)}

    def summed(m: str, at) -> tuple[int, int, int, int]:
        return tuple(map(sum, zip(*(rates(*runs[m, s], at) for s in range(3)), strict=False)))  # type: ignore[return-value]

    def at80(c):
        return face_cal.similarity(c) >= THRESHOLD

    print("\n(1) at Similarity 80 of the face calibration     found@80          strangers matched")
    for m in METHODS:
        print(f"  {m:<7} split 0     {fmt(*rates(*runs[m, 0], at80))}")
        print(f"  {m:<7} splits 0-2  {fmt(*summed(m, at80))}")

    print(f"\n(2) at an equal false-match rate ({STRANGER_BAR:.0%} of stranger probes matched), splits 0-2")
    for m in METHODS:
        bar = stranger_bar([s for split in range(3) for s in runs[m, split][1]])
        found, probes, false, total = summed(m, lambda c, bar=bar: c > bar)
        print(f"  {m:<7} cosine > {bar:.4f}: found {found}/{probes} = {found / probes:.3f} (strangers {false}/{total})")

    pinned = USER_CALIBRATIONS.get(pack_name)
    print("\n(3) user calibration, cross-validated over identities (face-user pairs, users of two photos)")
    held_out = np.array([half(identity) == HALVES[1] for identity in sorted(people)])
    fitted = cross_validated_calibration(user_pairs(people), pinned or face_cal, held_out, args.repeats, args.seed)
    for label, cal in (("pinned", pinned), ("fitted", fitted)):
        if cal is None or (label == "fitted" and cal == pinned):
            continue

        def at(c, cal=cal):
            return cal.similarity(c) >= THRESHOLD

        print(f"  mean, {label} user calibration, split 0     {fmt(*rates(*runs['mean', 0], at))}")
        print(f"  mean, {label} user calibration, splits 0-2  {fmt(*summed('mean', at))}")

    if pinned is not None:
        genuine = [g for split in range(3) for g in runs["mean", split][0]]
        strangers = [x for split in range(3) for x in runs["mean", split][1]]

        def at(c):
            return pinned.similarity(c) >= THRESHOLD

        def stats(g: Scored, s: Scored) -> tuple[float, float, float]:
            found, probes, false, total = rates(g, s, at)
            bar = stranger_bar(s)
            return found / probes, false / total, rates(g, s, lambda c: c > bar)[0] / probes

        (f_lo, m_lo, b_lo), (f_hi, m_hi, b_hi) = identity_bootstrap(genuine, strangers, stats)
        print("\n(4) how sure: 90% bootstrap intervals over identities, mean, splits 0-2")
        print(
            f"  found@80 {f_lo:.3f}-{f_hi:.3f}; strangers matched@80 {m_lo:.3f}-{m_hi:.3f}; "
            f"found at {STRANGER_BAR:.0%} strangers {b_lo:.3f}-{b_hi:.3f}"
        )


if __name__ == "__main__":
    main()
