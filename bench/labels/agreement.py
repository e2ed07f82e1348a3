"""Agreement between two labelling passes of ``tests/data/lfw_attributes.tsv`` rows (issue 24).

    python bench/labels/agreement.py subset --tsv tests/data/lfw_attributes.tsv --n 120 --seed 7 > blind.txt
    python bench/labels/sheets.py render --list blind.txt --name blind      # label these without the TSV
    python bench/labels/compile.py --list blind.txt --notes notes/blind.txt --source second --tsv second.tsv
    python bench/labels/agreement.py compare --tsv tests/data/lfw_attributes.tsv --second second.tsv

``subset`` draws rows at random (one row per person, shuffled so the order says nothing about the source).
``compare`` prints, per attribute, over photos both passes decided (no ``?`` in either): the count, raw
agreement with its Wilson 95 % interval, Cohen's kappa with a percentile bootstrap 95 % interval (2,000
resamples of photos), and how many photos each pass marked ``?``.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

from compile import ATTRS, read_tsv, wilson  # type: ignore[import-not-found]


def kappa(pairs: list[tuple[str, str]]) -> float:
    n = len(pairs)
    if n == 0:
        return math.nan
    observed = sum(a == b for a, b in pairs) / n
    pa = sum(a == "1" for a, _ in pairs) / n
    pb = sum(b == "1" for _, b in pairs) / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def bootstrap_kappa(pairs: list[tuple[str, str]], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    if not pairs:
        return math.nan, math.nan
    rng = random.Random(seed)
    values = sorted(kappa([rng.choice(pairs) for _ in pairs]) for _ in range(rounds))
    values = [v for v in values if not math.isnan(v)]
    return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]


def compare(first: list[dict[str, str]], second: list[dict[str, str]]) -> str:
    by_image = {r["image"]: r for r in first}
    common = [(by_image[r["image"]], r) for r in second if r["image"] in by_image]
    out = [
        f"photos in both passes: {len(common)}",
        "| attribute | decided by both | agree | agreement (95% CI) | kappa (95% CI) | positives 1st / 2nd |"
        " `?` 1st / 2nd |",
        "|---|---|---|---|---|---|---|",
    ]
    for attr in ATTRS.values():
        pairs = [(a[attr], b[attr]) for a, b in common if "?" not in (a[attr], b[attr])]
        agree = sum(a == b for a, b in pairs)
        lo, hi = wilson(agree, len(pairs))
        klo, khi = bootstrap_kappa(pairs)
        pos = f"{sum(a == '1' for a, _ in pairs)} / {sum(b == '1' for _, b in pairs)}"
        unk = f"{sum(a[attr] == '?' for a, _ in common)} / {sum(b[attr] == '?' for _, b in common)}"
        share = agree / len(pairs) if pairs else math.nan
        out.append(
            f"| {attr} | {len(pairs)} | {agree} | {share:.3f} ({lo:.3f}-{hi:.3f}) "
            f"| {kappa(pairs):.2f} ({klo:.2f}-{khi:.2f}) | {pos} | {unk} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("subset", help="random rows, one per person, shuffled (list for a blind pass)")
    p.add_argument("--tsv", type=Path, required=True)
    p.add_argument("--n", type=int, default=120)
    p.add_argument("--seed", type=int, default=7)
    p = sub.add_parser("compare", help="agreement table between two passes")
    p.add_argument("--tsv", type=Path, required=True, help="first pass (the committed labels)")
    p.add_argument("--second", type=Path, required=True, help="second, blind pass")
    args = parser.parse_args(argv)
    if args.cmd == "subset":
        rng = random.Random(args.seed)
        one: dict[str, str] = {}
        for row in read_tsv(args.tsv):
            one.setdefault(row["image"].split("/")[0], row["image"])
        picks = rng.sample(sorted(one.values()), min(args.n, len(one)))
        print("\n".join(picks))
    else:
        print(compare(read_tsv(args.tsv), read_tsv(args.second)))


if __name__ == "__main__":
    main()
