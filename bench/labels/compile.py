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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", type=Path, required=True, dest="list_file")
    parser.add_argument("--notes", type=Path, required=True)
    parser.add_argument("--source", required=True, help="random or screen:<attr>")
    parser.add_argument("--upto", type=int, required=True, help="label lines 1..UPTO of the list")
    parser.add_argument("--tsv", type=Path, required=True, help="merged into: rows for other images are kept")
    args = parser.parse_args(argv)

    images = [line.strip() for line in args.list_file.read_text().splitlines() if line.strip()]
    new = rows(images, parse_notes(args.notes.read_text()), args.source, args.upto)
    kept: list[dict[str, str]] = []
    if args.tsv.exists():
        with args.tsv.open(newline="") as f:
            lines = [line for line in f if not line.startswith("#")]
        fresh = {r["image"] for r in new}
        kept = [r for r in csv.DictReader(lines, delimiter="\t") if r["image"] not in fresh]
    merged = sorted(kept + new, key=lambda r: r["image"])
    with args.tsv.open("w", newline="") as f:
        writer = csv.DictWriter(f, HEADER, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(merged)
    print(f"{args.tsv}: {len(merged)} rows ({len(new)} from {args.notes})")


if __name__ == "__main__":
    main()
