"""Numbered contact sheets of LFW centre crops, for labelling attributes by eye (issue 24).

The sheets show pictures and numbers only, never labels, so a second labeller can label any list blind.
Images are written outside the repository (default ``/work/cache/l-labels``); never commit them.

    python bench/labels/sheets.py sample --n 700 --seed 24 > random.txt   # one photo per person
    python bench/labels/sheets.py render --list random.txt --out DIR --name random
    python bench/labels/sheets.py rank-dark > sunglasses.txt             # darkest eye band first
    python bench/labels/sheets.py persons --exclude random.txt > rest.txt  # one photo per other person
    python bench/labels/sheets.py persons --skip random.txt --skip rest.txt --seed 25  # another photo each

``render`` numbers crops 1..N in list order across sheets (sheet k holds numbers (k-1)*rows*cols+1 ...),
so a note "37 g b" on a sheet refers to line 37 of the list.  Lists hold ``<Name>/<Name>_<NNNN>.jpg`` lines.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LFW = Path(__file__).resolve().parents[2].parent / "shared" / "faces" / "lfw"


def all_images(root: Path) -> list[str]:
    """Every LFW photo as ``<Name>/<file>``, sorted."""
    return sorted(f"{p.parent.name}/{p.name}" for p in root.glob("*/*.jpg"))


def one_per_person(images: Iterable[str], rng: random.Random) -> list[str]:
    """One photo per person, picked with ``rng``, people in sorted order."""
    by_person: dict[str, list[str]] = {}
    for image in images:
        by_person.setdefault(image.split("/")[0], []).append(image)
    return [rng.choice(sorted(by_person[name])) for name in sorted(by_person)]


def sample(root: Path, n: int, seed: int) -> list[str]:
    """``n`` people drawn with ``seed``, one photo each (identity-diverse random sample)."""
    rng = random.Random(seed)
    picks = one_per_person(all_images(root), rng)
    return sorted(rng.sample(picks, n))


def centre_crop(path: Path, crop: int) -> Image.Image:
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        left, top = (w - crop) // 2, (h - crop) // 2
        return im.crop((left, top, left + crop, top + crop))


def render(
    root: Path, images: list[str], out: Path, name: str, cols: int, rows: int, cell: int, crop: int
) -> list[Path]:
    """Write numbered sheets ``<name>_NNN.png`` to ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    font = ImageFont.load_default(size=max(12, cell // 8))
    per = cols * rows
    written = []
    for start in range(0, len(images), per):
        sheet = Image.new("RGB", (cols * cell, rows * cell), "white")
        draw = ImageDraw.Draw(sheet)
        for k, image in enumerate(images[start : start + per]):
            x, y = (k % cols) * cell, (k // cols) * cell
            tile = centre_crop(root / image, crop).resize((cell - 2, cell - 2), Image.Resampling.LANCZOS)
            sheet.paste(tile, (x + 1, y + 1))
            label = str(start + k + 1)
            box = draw.textbbox((x + 2, y + 2), label, font=font)
            draw.rectangle(box, fill="yellow")
            draw.text((x + 2, y + 2), label, fill="black", font=font)
        path = out / f"{name}_{start // per + 1:03d}.png"
        sheet.save(path)
        written.append(path)
    return written


def eye_band_darkness(path: Path) -> float:
    """Eye band brightness relative to the cheeks (lower: darker lenses) on the aligned LFW layout."""
    with Image.open(path) as im:
        grey = np.asarray(im.convert("L"), dtype=np.float32)
    eyes = grey[105:125, 90:160]
    cheeks = grey[135:160, 95:155]
    return float(np.median(eyes) / (np.median(cheeks) + 1.0))


def read_list(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=LFW, help="LFW root (default: %(default)s)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sample", help="one photo per person for N random people")
    p.add_argument("--n", type=int, default=700)
    p.add_argument("--seed", type=int, default=24)
    p = sub.add_parser("persons", help="one photo per person, people not in --exclude lists")
    p.add_argument("--exclude", type=Path, action="append", default=[], help="skip the people in this list")
    p.add_argument("--skip", type=Path, action="append", default=[], help="skip the photos in this list/TSV")
    p.add_argument("--seed", type=int, default=24)
    p = sub.add_parser("rank-dark", help="all photos, darkest eye band first (sunglasses screen)")
    p.add_argument("--top", type=int, default=300)
    p.add_argument("--per-person", type=int, default=2, help="at most this many photos of one person")
    p = sub.add_parser("render", help="numbered contact sheets of a list, without labels")
    p.add_argument("--list", type=Path, required=True, dest="list_file")
    p.add_argument("--out", type=Path, default=Path("/work/cache/l-labels"))
    p.add_argument("--name", default="sheet")
    p.add_argument("--cols", type=int, default=6)
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cell", type=int, default=180, help="pixels per crop on the sheet")
    p.add_argument("--crop", type=int, default=150, help="central square taken from the 250x250 photo")
    args = parser.parse_args(argv)

    if args.cmd == "sample":
        print("\n".join(sample(args.lfw, args.n, args.seed)))
    elif args.cmd == "persons":
        excluded = {image.split("/")[0] for f in args.exclude for image in read_list(f)}
        skipped = {image for f in args.skip for image in read_list(f)}
        images = [i for i in all_images(args.lfw) if i.split("/")[0] not in excluded and i not in skipped]
        print("\n".join(one_per_person(images, random.Random(args.seed))))
    elif args.cmd == "rank-dark":
        scored = sorted((eye_band_darkness(args.lfw / i), i) for i in all_images(args.lfw))
        taken: dict[str, int] = {}
        picks = []
        for _, image in scored:
            person = image.split("/")[0]
            if taken.get(person, 0) < args.per_person:
                taken[person] = taken.get(person, 0) + 1
                picks.append(image)
            if len(picks) == args.top:
                break
        print("\n".join(picks))
    else:
        for path in render(
            args.lfw, read_list(args.list_file), args.out, args.name, args.cols, args.rows, args.cell, args.crop
        ):
            print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
