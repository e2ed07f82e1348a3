"""1:N search on LFW at a realistic gallery size: faces, users and celebrities.

    python bench/search_accuracy.py [--packs open,fused,mobile] [--cache-dir /tmp/facebank-bench]
    python bench/search_accuracy.py --via api --people 300     # the same protocol through `facebank serve`

Protocol (seeded): of LFW's people, ``--gallery`` (4,000) are enrolled, picked at random; the rest
are strangers. Faces: each enrolled person's first photo is indexed (one face per image, as
IndexFaces MaxFaces=1 keeps the largest); their other photos (at most 9 a person, so George W
Bush's 530 do not make the figure) are mated probes; every photo of a stranger (at most 10 a
person) is a non-mated probe. A probe is searched as SearchFacesByImage searches (its first face
against every indexed face; a photo without a face finds nothing). Reported (NIST FRTE 1:N):
FNIR (mated probes whose own face is not the top match at or above the threshold) at the
thresholds where FPIR (non-mated probes whose top match reaches the threshold) is 1 % and 0.1 %,
and at the default FaceMatchThreshold 80 of the served map: share found (1 - FNIR) and share of
strangers matched (FPIR).

Users: people with at least 4 photos enrolled as users of their first 3 photos (the rest of the
4,000 as before are enrolled by one photo; they make the gallery harder, not the score), mated
probes their other photos, strangers as above; SearchUsersByImage at UserMatchThreshold 80 on the
user map. Templates (``--templates``): a user's vector as the mean (what facebank/storage/users.py
stores), the quality-weighted mean (weights: detection confidence x Sharpness), the best of its
faces (the max cosine), or one photo; compared at equal FPIR (1 %), where the calibration plays no
part, and at 80. Celebrities: the ``--celebrities`` (400) people with the most photos (at least 4)
are a gallery of 3-photo celebrities (``facebank celebrities import``: the mean vector); mated
probes their other photos; every photo of a person outside the gallery a stranger; recognised when
the own celebrity is the best match at MatchConfidence 80, a stranger is named when any reaches 80.

Intervals: 90 % percentile bootstrap over people (``--boot`` resamples, each drawn person keeps all
of their probes). ``--via vectors`` (the default) scores the cached vectors of bench/lfw_vectors.py,
which are what the API computes for the same photos; ``--via api`` runs the face protocol through
a real `facebank serve` with boto3 on a ``--people`` sample and prints both ways side by side.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("FACEBANK_ORT_THREADS", "1")

import numpy as np
from lfw_vectors import DEFAULT_CACHE, Vectors, load

from facebank.engine.packs import PACKS, Calibration
from facebank.storage.users import mean_vector

THRESHOLD = 80.0
FPIRS = (0.01, 0.001)
MATED_CAP, STRANGER_CAP = 9, 10
USER_PHOTOS, CELEBRITY_PHOTOS = 3, 3


@dataclass
class Searches:
    """Per mated probe: identity, whether the own template ranks first, the top score; per
    non-mated probe: identity and the top score (-inf: no face)."""

    mated_owner: np.ndarray
    mated_right: np.ndarray
    mated_score: np.ndarray
    stranger_owner: np.ndarray
    stranger_score: np.ndarray

    def fnir_at_fpir(self, fpir: float) -> tuple[float, float]:
        """(FNIR, the score threshold) where a share ``fpir`` of non-mated searches match."""
        threshold = float(np.quantile(self.stranger_score, 1 - fpir, method="higher"))
        return 1 - float(np.mean(self.mated_right & (self.mated_score > threshold))), threshold

    def at(self, score: float) -> tuple[float, float]:
        """(share found, share of strangers matched) with matches at score >= ``score``."""
        found = float(np.mean(self.mated_right & (self.mated_score >= score)))
        return found, float(np.mean(self.stranger_score >= score))

    def resampled(self, rng: np.random.Generator) -> Searches:
        people = np.union1d(self.mated_owner, self.stranger_owner)
        drawn = np.bincount(rng.choice(people, people.size), minlength=people.max() + 1)
        m = np.repeat(np.arange(self.mated_owner.size), drawn[self.mated_owner])
        s = np.repeat(np.arange(self.stranger_owner.size), drawn[self.stranger_owner])
        return Searches(
            self.mated_owner[m],
            self.mated_right[m],
            self.mated_score[m],
            self.stranger_owner[s],
            self.stranger_score[s],
        )


def search(gallery: np.ndarray, g_owner: np.ndarray, probes: np.ndarray, p_owner: np.ndarray, best_of=None):
    """(right, top score) per probe; a zero probe (no face) scores -inf. ``best_of``: gallery rows
    are faces and a template's score is the max over its rows (g_owner names the template)."""
    scores = probes @ gallery.T
    if best_of is not None:
        owners = np.unique(g_owner)
        per = np.full((probes.shape[0], owners.size), -np.inf, np.float32)
        for j, o in enumerate(owners):
            per[:, j] = scores[:, g_owner == o].max(1)
        scores, g_owner = per, owners
    top = scores.argmax(1)
    best = scores[np.arange(len(probes)), top].astype(np.float64)
    empty = ~probes.any(1)
    best[empty] = -np.inf
    return (g_owner[top] == p_owner) & ~empty, best


@dataclass
class Split:
    names: np.ndarray  # identity of each photo
    rank: np.ndarray  # photo number in its identity
    enrolled: np.ndarray  # per photo: its person is enrolled
    people: list[str]
    owner: np.ndarray  # identity index per photo


def split(vectors: Vectors, gallery: int, seed: int) -> Split:
    names = vectors.identities.astype(str)
    people = sorted(set(names))
    index = {p: i for i, p in enumerate(people)}
    owner = np.array([index[n] for n in names])
    rank = np.zeros(owner.size, int)
    seen: dict[int, int] = {}
    for i, o in enumerate(owner):
        rank[i] = seen.get(o, 0)
        seen[o] = rank[i] + 1
    chosen = np.zeros(len(people), bool)
    gallery = min(gallery, int(0.7 * len(people)))  # --partial: keep strangers
    chosen[np.random.default_rng(seed).permutation(len(people))[:gallery]] = True
    return Split(names, rank, chosen[owner], people, owner)


def face_searches(s: Split, vectors: np.ndarray, cosine=lambda x: x) -> Searches:
    gallery = s.enrolled & (s.rank == 0) & vectors.any(1)
    mated = s.enrolled & (s.rank > 0) & (s.rank <= MATED_CAP)
    strangers = ~s.enrolled & (s.rank < STRANGER_CAP)
    right, score = search(vectors[gallery], s.owner[gallery], vectors[mated], s.owner[mated])
    _, stranger = search(vectors[gallery], s.owner[gallery], vectors[strangers], s.owner[strangers])
    return Searches(s.owner[mated], right, score, s.owner[strangers], stranger)


def template_searches(s: Split, vectors: np.ndarray, photos: int, method: str, weights: np.ndarray) -> Searches:
    """Users (``photos`` photos each, people with more) plus everyone else enrolled by one photo."""
    counts = np.bincount(s.owner)
    multi = s.enrolled & (counts[s.owner] > photos)
    rows, owners, best_rows, best_owner = [], [], [], []
    for person in np.unique(s.owner[s.enrolled]):
        mine = np.flatnonzero((s.owner == person) & vectors.any(1))
        picked = mine[s.rank[mine] < (photos if counts[person] > photos else 1)]
        if picked.size == 0:
            continue
        if method == "single":
            picked = picked[:1]
        if method == "best":
            best_rows += picked.tolist()
            best_owner += [person] * picked.size
            continue
        w = weights[picked] if method == "weighted" else np.ones(picked.size)
        rows.append(mean_vector(vectors[picked] * w[:, None] / w.mean()))
        owners.append(person)
    if method == "best":
        gallery, g_owner, best = vectors[best_rows], np.array(best_owner), True
    else:
        gallery, g_owner, best = np.stack(rows), np.array(owners), None
    mated = multi & (s.rank >= photos) & (s.rank < photos + MATED_CAP)
    strangers = ~s.enrolled & (s.rank < STRANGER_CAP)
    right, score = search(gallery, g_owner, vectors[mated], s.owner[mated], best)
    _, stranger = search(gallery, g_owner, vectors[strangers], s.owner[strangers], best)
    return Searches(s.owner[mated], right, score, s.owner[strangers], stranger)


def celebrity_searches(vectors: Vectors, pack_vectors: np.ndarray, size: int) -> Searches:
    names = vectors.identities.astype(str)
    people = sorted(set(names))
    index = {p: i for i, p in enumerate(people)}
    owner = np.array([index[n] for n in names])
    counts = np.bincount(owner)
    order = np.argsort(-counts, kind="stable")
    chosen = order[:size][counts[order[:size]] > CELEBRITY_PHOTOS]
    rank = np.zeros(owner.size, int)
    seen: dict[int, int] = {}
    for i, o in enumerate(owner):
        rank[i] = seen.get(o, 0)
        seen[o] = rank[i] + 1
    enrolled = np.isin(owner, chosen)
    gallery, g_owner = [], []
    for person in chosen:
        picked = np.flatnonzero((owner == person) & (rank < CELEBRITY_PHOTOS) & pack_vectors.any(1))
        if picked.size:
            gallery.append(mean_vector(pack_vectors[picked]))
            g_owner.append(person)
    mated = enrolled & (rank >= CELEBRITY_PHOTOS) & (rank < CELEBRITY_PHOTOS + MATED_CAP)
    strangers = ~enrolled & (rank < STRANGER_CAP)
    g = np.stack(gallery)
    right, score = search(g, np.array(g_owner), pack_vectors[mated], owner[mated])
    _, stranger = search(g, np.array(g_owner), pack_vectors[strangers], owner[strangers])
    return Searches(owner[mated], right, score, owner[strangers], stranger)


def row(label: str, searches: Searches, calibration: Calibration, boot: int, seed: int) -> str:
    cosine = calibration.cosine_floor(THRESHOLD) + 1e-6
    strict = calibration.cosine_floor(99.0) + 1e-6

    def figures(x: Searches) -> list[float]:
        return [x.fnir_at_fpir(f)[0] for f in FPIRS] + list(x.at(cosine)) + list(x.at(strict))

    point = figures(searches)
    rng = np.random.default_rng(seed)
    draws = np.array([figures(searches.resampled(rng)) for _ in range(boot)]) if boot else None
    cells = []
    for i, value in enumerate(point):
        interval = (
            "" if draws is None else f" [{np.quantile(draws[:, i], 0.05):.3f}-{np.quantile(draws[:, i], 0.95):.3f}]"
        )
        cells.append(f"{value:.3f}{interval}")
    return (
        f"  {label:28s} FNIR@FPIR1% {cells[0]}  FNIR@FPIR0.1% {cells[1]}  at 80: found {cells[2]}, "
        f"strangers matched {cells[3]}  at 99: found {cells[4]}, strangers matched {cells[5]}  "
        f"({searches.mated_owner.size:,} mated / {searches.stranger_owner.size:,} non-mated)"
    )


def report(pack: str, vectors: Vectors, args: argparse.Namespace) -> None:
    from facebank.operations.celebrities import CELEBRITY_CALIBRATIONS
    from facebank.operations.users import USER_CALIBRATIONS

    pv = vectors.pack_vectors(pack)
    s = split(vectors, args.gallery, args.seed)
    face_map = PACKS[pack].calibration
    enrolled = len(set(s.owner[s.enrolled].tolist()))
    print(
        f"{pack}: {enrolled:,} of {len(s.people):,} people enrolled ({int(s.enrolled.sum()):,} photos), map {face_map}"
    )
    print(row("faces (1 photo each)", face_searches(s, pv), face_map, args.boot, args.seed))
    if args.tta:
        print(row("faces, no flip TTA", face_searches(s, vectors.pack_vectors(pack, flip=False)), face_map, 0, 0))
        print(row("faces, central face", face_searches(s, vectors.pack_vectors(pack, central=True)), face_map, 0, 0))
    user_map = USER_CALIBRATIONS.get(pack, face_map)
    weights = (vectors.confidence / 100) * np.nan_to_num(vectors.sharpness, nan=0.0) + 1e-6
    for method in ("mean", "weighted", "best", "single") if args.templates else ("mean",):
        label = f"users of {USER_PHOTOS}, {method}"
        searches = template_searches(s, pv, USER_PHOTOS, method, weights)
        print(
            row(
                label,
                searches,
                face_map if method in ("best", "single") else user_map,
                args.boot if method == "mean" else 0,
                args.seed,
            )
        )
    celeb_map = CELEBRITY_CALIBRATIONS.get(pack, face_map)
    print(
        row(
            f"celebrities ({args.celebrities})",
            celebrity_searches(vectors, pv, args.celebrities),
            celeb_map,
            args.boot,
            args.seed,
        )
    )


def tta_cost(vectors: Vectors, photos: int = 40) -> None:
    """Median ms of each recogniser's inference on one face, without and with its mirror image."""
    import time

    from lfw_vectors import _engine, shared_dir

    from facebank.engine.image import decode

    engine = _engine()
    faces_dir = shared_dir() / "faces"
    for recognizer, _ in engine.recognizers:
        one, two = [], []
        for path in vectors.paths[:: max(1, len(vectors.paths) // photos)][:photos]:
            rgb = decode((faces_dir / str(path)).read_bytes())
            found = engine.detect(rgb, max_faces=1)
            if not found:
                continue
            batch = recognizer.preprocess(rgb, found[0].landmarks)
            for out, sub in ((one, batch[:1]), (two, batch)):
                start = time.perf_counter()
                recognizer.infer(sub)
                out.append((time.perf_counter() - start) * 1e3)
        print(
            f"  {type(recognizer).__name__}: {np.median(one):.1f} ms one view, {np.median(two):.1f} ms with the "
            f"mirror ({len(one)} faces, median)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packs", default=",".join(PACKS))
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--gallery", type=int, default=4000)
    parser.add_argument("--celebrities", type=int, default=400)
    parser.add_argument("--boot", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--partial", action="store_true", help="only the people bench/lfw_vectors.py has embedded so far"
    )
    parser.add_argument("--templates", action="store_true", help="compare user templates")
    parser.add_argument("--tta", action="store_true", help="also without flip TTA, and with the central face")
    parser.add_argument("--tta-ms", action="store_true", help="time the recognisers with and without the mirror")
    parser.add_argument("--via", choices=("vectors", "api"), default="vectors")
    parser.add_argument("--people", type=int, default=300, help="--via api: people in the sample")
    args = parser.parse_args()
    vectors = load("lfw", args.cache_dir, args.partial)
    if args.via == "api":
        from search_api import compare_with_api

        compare_with_api(vectors, args)
        return
    for pack in args.packs.split(","):
        report(pack, vectors, args)
    if args.tta_ms:
        tta_cost(vectors)


if __name__ == "__main__":
    main()
