"""Small faces in big photos, measured on LFW: the detector's second pass (issue 21, Amazon's
collections demo) against the first pass alone, in the same run.

    python bench/small_faces.py [--folds 2] [--width 2560] [--face 45] [--cache DIR]

Each photo of LFW's pairs.tsv folds 1..N is cut to head and shoulders around its central face,
scaled so that face is about ``--face`` px wide (LFW's 150 px photos have faces 50-67 px wide: scaled
by face/60), and set on a ``--width`` x 2/3 daylight landscape (faces/nonfaces), at a place that
moves from photo to photo; the JPEG (quality 90) then goes through ``FaceEngine.detect`` as the
API runs it, with the detector as served and with its first pass only (the image scaled to 960 px,
as before). Per variant: the share of photos whose face is found (a face whose box centre lies in
the pasted patch), the share QualityFilter AUTO refuses (and why), and LFW's verification accuracy
on the pairs of those folds (threshold from the other folds; a pair with a face not found counts as
"different", a refused face is still compared), beside the same pairs at full size (bench/lfw.py's
faces, from its cache or computed into it). Per-photo results are cached in ``--cache``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("FACEBANK_ORT_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from common import load_engine, shared_dir
from lfw import choose, extract, pack_vectors, read_pairs, ten_fold
from PIL import Image, ImageFilter

from facebank.engine import detector
from facebank.engine.image import decode
from facebank.operations.quality import quality_reasons

CROP = (33, 27, 117, 129)  # head and shoulders of LFW's central face in its 150 x 150 photo
LFW_FACE_PX = 60  # the pipeline's box width of an LFW face, typically (50-67)
VARIANTS = ("served", "first pass only")


def surrogate(photo: Path, background: Image.Image, index: int, face_px: float) -> bytes:
    """The LFW photo's central face at about ``face_px`` wide on the background; returns the JPEG
    and leaves the patch's box in ``surrogate.box``."""
    scale = face_px / LFW_FACE_PX
    size = (round((CROP[2] - CROP[0]) * scale), round((CROP[3] - CROP[1]) * scale))
    mask = Image.new("L", size, 0)
    mask.paste(255, (3, 3, size[0] - 3, size[1] - 3))
    mask = mask.filter(ImageFilter.GaussianBlur(2))
    image = background.copy()
    w, h = image.size
    x = int((0.1 + 0.8 * ((index * 0.618) % 1)) * (w - size[0]))
    y = int((0.2 + 0.6 * ((index * 0.382) % 1)) * (h - size[1]))
    patch = Image.open(photo).convert("RGB").crop(CROP).resize(size, Image.Resampling.LANCZOS)
    image.paste(patch, (x, y), mask)
    surrogate.box = (x, y, x + size[0], y + size[1])  # type: ignore[attr-defined]
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def measure(photos: list[Path], args) -> dict[str, dict[str, np.ndarray]]:
    """Per variant: found (bool), refused (bool), reasons (str), width (px), vector (P x 128); cached."""
    key = hashlib.sha256(f"{args.width} {args.face}\n".encode() + "\n".join(map(str, photos)).encode()).hexdigest()
    path = args.cache / f"small-faces-{key[:16]}.npz"
    if path.exists():
        with np.load(path) as data:
            return {v: {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith(v + ":")} for v in VARIANTS}
    engine = load_engine("open")
    served = detector.FaceDetector.detect
    first_only = lambda self, rgb: self._detect_at(rgb, detector.DETECT_LONG_SIDE)  # noqa: E731
    background = Image.open(shared_dir() / "faces" / "nonfaces" / "immich_tanners_ridge.jpg").convert("RGB")
    background = background.resize((args.width, args.width * 2 // 3), Image.Resampling.LANCZOS)
    out = {v: {"found": [], "refused": [], "reasons": [], "width": [], "vector": [], "ms": []} for v in VARIANTS}
    began = time.monotonic()
    for i, photo in enumerate(photos):
        rgb = decode(surrogate(photo, background, i, args.face))
        x1, y1, x2, y2 = surrogate.box  # type: ignore[attr-defined]
        for variant, method in zip(VARIANTS, (served, first_only), strict=True):
            detector.FaceDetector.detect = method  # type: ignore[method-assign]
            t0 = time.process_time()
            faces = engine.detect(rgb)
            ms = 1000 * (time.process_time() - t0)
            inside = [
                f for f in faces if x1 <= (f.box[0] + f.box[2]) / 2 <= x2 and y1 <= (f.box[1] + f.box[3]) / 2 <= y2
            ]
            o = out[variant]
            o["ms"].append(ms)
            if inside:
                face = inside[0]  # largest first
                why = [r for r in quality_reasons(face, "AUTO") if r != "LOW_FACE_QUALITY"]
                o["found"].append(True)
                o["refused"].append(bool(why))
                o["reasons"].append(",".join(why))
                o["width"].append(float(face.box[2] - face.box[0]))
                o["vector"].append(engine.embed(rgb, face))
            else:
                o["found"].append(False)
                o["refused"].append(False)
                o["reasons"].append("")
                o["width"].append(0.0)
                o["vector"].append(np.zeros(128, np.float32))
        detector.FaceDetector.detect = served  # type: ignore[method-assign]
        if (i + 1) % 100 == 0:
            print(f"  {i + 1} of {len(photos)} photos in {time.monotonic() - began:.0f} s", flush=True)
    arrays = {f"{v}:{k}": np.array(val) for v, o in out.items() for k, val in o.items()}
    args.cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return {v: {k: np.array(val) for k, val in o.items()} for v, o in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=2, help="pairs.tsv folds 1..N (default 2)")
    parser.add_argument("--width", type=int, default=2560, help="surrogate photo width in px (default 2560)")
    parser.add_argument("--face", type=float, default=45.0, help="face width in px (default 45)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/facebank-lfw"), help="cache directory")
    args = parser.parse_args()

    lfw = shared_dir() / "faces" / "lfw"
    if not (lfw / "pairs.tsv").exists():
        raise SystemExit(f"no {lfw / 'pairs.tsv'}: set FACEBANK_SHARED to the shared data directory")
    photos, _, groups, pairs = read_pairs(lfw, args.folds, None)
    print(
        f"LFW pairs.tsv folds 1-{args.folds}: {len(pairs.same)} pairs, {len(photos)} photos, each face ~{args.face:.0f}"
        f" px on a {args.width} x {args.width * 2 // 3} photo (detection's first pass sees it at"
        f" ~{args.face * detector.DETECT_LONG_SIDE / args.width:.0f} px)"
    )
    results = measure(photos, args)
    print(f"\n{'detector':16s} {'found':>14s} {'AUTO refused':>14s} {'accuracy':>16s} {'ms/photo':>9s}  reasons")
    for variant, r in results.items():
        found, refused = r["found"].astype(bool), r["refused"].astype(bool)
        va, vb = r["vector"][pairs.a], r["vector"][pairs.b]
        ok = found[pairs.a] & found[pairs.b]
        mean, se, right = ten_fold(np.where(ok, (va * vb).sum(1), -np.inf), pairs)
        reasons = Counter(x for s in r["reasons"] for x in str(s).split(",") if x)
        print(
            f"{variant:16s} {int(found.sum()):5d} ({100 * found.mean():5.1f} %) {int(refused.sum()):5d}"
            f" ({100 * refused.sum() / max(1, found.sum()):4.1f} %) {100 * mean:8.2f} ± {100 * se:4.2f}"
            f" {np.median(r['ms']):9.0f}  " + ", ".join(f"{k} {v}" for k, v in reasons.most_common())
        )
        kept = ok & ~refused[pairs.a] & ~refused[pairs.b]
        if (ok & ~kept).any():
            print(
                f"{'':16s} pairs with both faces kept: {100 * right[kept].mean():.2f} % of {int(kept.sum())};"
                f" with a refused face: {100 * right[ok & ~kept].mean():.2f} % of {int((ok & ~kept).sum())}"
            )
    faces = extract(photos, "packs", args.cache, ["dlib-resnet", "mobilefacenet"], groups=groups)
    chosen = choose(faces, "visible*share", len(photos))
    v = pack_vectors(faces, "open")[np.maximum(chosen, 0)]
    mean, se, _ = ten_fold((v[pairs.a] * v[pairs.b]).sum(1), pairs)
    print(f"{'full size (150 px photo, API face)':34s} {100 * mean:8.2f} ± {100 * se:4.2f}")


if __name__ == "__main__":
    main()
