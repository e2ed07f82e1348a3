"""Fit every pack's Similarity maps (faces, users, celebrities) on LFW, checked on people it never saw.

    python bench/calibrate.py [--packs open,fused,mobile] [--cache-dir /tmp/facebank-bench] [--repeats 5]

Data: shared/faces/lfw (11,793 photos of 5,697 people; ``bench/lfw_vectors.py`` embeds them once
and caches the vectors), less the people who are also in shared/faces/dev, so faces/dev stays a
second set of unseen people. Each photo gives the face the API itself takes (the engine's first
face); a photo without a face takes no part.

A map (``facebank.engine.packs.Calibration``) is pinned at two cosines: Similarity 80 where a
share 1e-3 of impostor comparisons match, 99 where 1e-5 do, both counted on every impostor
comparison of the fitting people (``lfw_fit.fit``; ~66M face pairs on all of LFW: 1e-5 is ~660 of
them, no tail model needed). Checked on unseen people (``lfw_fit.out_of_sample``): the identities
are halved at random ``--repeats`` times, the map fitted on one half and its rates counted on the
other, both ways; printed: the pooled FMR with a 95 % Clopper-Pearson interval and its 5th-95th
percentile over folds, and the TMR (genuine pairs among each person's first 10 photos).

Three kinds of comparison, one map each:
- faces: face vs face (CompareFaces, SearchFaces, SearchFacesByImage, the video face search);
- users: a user vector (the re-normalised mean of ``--user-photos`` faces, as
  facebank/storage/users.py builds it) vs a face of another photo (SearchUsersByImage; SearchUsers
  compares with the same map); reported at the UserMatchThreshold defaults 75 and 80 too;
- celebrities: a celebrity vector (the mean of ``--celebrity-photos`` faces, as
  ``facebank celebrities import`` builds it) vs a face (RecognizeCelebrities' MatchConfidence).
A user or celebrity is built from each run of consecutive photos of a person with more photos
than that (at most 5 runs a person), so it has photos left to be searched with.

Printed per pack and kind: the map pinned now and the one fitted on all of LFW (pin it in
facebank/engine/packs.py, facebank/operations/users.py, facebank/operations/celebrities.py), both
counted on LFW (for the map pinned now all of LFW is unseen: it was fitted on faces/dev) and on
faces/dev (unseen by the new fit).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("FACEBANK_ORT_THREADS", "1")

import numpy as np
from lfw_fit import Comparisons, compare, fit, in_sample, out_of_sample, pinned
from lfw_vectors import DEFAULT_CACHE, Vectors, load

from facebank.engine.packs import PACKS, Calibration
from facebank.storage.users import mean_vector

MAX_RUNS = 5  # users/celebrities built per person


@dataclass
class Faces:
    """One image set's faces in one pack: vectors, owner identity, photo number in the identity."""

    vectors: np.ndarray
    owner: np.ndarray
    rank: np.ndarray
    names: list[str]

    @property
    def identities(self) -> int:
        return len(self.names)


def faces_of(vectors: Vectors, pack: str, skip: set[str] = frozenset(), **kind) -> Faces:
    """The set's faces in ``pack`` (photos without a face and people in ``skip`` left out)."""
    keep = vectors.found & ~np.isin(np.char.lower(vectors.identities.astype(str)), list(skip))
    names = sorted(set(vectors.identities[keep].tolist()))
    index = {n: i for i, n in enumerate(names)}
    owner = np.array([index[n] for n in vectors.identities[keep]])
    all_vectors = vectors.pack_vectors(pack, **kind)[keep]
    rank = np.zeros(owner.size, int)
    seen: dict[int, int] = {}
    for i, o in enumerate(owner):
        rank[i] = seen.get(o, 0)
        seen[o] = rank[i] + 1
    return Faces(all_vectors, owner, rank, names)


def templates(faces: Faces, photos: int, combine=None) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Templates of ``photos`` consecutive photos of each person with more than that, at most
    MAX_RUNS a person: (vectors, owner, the face rows each was built from)."""
    combine = combine or (lambda rows: mean_vector(faces.vectors[rows]))
    vectors, owner, built = [], [], []
    for identity in range(faces.identities):
        rows = np.flatnonzero(faces.owner == identity)
        if rows.size <= photos:
            continue
        for start in range(min(rows.size, MAX_RUNS)):
            picked = rows[(start + np.arange(photos)) % rows.size]
            vectors.append(combine(picked))
            owner.append(identity)
            built.append(picked)
    return np.stack(vectors).astype(np.float32), np.array(owner), built


def comparisons(faces: Faces, kind: str, photos: int) -> Comparisons:
    if kind == "faces":
        return compare(
            faces.vectors, faces.owner, faces.vectors, faces.owner, faces.identities, True, None, faces.rank, faces.rank
        )
    vectors, owner, built = templates(faces, photos)
    return compare(vectors, owner, faces.vectors, faces.owner, faces.identities, False, built, None, faces.rank)


def dev_names() -> set[str]:
    from lfw_vectors import dev_images

    return {identity.lower() for _, identity in dev_images()}


def pinned_now(pack: str, kind: str) -> Calibration:
    from facebank.operations.celebrities import CELEBRITY_CALIBRATIONS
    from facebank.operations.users import USER_CALIBRATIONS

    table = {
        "faces": {pack: PACKS[pack].calibration},
        "users": USER_CALIBRATIONS,
        "celebrities": CELEBRITY_CALIBRATIONS,
    }
    return table[kind].get(pack, PACKS[pack].calibration)


def report(pack: str, kind: str, photos: int, lfw: Faces, dev: Faces, repeats: int, seed: int) -> Calibration:
    scores = comparisons(lfw, kind, photos)
    everyone = np.ones(lfw.identities, bool)
    built = f" of {photos} photos" if kind != "faces" else ""
    print(
        f"{pack} {kind}{built}: {lfw.identities:,} people, {scores.impostor_total(everyone):,.0f} impostor "
        f"comparisons ({scores.impostor.size:,} above cosine {scores.floor:.3f} kept), {scores.genuine.size:,} genuine"
    )
    print(f"  out of sample ({repeats} random halvings of the people, each half fitted once, counted on the other):")
    for checked in out_of_sample(scores, everyone, repeats, (75.0, 80.0, 99.0) if kind == "users" else (80.0, 99.0)):
        print(f"    {checked.line()}")
    fitted = pinned(fit(scores, everyone))
    dev_scores = comparisons(dev, kind, photos)
    dev_everyone = np.ones(dev.identities, bool)
    for label, calibration in (("pinned now", pinned_now(pack, kind)), ("fitted on all LFW", fitted)):
        print(f"  {label}: {calibration}")
        for similarity in (75.0, 80.0, 99.0) if kind == "users" else (80.0, 99.0):
            print(f"    LFW      {in_sample(scores, everyone, calibration, similarity)}")
            print(f"    dev      {in_sample(dev_scores, dev_everyone, calibration, similarity)}")
    if kind != "faces":  # a mean of more photos scores impostors higher: how the map holds for other sizes
        for count in (1, 2, 3, 5):
            other = comparisons(lfw, kind, count)
            print(f"  fitted map, {kind} of {count} photos, LFW: {in_sample(other, everyone, fitted, 80.0)}")
    return fitted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packs", default=",".join(PACKS))
    parser.add_argument("--kinds", default="faces,users,celebrities")
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help="where bench/lfw_vectors.py keeps vectors"
    )
    parser.add_argument("--repeats", type=int, default=5, help="random halvings of the identities")
    parser.add_argument("--user-photos", type=int, default=2)
    parser.add_argument("--celebrity-photos", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--partial", action="store_true", help="only the people bench/lfw_vectors.py has embedded so far"
    )
    args = parser.parse_args()
    lfw_vectors, dev_vectors = load("lfw", args.cache_dir, args.partial), load("dev", args.cache_dir)
    skip = dev_names()
    photos = {"faces": 1, "users": args.user_photos, "celebrities": args.celebrity_photos}
    fitted = {}
    for name in args.packs.split(","):
        lfw, dev = faces_of(lfw_vectors, name, skip), faces_of(dev_vectors, name)
        for kind in args.kinds.split(","):
            fitted[name, kind] = report(name, kind, photos[kind], lfw, dev, args.repeats, args.seed)
    print("\nto pin:")
    for (name, kind), calibration in fitted.items():
        print(f"  {name:7s} {kind:12s} Calibration(at_80={calibration.at_80:.4f}, at_99={calibration.at_99:.4f})")


if __name__ == "__main__":
    main()
