"""Counted calibration on LFW: a Similarity map pinned at empirical false-match rates, checked on
people the fit never saw.

With thousands of people the tail need not be modelled: Similarity 80 is pinned at the cosine that
a share 1e-3 of the training people's impostor pairs reach, 99 at 1e-5, both counted. Whether that
holds for other people is measured, not assumed: the identities are halved at random (``repeats``
times, each half fitted on once and tested on once), and the rate is counted on the pairs among
the test half's people. Reported per point: the pooled rate over every fold's test pairs with its
Clopper-Pearson 95 % interval (pairs treated as independent, which they are not quite: two pairs
share a photo), and the 5th-95th percentile of the rate over folds (the spread from one unseen
group of ~2,800 people to another, the figure that does account for shared photos and people).

Scores are "comparisons": a template (a face, a user vector, a celebrity vector) against a face;
impostor when their identities differ. Only comparisons above a floor (far below any pinned
point) are kept, with the identities of both sides; how many impostor comparisons a group of
people holds is counted from its sizes, so a fold costs nothing to evaluate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facebank.engine.packs import Calibration

PROMISES = ((80.0, 1e-3), (99.0, 1e-5))
KEEP = 5e-3  # share of the impostor comparisons kept above the floor (a fold's 1e-3 point is far above it)
GENUINE_CAP = 10  # photos per identity counted in genuine pairs, so George W Bush's 530 do not make the TMR


@dataclass
class Comparisons:
    """Template-face cosines: every impostor comparison above ``floor`` and every genuine one.

    ``t_owner``/``f_owner``: identity index of each template / face. Impostor counts of a group
    of identities are ``templates_in(group) x faces_in(group) - same-identity comparisons``, minus,
    for face-face comparisons (``symmetric``), the mirror half and the diagonal."""

    floor: float
    impostor: np.ndarray  # cosines above floor, sorted highest first
    imp_left: np.ndarray  # template identity
    imp_right: np.ndarray  # face identity
    genuine: np.ndarray
    gen_owner: np.ndarray
    templates_per_identity: np.ndarray
    faces_per_identity: np.ndarray
    symmetric: bool
    identities: int

    def impostor_total(self, members: np.ndarray) -> float:
        t = self.templates_per_identity * members
        f = self.faces_per_identity * members
        total = float(t.sum()) * float(f.sum()) - float(np.dot(t, f))
        return total / 2 if self.symmetric else total

    def impostor_among(self, members: np.ndarray) -> np.ndarray:
        return self.impostor[members[self.imp_left] & members[self.imp_right]]

    def genuine_among(self, members: np.ndarray) -> np.ndarray:
        return self.genuine[members[self.gen_owner]]


def compare(
    templates: np.ndarray,
    t_owner: np.ndarray,
    faces: np.ndarray,
    f_owner: np.ndarray,
    identities: int,
    symmetric: bool,
    exclude: list[np.ndarray] | None = None,
    t_rank: np.ndarray | None = None,
    f_rank: np.ndarray | None = None,
    block: int = 512,
) -> Comparisons:
    """All template-face cosines, kept above the floor. ``symmetric`` (templates are the faces):
    each pair once. ``exclude[t]``: face rows template t was built from (never compared with it).
    ``t_rank``/``f_rank``: each side's photo number within its identity; genuine comparisons are
    kept only between photos numbered below GENUINE_CAP."""
    rng = np.random.default_rng(0)
    sample = rng.integers(0, len(templates), 4000)
    probe = (templates[sample] @ faces.T)[t_owner[sample][:, None] != f_owner[None, :]]
    floor = float(np.quantile(probe, 1 - KEEP))
    imp, left, right, gen, gown = [], [], [], [], []
    for start in range(0, len(templates), block):
        stop = min(start + block, len(templates))
        scores = templates[start:stop] @ faces.T
        rows = np.arange(start, stop)
        valid = np.ones_like(scores, dtype=bool)
        if symmetric:
            valid &= np.arange(faces.shape[0])[None, :] > rows[:, None]
        if exclude is not None:
            for i, t in enumerate(rows):
                valid[i, exclude[t]] = False
        same = t_owner[rows][:, None] == f_owner[None, :]
        hit = valid & ~same & (scores > floor)
        r, c = np.nonzero(hit)
        imp.append(scores[r, c])
        left.append(t_owner[rows][r])
        right.append(f_owner[c])
        if t_rank is not None and f_rank is not None:
            same = same & (t_rank[rows][:, None] < GENUINE_CAP) & (f_rank[None, :] < GENUINE_CAP)
        r, c = np.nonzero(valid & same)
        gen.append(scores[r, c])
        gown.append(t_owner[rows][r])
    impostor = np.concatenate(imp)
    order = np.argsort(-impostor, kind="stable")
    return Comparisons(
        floor,
        impostor[order],
        np.concatenate(left)[order],
        np.concatenate(right)[order],
        np.concatenate(gen),
        np.concatenate(gown),
        np.bincount(t_owner, minlength=identities),
        np.bincount(f_owner, minlength=identities),
        symmetric,
        identities,
    )


def cosine_at(sorted_desc: np.ndarray, total: float, rate: float) -> float:
    """The lowest cosine at which at most ``rate`` of ``total`` impostor comparisons match
    (``sorted_desc``: the highest of them, highest first)."""
    allowed = int(math.floor(rate * total))
    if allowed >= sorted_desc.size:
        raise ValueError("floor too high for this rate")
    return float(np.nextafter(sorted_desc[allowed], np.inf))


def fit(comparisons: Comparisons, members: np.ndarray) -> Calibration:
    """The map through the promised points, counted on the comparisons among ``members``."""
    scores, total = comparisons.impostor_among(members), comparisons.impostor_total(members)
    at = {s: cosine_at(scores, total, r) for s, r in PROMISES}
    return Calibration(at[80.0], at[99.0])


def pinned(calibration: Calibration) -> Calibration:
    """Rounded to 4 decimals, upwards: rounding never loosens a point."""
    return Calibration(*(math.ceil(c * 1e4) / 1e4 for c in (calibration.at_80, calibration.at_99)))


def _poisson_cdf(k: int, mean: float) -> float:
    """P(X <= k) for X ~ Poisson(mean)."""
    i = np.arange(k + 1)
    terms = -mean + i * math.log(mean) - np.array([math.lgamma(j + 1) for j in i]) if mean > 0 else None
    return 1.0 if terms is None else float(np.exp(terms).sum())


def _solve(f, low: float, high: float) -> float:
    """The root of increasing-or-decreasing ``f`` in [low, high] by bisection (60 steps)."""
    sign = f(low) > 0
    for _ in range(60):
        mid = (low + high) / 2
        if (f(mid) > 0) == sign:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def clopper_pearson(hits: int, total: float, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of hits/total in its Poisson limit (exact as total grows with the
    rate small: here millions of pairs, rates <= 1e-3), by bisection on the Poisson CDF."""
    a = (1 - level) / 2
    top = hits + 10 * math.sqrt(hits + 1) + 10
    low = 0.0 if hits == 0 else _solve(lambda m: (1 - _poisson_cdf(hits - 1, m)) - a, 0.0, top)
    high = _solve(lambda m: _poisson_cdf(hits, m) - a, 0.0, top)
    return low / total, high / total


@dataclass
class Checked:
    similarity: float
    hits: int
    pairs: float
    per_fold: np.ndarray
    tmr: float
    tmr_per_fold: np.ndarray
    genuine: int

    def line(self) -> str:
        rate = self.hits / self.pairs
        low, high = clopper_pearson(self.hits, self.pairs)
        f5, f95 = np.quantile(self.per_fold, [0.05, 0.95])
        t5, t95 = np.quantile(self.tmr_per_fold, [0.05, 0.95])
        return (
            f"at {self.similarity:.0f}: FMR {self.hits:,}/{self.pairs:,.0f} = {rate:.2e} "
            f"[95% CP {low:.2e}-{high:.2e}; folds 5-95% {f5:.2e}-{f95:.2e}]; "
            f"TMR {self.tmr:.3f} [folds {t5:.3f}-{t95:.3f}] of {self.genuine:,} genuine"
        )


def halvings(identities: int, repeats: int, seed: int = 0) -> list[np.ndarray]:
    """Training masks: ``repeats`` random halvings of the identities, each half once."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(repeats):
        first = np.zeros(identities, bool)
        first[rng.permutation(identities)[: identities // 2]] = True
        out += [first, ~first]
    return out


def out_of_sample(
    comparisons: Comparisons,
    eligible: np.ndarray,
    repeats: int,
    similarities: tuple[float, ...] = (80.0, 99.0),
    seed: int = 0,
    rule=fit,
) -> list[Checked]:
    """Fit ``rule`` on half the ``eligible`` identities, count on the other half, both ways,
    ``repeats`` times; pooled over folds."""
    index = np.flatnonzero(eligible)
    folds = []
    for half in halvings(index.size, repeats, seed):
        train = np.zeros(comparisons.identities, bool)
        test = np.zeros(comparisons.identities, bool)
        train[index[half]] = True
        test[index[~half]] = True
        folds.append((rule(comparisons, train), test))
    out = []
    for similarity in similarities:
        hits, pairs, tmrs, gens = [], [], [], []
        for calibration, test in folds:
            cosine = calibration.cosine_floor(similarity) + 1e-6
            scores = comparisons.impostor_among(test)
            hits.append(int(np.sum(scores >= cosine)))
            pairs.append(comparisons.impostor_total(test))
            genuine = comparisons.genuine_among(test)
            tmrs.append(float(np.mean(genuine >= cosine)) if genuine.size else math.nan)
            gens.append(genuine.size)
        h, p = np.array(hits), np.array(pairs)
        g = np.array(gens)
        t = np.array(tmrs)
        out.append(
            Checked(similarity, int(h.sum()), float(p.sum()), h / p, float(np.nansum(t * g) / g.sum()), t, int(g.sum()))
        )
    return out


def in_sample(comparisons: Comparisons, members: np.ndarray, calibration: Calibration, similarity: float) -> str:
    cosine = calibration.cosine_floor(similarity) + 1e-6
    hits = int(np.sum(comparisons.impostor_among(members) >= cosine))
    total = comparisons.impostor_total(members)
    genuine = comparisons.genuine_among(members)
    low, high = clopper_pearson(hits, total)
    tmr = float(np.mean(genuine >= cosine)) if genuine.size else math.nan
    rate = f"{hits:,}/{total:,.0f} = {hits / total:.2e} [95% CP {low:.2e}-{high:.2e}]"
    return f"at {similarity:.0f}: FMR {rate}; TMR {tmr:.3f}"
