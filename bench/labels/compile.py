"""Turn labelling notes into ``tests/data/lfw_attributes.tsv`` rows (issue 24).

A notes file goes with a list file (one ``<Name>/<Name>_<NNNN>.jpg`` per line, numbered from 1 as on the
sheets of ``bench/labels/sheets.py render``).  Each note line is ``<number> <code> ...``; a code is a letter
(``g`` eyeglasses, ``s`` sunglasses, ``b`` beard, ``m`` mustache, ``o`` face_occluded) meaning 1, ``?x``
meaning cannot tell, ``-x`` meaning 0 (to correct an earlier line after a closer look).  Later lines win.
Unnamed attributes are 0; ``s`` implies ``g``.  Lines from ``--upto`` onwards are left out (not yet labelled).

    python bench/labels/compile.py --list random.txt --notes notes/random.txt --source random --upto 192 \\
        --tsv tests/data/lfw_attributes.tsv
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

ATTRS = {"g": "eyeglasses", "s": "sunglasses", "b": "beard", "m": "mustache", "o": "face_occluded"}
HEADER = ["image", *ATTRS.values(), "source"]


def parse_notes(text: str) -> dict[int, dict[str, str]]:
    """Number -> {attribute: "1" | "0" | "?"} from note lines; later codes override earlier ones."""
    marks: dict[int, dict[str, str]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split()
        if not line:
            continue
        entry = marks.setdefault(int(line[0]), {})
        for code in line[1:]:
            value = {"?": "?", "-": "0"}.get(code[0], "1")
            letter = code[-1]
            if letter not in ATTRS or len(code) > 2 or (len(code) == 2 and code[0] not in "?-"):
                raise ValueError(f"bad code {code!r} in line {raw!r}")
            entry[ATTRS[letter]] = value
    return marks


def rows(images: list[str], marks: dict[int, dict[str, str]], source: str, upto: int) -> list[dict[str, str]]:
    out = []
    for number, image in enumerate(images[:upto], start=1):
        row = {"image": image, **dict.fromkeys(ATTRS.values(), "0"), "source": source}
        row.update(marks.get(number, {}))
        if row["sunglasses"] == "1":
            row["eyeglasses"] = "1"
        out.append(row)
    return out


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t"))


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion."""
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _people(rows: list[dict[str, str]], attr: str, value: str) -> tuple[int, int]:
    """Rows with ``attr == value`` and the distinct people among them."""
    hit = [r for r in rows if r[attr] == value]
    return len(hit), len({r["image"].split("/")[0] for r in hit})


def counts(table: list[dict[str, str]]) -> str:
    """Markdown table: per attribute, positives (distinct people), negatives, unknown; overall and random only."""
    out = [
        "| attribute | positives (people) | negatives (people) | `?` | random sample: positives / labelled (rate) |",
        "|---|---|---|---|---|",
    ]
    for attr in ATTRS.values():
        pos, neg, unk = (_people(table, attr, v) for v in "10?")
        rnd = [r for r in table if r["source"] == "random"]
        rpos, rlab = _people(rnd, attr, "1")[0], sum(r[attr] != "?" for r in rnd)
        lo, hi = wilson(rpos, rlab)
        rate = f"{rpos / rlab:.3f}, 95% CI {lo:.3f}-{hi:.3f}" if rlab else "-"
        out.append(f"| {attr} | {pos[0]} ({pos[1]}) | {neg[0]} ({neg[1]}) | {unk[0]} | {rpos} / {rlab} ({rate}) |")
    sources: dict[str, int] = {}
    for r in table:
        sources[r["source"]] = sources.get(r["source"], 0) + 1
    out.append("")
    out.append("rows per source: " + ", ".join(f"{k} {v}" for k, v in sorted(sources.items())))
    return "\n".join(out)


def amend(tsv: Path, list_file: Path, notes: Path) -> str:
    """Apply a review pass's codes to rows already in ``tsv`` (sources and unnamed attributes unchanged)."""
    table = read_tsv(tsv)
    by_image = {r["image"]: r for r in table}
    images = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    changed = []
    for number, codes in parse_notes(notes.read_text()).items():
        row = by_image[images[number - 1]]
        for attr, value in codes.items():
            if row[attr] != value:
                changed.append(f"{row['image']} {attr} {row[attr]}->{value}")
                row[attr] = value
        if row["sunglasses"] == "1":
            row["eyeglasses"] = "1"
    with tsv.open("w", newline="") as f:
        writer = csv.DictWriter(f, HEADER, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    return "\n".join([f"{tsv}: {len(changed)} labels changed", *changed])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tsv", type=Path, required=True, help="merged into: rows for other images are kept")
    parser.add_argument("--counts", action="store_true", help="only print counts per attribute and source")
    parser.add_argument(
        "--amend", action="store_true", help="review pass: apply the notes' codes to existing rows, keep the rest"
    )
    parser.add_argument("--list", type=Path, dest="list_file")
    parser.add_argument("--notes", type=Path)
    parser.add_argument("--source", help="random, screen:<attr>, or screen (attribute letter in the list column 2)")
    parser.add_argument("--upto", type=int, help="label lines 1..UPTO of the list (default: all)")
    args = parser.parse_args(argv)
    if args.counts:
        print(counts(read_tsv(args.tsv)))
        return
    if args.amend:
        if not (args.list_file and args.notes):
            parser.error("--amend needs --list and --notes")
        print(amend(args.tsv, args.list_file, args.notes))
        return
    if not (args.list_file and args.notes and args.source):
        parser.error("--list, --notes and --source are needed unless --counts or --amend")

    lines = [line.split() for line in args.list_file.read_text().splitlines() if line.strip()]
    images = [line[0] for line in lines]
    new = rows(images, parse_notes(args.notes.read_text()), args.source, args.upto or len(images))
    if args.source == "screen":  # list lines "<image> <code>": the attribute the photo was screened for
        for row, line in zip(new, lines, strict=False):
            row["source"] = f"screen:{ATTRS[line[1][0]]}"
    unique: dict[str, dict[str, str]] = {}
    for row in new:  # a photo listed twice (two screens flagged it) must have been labelled the same
        if unique.setdefault(row["image"], row) != row:
            raise SystemExit(f"{row['image']}: listed twice with different labels")
    new = list(unique.values())
    fresh = set(unique)
    kept = [r for r in read_tsv(args.tsv) if r["image"] not in fresh] if args.tsv.exists() else []
    merged = sorted(kept + new, key=lambda r: r["image"])
    with args.tsv.open("w", newline="") as f:
        writer = csv.DictWriter(f, HEADER, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(merged)
    print(f"{args.tsv}: {len(merged)} rows ({len(new)} from {args.notes})")


if __name__ == "__main__":
    main()
