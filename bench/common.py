"""Shared helpers for bench scripts: where the shared data lives, how it is labelled, and how a
Similarity calibration is fitted and checked on people it never saw."""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from facebank.engine.packs import Calibration

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("FACEBANK_SHARED", ROOT.parent / "shared"))


People = dict[str, list[np.ndarray | None]]  # identity -> largest-face vector per photo (None: no face)


def load_engine(pack: str | None = None):
    """The process-wide FaceEngine of ``pack`` (None: the default) under the environment's settings
    (FACEBANK_MODEL_DIR, FACEBANK_ORT_THREADS), its model files fetched first (FACEBANK_MODEL_MIRROR)."""
    from facebank import models
    from facebank.engine import get_engine
    from facebank.engine.packs import pack as find_pack
    from facebank.settings import Settings

    settings = Settings.from_env()
    models.fetch(find_pack(pack).files, model_dir=settings.resolved_model_dir, mirror=settings.model_mirror)
    return get_engine(pack, settings.resolved_model_dir, settings.ort_threads)


def dev_images() -> list[tuple[Path, str]]:
    """(path, identity) for every labelled image in faces/dev."""
    faces = shared_dir() / "faces"
    with open(faces / "MANIFEST.tsv") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["path"].startswith("dev/")]
    return [(faces / r["path"], r["identity"]) for r in rows]


def embed_all(pack: str | None, cache: Path | None) -> tuple[People, str]:
    """Largest-face vector of every faces/dev image (None: no face), by identity, photos in path
    order; kept in ``cache`` (an npz file, reused while it holds the same pack) when given."""
    from facebank.engine.image import decode
    from facebank.engine.packs import pack as find_pack

    name = find_pack(pack).name
    if cache is not None and cache.exists():  # checked first: a cached run loads no model
        data = np.load(cache, allow_pickle=True)
        if str(data["pack"]) == name:
            return data["people"].item(), name
    engine = load_engine(name)
    people: dict[str, list[tuple[str, np.ndarray | None]]] = defaultdict(list)
    for path, identity in dev_images():
        rgb = decode(path.read_bytes())
        faces = engine.detect(rgb, max_faces=1)
        people[identity].append((path.name, engine.embed(rgb, faces[0]) if faces else None))
    ordered = {k: [v for _, v in sorted(people[k], key=lambda p: p[0])] for k in sorted(people)}
    if cache is not None:
        np.savez(cache, people=np.array(ordered, dtype=object), pack=engine.pack.name)
    return ordered, engine.pack.name


HALVES = ("tuning", "held-out")


def half(identity: str) -> str:
    """Deterministic split of identities by a hash of the name: the fusion weights and the dlib
    shape predictor's start box were fitted on 'tuning' and checked on 'held-out'."""
    return HALVES[hashlib.sha256(identity.encode()).digest()[0] % 2]


def identity_bootstrap(genuine: list, strangers: list, stats, draws: int = 2000, seed: int = 0):
    """90% percentile intervals, shape (2, k), of ``stats(genuine, strangers)`` (a k-tuple) when the
    identities are drawn again with replacement, each drawn identity keeping all of its probes.
    Items of both lists start with the probe's identity. Probes of one person are not independent,
    so resampling people, not probes, is what tells how a figure would move on other people."""
    by_name: dict[str, tuple[list, list]] = {}
    for item in genuine:
        by_name.setdefault(item[0], ([], []))[0].append(item)
    for item in strangers:
        by_name.setdefault(item[0], ([], []))[1].append(item)
    names = sorted(by_name)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        pick = rng.choice(len(names), len(names))
        g = [x for i in pick for x in by_name[names[i]][0]]
        s = [x for i in pick for x in by_name[names[i]][1]]
        if g and s:
            out.append(stats(g, s))
    return np.percentile(np.array(out), [5, 95], axis=0)


# --- Similarity calibration checked on people it never saw (faces: bench/calibrate.py, users:
# bench/users.py). A pinned cosine fitted to one small sample of people is optimistic by
# construction: the people it was fitted on are the ones it fits best. So the map is fitted on
# some identities and its false-match rate measured on the others, over many splits, and each
# pinned point takes the margin that keeps the promise on ``BOUND`` of the unseen groups.

BOUND = 0.90  # the share of unseen groups of people on which a pinned rate is to hold
NORMAL = NormalDist()


@dataclass(frozen=True)
class Promise:
    """A pinned point of the map: ``similarity`` means a false-match rate of ``rate`` per pair."""

    similarity: float
    rate: float
    # Observed: a test half (~6k impostor pairs) holds enough pairs to count the rate. Else it is
    # read off the test people's own fitted tail: an extrapolation, and labelled so.
    observed: bool


PROMISES = (Promise(80.0, 1e-3, observed=True), Promise(99.0, 1e-5, observed=False))
REPORTED = (80.0, 90.0, 99.0)  # Similarities whose out-of-sample rates are reported


@dataclass(frozen=True)
class LabelledScores:
    """Cosines of comparisons whose two sides each belong to an identity: face-face pairs, or
    user-face pairs. A side without a detected face scores -1, so it never matches."""

    cosines: np.ndarray
    left: np.ndarray  # identity index (into ``identities``) of each pair's first side
    right: np.ndarray
    identities: tuple[str, ...]

    @property
    def genuine(self) -> np.ndarray:
        return self.left == self.right

    def among(self, members: np.ndarray) -> LabelledScores:
        """The pairs whose two sides are both identities in ``members`` (a mask over identities)."""
        keep = members[self.left] & members[self.right]
        return LabelledScores(self.cosines[keep], self.left[keep], self.right[keep], self.identities)


def _stacked(people: People) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """(identities, vectors (zero where no face), owner identity index, photo index) per image."""
    names = tuple(sorted(people))
    rows = [(i, j, v) for i, name in enumerate(names) for j, v in enumerate(people[name])]
    dimension = next(v.size for _, _, v in rows if v is not None)
    vectors = np.stack([np.zeros(dimension) if v is None else v for _, _, v in rows]).astype(np.float64)
    return names, vectors, np.array([i for i, _, _ in rows]), np.array([j for _, j, _ in rows])


def face_pairs(people: People) -> LabelledScores:
    """Every pair of images (largest face of each), as bench/accuracy.py pairs them."""
    names, vectors, owner, _ = _stacked(people)
    found = np.linalg.norm(vectors, axis=1) > 0
    a, b = np.triu_indices(len(vectors), 1)
    cosines = np.where(found[a] & found[b], np.einsum("ij,ij->i", vectors[a], vectors[b]), -1.0)
    return LabelledScores(cosines, owner[a], owner[b], names)


def user_pairs(people: People) -> LabelledScores:
    """User vectors against faces. Each identity with >= 2 photos gives one user per pair of
    consecutive photos (s, s+1), built as facebank/search/users.py builds it (``mean_vector``),
    as tests/test_users.py enrols two photos. A user is compared with every face of every other
    identity (impostor) and with its own identity's photos it was not built from (genuine)."""
    from facebank.search.users import mean_vector

    names, vectors, owner, photo = _stacked(people)
    found = np.linalg.norm(vectors, axis=1) > 0
    cosines, left, right = [], [], []
    for index, name in enumerate(names):
        count = len(people[name])
        enrolments = {tuple(sorted((s, (s + 1) % count))) for s in range(count)} if count >= 2 else set()
        for enrolment in sorted(enrolments):
            enrolled = (owner == index) & np.isin(photo, enrolment) & found
            if not enrolled.any():
                continue
            user = mean_vector(vectors[enrolled]).astype(np.float64)
            others = (owner != index) | ~np.isin(photo, enrolment)
            cosines.append(np.where(found[others], vectors[others] @ user, -1.0))
            left.append(np.full(int(others.sum()), index))
            right.append(owner[others])
    return LabelledScores(np.concatenate(cosines), np.concatenate(left), np.concatenate(right), names)


@dataclass(frozen=True)
class TailFit:
    """A normal curve through the 90th and 99th percentiles of impostor cosines, drawn in Fisher's
    z (atanh of the cosine; ``fisher=False``: on the cosines themselves, the rule before issue 16).

    Percentiles, not the whole sample: the curve follows the upper tail, and dlib's impostor cosines
    are skewed in the bulk. Fisher's z because a cosine is bounded by 1: a normal drawn on cosines
    runs past the bound when extrapolated, and with a margin it put open's 1e-5 point at cosine
    1.002, a Similarity 99 no pair of faces could reach."""

    mean: float
    sd: float
    fisher: bool = True

    @classmethod
    def of(cls, impostor: np.ndarray, fisher: bool = True) -> TailFit:
        q90, q99 = np.quantile(impostor, [0.90, 0.99])
        return cls.through(float(q90), float(q99), fisher)

    @classmethod
    def through(cls, q90: float, q99: float, fisher: bool = True) -> TailFit:
        """The curve whose 90th and 99th percentiles are the cosines ``q90`` and ``q99``."""
        z90, z99 = NORMAL.inv_cdf(0.90), NORMAL.inv_cdf(0.99)
        x90, x99 = cls._scale(q90, fisher), cls._scale(q99, fisher)
        sd = (x99 - x90) / (z99 - z90)
        return cls(x90 - z90 * sd, sd, fisher)

    @staticmethod
    def _scale(cosine: float, fisher: bool) -> float:
        return math.atanh(min(max(cosine, -1 + 1e-12), 1 - 1e-12)) if fisher else cosine

    def cosine_at(self, rate: float, margin: float = 0.0) -> float:
        """The cosine that ``rate`` of impostor pairs reach on the curve, ``margin`` sds further out."""
        x = self.mean + (NORMAL.inv_cdf(1 - rate) + margin) * self.sd
        return math.tanh(x) if self.fisher else x

    def margin_to(self, cosine: float, rate: float) -> float:
        """The margin at which ``cosine_at(rate, margin)`` is ``cosine``."""
        return (self._scale(cosine, self.fisher) - self.mean) / self.sd - NORMAL.inv_cdf(1 - rate)

    def rate_at(self, cosine: float) -> float:
        return 1 - NORMAL.cdf((self._scale(cosine, self.fisher) - self.mean) / self.sd)

    def calibration(self, margins: dict[float, float]) -> Calibration:
        """The map through the promised points, each ``margins[similarity]`` sds further out."""
        at = {p.similarity: self.cosine_at(p.rate, margins[p.similarity]) for p in PROMISES}
        return Calibration(at[80.0], at[99.0])


def pinned(calibration: Calibration) -> Calibration:
    """Rounded to 4 decimals, upwards: rounding never loosens a point."""
    return Calibration(*(math.ceil(c * 1e4) / 1e4 for c in (calibration.at_80, calibration.at_99)))


@dataclass(frozen=True)
class Fold:
    """One split of the identities: the tail fitted on the training people; the test people's pairs."""

    fit: TailFit
    test_impostor: np.ndarray  # sorted, highest first
    test_genuine: np.ndarray
    test_fit: TailFit  # the test people's own tail: their rate where their pairs run out
    test_identities: int


def identity_folds(scores: LabelledScores, repeats: int, seed: int = 0, fisher: bool = True) -> list[Fold]:
    """Repeated two-fold cross-validation over identities: the people are shuffled and halved, and
    each half is fitted on once and tested on once. Halves because a test group must hold enough
    impostor pairs to show a 1e-3 rate (17 of these people hold ~6k) and the training group as many
    people as the test one. Each test half is a group of people its fit never saw, and splitting a
    fixed sample in complementary halves gives the spread of (test - training) about its right size
    for independent groups. The same seed gives the same splits for either tail."""
    rng = np.random.default_rng(seed)
    count = len(scores.identities)
    folds = []
    for _ in range(repeats):
        first = np.zeros(count, bool)
        first[rng.permutation(count)[: count // 2]] = True
        for training in (first, ~first):
            train, test = scores.among(training), scores.among(~training)
            impostor = np.sort(test.cosines[~test.genuine])[::-1]
            folds.append(
                Fold(
                    TailFit.of(train.cosines[~train.genuine], fisher),
                    impostor,
                    test.cosines[test.genuine],
                    TailFit.of(impostor, fisher),
                    int((~training).sum()),
                )
            )
    return folds


def fold_margins(folds: list[Fold], bound: float = BOUND) -> dict[float, float]:
    """Per promised point, the margin (in sds of the training tail) that keeps the test people's
    false-match rate at or below the promise in ``bound`` of the folds: the ``bound`` quantile of
    what each fold needed. At 80 a fold needs its training cosine above the test pair that would
    make the rate exceed 1e-3; at 99 to reach the test people's own fitted 1e-5 point."""
    margins = {}
    for promise in PROMISES:
        needed = []
        for fold in folds:
            if promise.observed:
                target = float(fold.test_impostor[int(promise.rate * fold.test_impostor.size)])
            else:
                target = fold.test_fit.cosine_at(promise.rate)
            needed.append(fold.fit.margin_to(target, promise.rate))
        # inverted_cdf: the smallest margin that at least ``bound`` of the folds need no more than;
        # the nudge puts the cosine strictly above the pair that would match at exactly that cosine.
        margins[promise.similarity] = float(np.quantile(needed, bound, method="inverted_cdf")) + 1e-9
    return margins


@dataclass(frozen=True)
class Rates:
    """A rate over folds: pooled over every fold's pairs, its 5th-95th percentile over folds (the
    spread from one unseen group to another), the ``BOUND`` quantile (the bound a promise is held
    to) and the pairs it rests on."""

    pooled: float
    low: float
    high: float
    bound: float
    pairs_per_fold: float

    @classmethod
    def of(cls, hits: np.ndarray, sizes: np.ndarray) -> Rates:
        per_fold = hits / sizes
        low, high = np.quantile(per_fold, [0.05, 0.95])
        bound = np.quantile(per_fold, BOUND, method="inverted_cdf")  # BOUND of the folds are at or below it
        return cls(float(hits.sum() / sizes.sum()), float(low), float(high), float(bound), float(sizes.mean()))


@dataclass(frozen=True)
class OutOfSample:
    similarity: float
    fmr: Rates  # counted on the test pairs
    fmr_extrapolated: Rates  # read off each test half's fitted tail (its "pooled" is the mean)
    tmr: Rates


def out_of_sample(folds: list[Fold], margins: dict[float, float]) -> list[OutOfSample]:
    """FMR and TMR at each reported Similarity of the map each fold fits (with ``margins``) on its
    training people, measured on its test people."""
    out = []
    for similarity in REPORTED:
        false, true, extrapolated = [], [], []
        for fold in folds:
            # cosine_floor is the map's inverse less 1e-6 (the searches' pruning slack): undo it
            cosine = fold.fit.calibration(margins).cosine_floor(similarity) + 1e-6
            false.append(int(np.sum(fold.test_impostor >= cosine)))
            true.append(int(np.sum(fold.test_genuine >= cosine)))
            extrapolated.append(fold.test_fit.rate_at(cosine))
        impostors = np.array([f.test_impostor.size for f in folds])
        genuines = np.array([f.test_genuine.size for f in folds])
        out.append(
            OutOfSample(
                similarity,
                Rates.of(np.array(false), impostors),
                Rates.of(np.array(extrapolated) * impostors, impostors),
                Rates.of(np.array(true), genuines),
            )
        )
    return out


def bootstrap_points(
    scores: LabelledScores, margins: dict[float, float], draws: int = 1000, seed: int = 0
) -> np.ndarray:
    """(draws, 2) cosines at 80 and 99 of the map fitted on all identities, when the identities
    are drawn again with replacement (a pair of two drawn people weighs the product of how often
    each was drawn): how far the pinned cosines would move on another sample of as many people."""
    rng = np.random.default_rng(seed)
    impostor = ~scores.genuine
    cosines, left, right = scores.cosines[impostor], scores.left[impostor], scores.right[impostor]
    count = len(scores.identities)
    out = np.empty((draws, 2))
    for d in range(draws):
        drawn = np.bincount(rng.integers(0, count, count), minlength=count).astype(np.float64)
        weights = drawn[left] * drawn[right]
        keep = weights > 0
        q90, q99 = np.quantile(cosines[keep], [0.90, 0.99], weights=weights[keep], method="inverted_cdf")
        calibration = TailFit.through(float(q90), float(q99)).calibration(margins)
        out[d] = calibration.at_80, calibration.at_99
    return out


def _rates_line(rates: Rates, fmr: bool) -> str:
    cell = "{:.1e}" if fmr else "{:.3f}"
    text = f"{cell.format(rates.pooled)} [{cell.format(rates.low)}-{cell.format(rates.high)}]"
    return text + (f" bound {rates.bound:.1e}" if fmr else "")


def rates_in_sample(scores: LabelledScores, calibration: Calibration) -> str:
    """FMR and TMR of ``calibration`` at the reported Similarities, counted on every pair."""
    impostor, genuine = scores.cosines[~scores.genuine], scores.cosines[scores.genuine]
    cells = []
    for similarity in REPORTED:
        cosine = calibration.cosine_floor(similarity) + 1e-6
        false, true = int(np.sum(impostor >= cosine)), int(np.sum(genuine >= cosine))
        rate = false / impostor.size
        cells.append(f"{similarity:.0f}: FMR {false}/{impostor.size} = {rate:.1e}, TMR {true / genuine.size:.3f}")
    return "; ".join(cells)


def cross_validated_calibration(
    scores: LabelledScores, current: Calibration, held_out: np.ndarray, repeats: int, seed: int = 0
) -> Calibration:
    """Fit the map on all identities with the margins cross-validation asks for, print how it and
    the rule before it fare on people they never saw, and return the calibration to pin.
    ``held_out`` (a mask over identities) is the held-out half of ``common.half``: the map
    pinned before issue 16 was fitted on the other half, so there it is out of sample."""
    genuine = scores.genuine
    folds = identity_folds(scores, repeats, seed)
    margins = fold_margins(folds)
    fit = TailFit.of(scores.cosines[~genuine])
    fitted = pinned(fit.calibration(margins))
    spread = bootstrap_points(scores, margins, seed=seed).std(axis=0)
    print(
        f"  {len(scores.identities)} identities, {int((~genuine).sum()):,} impostor and {int(genuine.sum()):,} "
        f"genuine pairs; {len(folds)} folds ({repeats} shuffles x 2 halves), test halves of "
        f"{min(f.test_identities for f in folds)}-{max(f.test_identities for f in folds)} identities"
    )
    print(
        f"  margins for {BOUND:.0%} of unseen halves within the promise: 80 (1e-3, counted) "
        f"{margins[80.0]:+.3f} sd, 99 (1e-5, extrapolated from each test half's tail) {margins[99.0]:+.3f} sd"
    )
    print(
        f"  fitted on all identities: {fitted} (no margin: {pinned(fit.calibration({80.0: 0.0, 99.0: 0.0}))}); "
        f"identity-bootstrap sd {spread[0]:.4f} / {spread[1]:.4f}; pinned now {current}"
    )
    rules = (
        (
            "before: cosine tail, no margin",
            out_of_sample(identity_folds(scores, repeats, seed, fisher=False), {80.0: 0.0, 99.0: 0.0}),
        ),
        ("after: Fisher-z tail + margins", out_of_sample(folds, margins)),
    )
    print("  out of sample: pooled over folds [5th-95th percentile over folds]; bound: the 90th percentile")
    for label, rows in rules:
        for row in rows:
            print(
                f"    {label:31s} at {row.similarity:.0f}: FMR {_rates_line(row.fmr, True)}; "
                f"extrapolated {row.fmr_extrapolated.pooled:.1e} bound {row.fmr_extrapolated.bound:.1e}; "
                f"TMR {_rates_line(row.tmr, False)}  (per fold {row.fmr.pairs_per_fold:,.0f} impostor, "
                f"{row.tmr.pairs_per_fold:,.0f} genuine pairs)"
            )
    for label, calibration in (("pinned now", current), ("fitted", fitted)):
        print(
            f"  {label} map on all pairs (in sample for a map fitted on them): {rates_in_sample(scores, calibration)}"
        )
    print(f"  pinned now map on the held-out half of common.half: {rates_in_sample(scores.among(held_out), current)}")
    return fitted
