"""Decoding within a memory budget (issue 23, point 3): peak RSS growth of one decode, per image,
each in a fresh process, for this tree and another (``--peer DIR``: e.g. /work/main, whose .venv
runs its code), and decode time p50 on full-size photos from shared/faces.

    python bench/decode.py --peer /work/main [--photos 60]

The hostile images are made once under /work/cache/h-server/decode/ (small files, huge pixels).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path("/work/cache/h-server/decode")
FACES = ROOT.parent / "shared" / "faces"

# name -> (mode, size, format): the images and the largest of each kind the budget accepts.
IMAGES = {
    "rgba_8940x8940.png": ("RGBA", (8940, 8940), "PNG"),
    "rgba_7200x7200.png": ("RGBA", (7200, 7200), "PNG"),
    "rgba_6400x6400.png": ("RGBA", (6400, 6400), "PNG"),
    "rgb_6400x6400.png": ("RGB", (6400, 6400), "PNG"),
    "gray16_8940x8940.png": ("I;16", (8940, 8940), "PNG"),
    "rgb_80x999000.png": ("RGB", (80, 999000), "PNG"),
    "gray_80x999000.png": ("L", (80, 999000), "PNG"),
    "rgb_10000x8000.jpg": ("RGB", (10000, 8000), "JPEG"),
}

PROBE = r"""
import resource, sys, time, json
from facebank.engine.image import decode
from facebank.errors import RekognitionError
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    shape = list(decode(data).shape); error = None
except RekognitionError as exc:
    shape, error = None, exc.code
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (after - before) / 1024, "seconds": seconds, "shape": shape, "error": error}))
"""

TIMING = r"""
import sys, time, json
from facebank.engine.image import decode
paths = sys.argv[1:]
datas = [open(p, "rb").read() for p in paths]
for d in datas[:3]: decode(d)
times = []
for d in datas:
    start = time.perf_counter(); decode(d); times.append(time.perf_counter() - start)
times.sort()
p50, p90 = times[len(times) // 2], times[int(len(times) * 0.9)]
print(json.dumps({"n": len(times), "p50_ms": 1000 * p50, "p90_ms": 1000 * p90}))
"""


def make_images() -> None:
    from PIL import Image

    CACHE.mkdir(parents=True, exist_ok=True)
    for name, (mode, size, fmt) in IMAGES.items():
        path = CACHE / name
        if path.exists():
            continue
        colour = {"RGBA": (40, 80, 120, 128), "I;16": 40000, "RGB": (40, 80, 120), "L": 90}[mode]
        Image.new(mode, size, colour).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {"optimize": True}))


def python_of(tree: Path) -> str:
    venv = tree / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def run(tree: Path, code: str, *args: str) -> dict:
    out = subprocess.run(
        [python_of(tree), "-c", code, *args],
        cwd=tree,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )
    if out.returncode != 0:
        return {"failed": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", type=Path, default=None, help="another checkout to compare with")
    parser.add_argument("--photos", type=int, default=60, help="full-size photos timed (faces/*/ JPEGs)")
    args = parser.parse_args()
    make_images()
    trees = {"this": ROOT, **({"peer": args.peer} if args.peer else {})}
    print("peak RSS growth of one decode (fresh process each), MB; seconds; result")
    for name in IMAGES:
        cells = []
        for label, tree in trees.items():
            r = run(tree, PROBE, str(CACHE / name))
            if "failed" in r:
                cells.append(f"{label}: failed {r['failed']}")
            else:
                what = r["error"] or "x".join(map(str, r["shape"]))
                cells.append(f"{label}: {r['growth_mb']:7.0f} MB {r['seconds']:6.2f} s {what}")
        print(f"{name:24s} " + " | ".join(cells))
    photos = sorted(p for p in FACES.rglob("*.jp*g") if "lfw" not in p.parts)
    photos = sorted(photos, key=lambda p: -p.stat().st_size)[: args.photos]
    if photos:
        print(f"decode time on the {len(photos)} largest photos of {FACES} (not LFW):")
        for label, tree in trees.items():
            print(f"  {label}: {run(tree, TIMING, *map(str, photos))}")


if __name__ == "__main__":
    main()
