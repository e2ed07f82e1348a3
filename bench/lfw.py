"""LFW verification, the standard 10-fold way, for every pack beside face_recognition in the same run.

    python bench/lfw.py [--packs open,fused,mobile] [--no-peer] [--folds 10] [--limit N]
                        [--cache DIR] [--variants api,...] [--rules visible,largest,central]
                        [--no-all-pairs] [--dev]

Data: ``$FACEBANK_SHARED/faces/lfw`` (default ``../shared``): the original 250x250 LFW photos and
``pairs.tsv``, LFW's ``pairs.txt`` less the pairs of 51 people kept out (5,782 of 6,000 pairs), so
figures are on that subset. Protocol (LFW's "unrestricted, labelled outside data" reporting): for
each of the ten folds the threshold that maximises accuracy on the other nine folds is applied to
it; the figure is the mean over the folds and its standard error (sd / sqrt(10)). A pair where a
pipeline finds no face in either photo counts as "different" (it cannot match).

Every photo is decoded and run through the detector once; every face found is embedded (each
recogniser of the packs asked for, and the peer's own HOG detector + ResNet), and the faces are
cached per variant in ``--cache`` (default ``/tmp/facebank-lfw``), so the face-choice rules
(``RULES``: which face of a photo is used) cost nothing more to compare, and a second run loads no
model. ``visible*share`` is what the API uses (``facebank.engine.Face.prominence``: the visible box
area times the visible share of the box); ``largest`` what it used before issue 21; ``central`` is
the face nearest the photo's centre, the one LFW labels.

Also TAR at FAR 1e-3 and 1e-4 over all pairs of the photos of the chosen folds (every
same-person pair genuine, every cross-identity pair impostor: ~27 million for all ten folds),
thresholds counted, not extrapolated. ``--dev`` adds the same all-pairs figures on
``faces/dev`` (228 photos of 34 people), the second set a pipeline change must gain on.
Pipeline variants (``VARIANTS``) are the ablations of docs/models.md: they re-embed the faces with
another landmark source, box or chip; ``api`` is the engine as served.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("FACEBANK_ORT_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from common import dev_images, load_engine, shared_dir

from facebank.engine.image import decode
from facebank.engine.packs import PACKS

PEER = "face_recognition"
CHUNK = 250  # photos per cache file


@dataclass
class Faces:
    """Every face found in a list of photos, flat: face i belongs to photo ``photo[i]``."""

    photo: np.ndarray  # F, index into the photo list
    box: np.ndarray  # F x 4, x1 y1 x2 y2 in pixels (may run outside the photo)
    score: np.ndarray  # F, detection score
    size: np.ndarray  # P x 2, photo height and width
    vectors: dict[str, np.ndarray]  # recogniser kind -> F x d


# ---------------------------------------------------------------- which face of a photo is used


def _visible(box: np.ndarray, size: np.ndarray) -> np.ndarray:
    h, w = size[:, 0], size[:, 1]
    x1, y1 = np.clip(box[:, 0], 0, w), np.clip(box[:, 1], 0, h)
    x2, y2 = np.clip(box[:, 2], 0, w), np.clip(box[:, 3], 0, h)
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)


def _centre_distance(box: np.ndarray, size: np.ndarray) -> np.ndarray:
    centre = (box[:, :2] + box[:, 2:]) / 2
    return np.hypot(*(centre - size[:, ::-1] / 2).T)


# rule -> key per face (higher wins), from the face boxes, scores and their photos' sizes
RULES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "largest": lambda box, score, size: np.prod(box[:, 2:] - box[:, :2], 1),  # the API before issue 21
    "visible": lambda box, score, size: _visible(box, size),  # the box clipped to the photo
    "visible*conf": lambda box, score, size: _visible(box, size) * score,
    # the visible area times the share of the box that is visible: a face cut by the edge counts less
    # (the API now: facebank.engine.Face.prominence)
    "visible*share": lambda box, score, size: _visible(box, size) ** 2 / np.prod(box[:, 2:] - box[:, :2], 1),
    "central": lambda box, score, size: -_centre_distance(box, size),  # LFW's labelled face
}


def choose(faces: Faces, rule: str, photos: int) -> np.ndarray:
    """Index of the chosen face of each photo, -1 where none was found."""
    key = RULES[rule](faces.box, faces.score, faces.size[faces.photo])
    chosen = np.full(photos, -1)
    best = np.full(photos, -np.inf)
    for i in np.argsort(key, kind="stable"):  # ascending: the highest key of a photo is written last
        p = faces.photo[i]
        chosen[p], best[p] = i, key[i]
    return chosen


# ---------------------------------------------------------------- embedding, cached


def _peer_faces(rgb: np.ndarray) -> list[tuple[np.ndarray, float, dict[str, np.ndarray]]]:
    """face_recognition's default pipeline: HOG detector (1 upsample), 5 points, dlib ResNet."""
    import face_recognition

    boxes = face_recognition.face_locations(rgb)  # (top, right, bottom, left)
    vectors = face_recognition.face_encodings(rgb, boxes)
    return [(np.array([b[3], b[0], b[1], b[2]], float), 1.0, {PEER: v}) for b, v in zip(boxes, vectors, strict=True)]


def _pack_faces(variant: str, kinds: list[str]) -> Callable:
    engine = load_engine("fused" if len(kinds) > 1 else ("open" if kinds == ["dlib-resnet"] else "mobile"))
    by_kind = {type(r).__name__: r for r, _ in engine.recognizers}
    embed_dlib = VARIANTS[variant]

    def faces(rgb: np.ndarray) -> list[tuple[np.ndarray, float, dict[str, np.ndarray]]]:
        out = []
        for face in engine.detector.detect(rgb):  # every face, as FaceEngine.detect finds them (no Pose)
            vectors = {}
            if "dlib-resnet" in kinds:
                vectors["dlib-resnet"] = embed_dlib(by_kind["DlibResNet"], rgb, face)
            if "mobilefacenet" in kinds:
                vectors["mobilefacenet"] = by_kind["MobileFaceNet"].embed(rgb, face.landmarks)
            out.append((face.box.astype(float), face.score, vectors))
        return out

    return faces


QUALITY = "quality"  # source: the API's own face (FaceEngine.detect) with what QualityFilter reads
QUALITY_FIELDS = ("Confidence", "Sharpness", "Brightness", "Roll", "Yaw", "Pitch")


def _quality_faces(rgb: np.ndarray) -> list[tuple[np.ndarray, float, dict[str, np.ndarray]]]:
    engine = load_engine("open")
    faces = engine.detect(rgb, max_faces=1)
    return [
        (
            f.box.astype(float),
            f.confidence / 100,
            {QUALITY: np.array([f.confidence, *f.quality.values(), *f.pose.values()])},
        )
        for f in faces
    ]


def _api(model, rgb: np.ndarray, face) -> np.ndarray:
    return model.embed(rgb, face.landmarks)


def _no_flip(model, rgb: np.ndarray, face) -> np.ndarray:
    return model.postprocess(model.infer(model.preprocess(rgb, face.landmarks)[:1]))


def _template(model, rgb: np.ndarray, face) -> np.ndarray:
    """The chip from YuNet's own five points mapped onto dlib's frame (no shape predictor)."""
    from facebank.engine.dlib_align import face_chip_from_eye_nose_mouth

    blob = face_chip_from_eye_nose_mouth(rgb, face.landmarks).astype(np.float32).transpose(2, 0, 1)
    return model.postprocess(model.infer(np.stack([blob, blob[:, :, ::-1]])))


def _yunet_box(model, rgb: np.ndarray, face) -> np.ndarray:
    """The shape predictor started from YuNet's box made square (not the box placed from its points)."""
    from facebank.engine.dlib_align import face_chip

    centre, side = (face.box[:2] + face.box[2:]) / 2, float(np.max(face.box[2:] - face.box[:2]))
    points = model.shapes(rgb, np.concatenate([centre - side / 2, centre + side / 2]))
    blob = face_chip(rgb, points).astype(np.float32).transpose(2, 0, 1)
    return model.postprocess(model.infer(np.stack([blob, blob[:, :, ::-1]])))


def _flip_pair(model, chip: np.ndarray) -> np.ndarray:
    blob = chip.astype(np.float32).transpose(2, 0, 1)
    return model.postprocess(model.infer(np.stack([blob, blob[:, :, ::-1]])))


def _sp_twice(model, rgb: np.ndarray, face) -> np.ndarray:
    """The shape predictor run a second time, from the start box its own five points place (the
    HOG box's centre and side in the chip frame, fitted to dlib's template instead of YuNet's)."""
    from facebank.engine.dlib_align import DLIB5_TEMPLATE, face_chip, similarity_transform
    from facebank.engine.dlib_shape import HOG_BOX_CENTRE, HOG_BOX_SIDE

    points = model.shapes.from_eye_nose_mouth(rgb, face.landmarks)
    m, t = similarity_transform(DLIB5_TEMPLATE, points)
    centre, side = m @ HOG_BOX_CENTRE + t, np.hypot(*m[:, 0]) * HOG_BOX_SIDE
    points = model.shapes(rgb, np.concatenate([centre - side / 2, centre + side / 2]))
    return _flip_pair(model, face_chip(rgb, points))


def _padding(padding: float) -> Callable:
    """The chip's scale: dlib's padding around the face square (0.25 as trained)."""

    def embed(model, rgb: np.ndarray, face) -> np.ndarray:
        from facebank.engine.dlib_align import face_chip

        return _flip_pair(model, face_chip(rgb, model.shapes.from_eye_nose_mouth(rgb, face.landmarks), padding=padding))

    return embed


def _bicubic(model, rgb: np.ndarray, face) -> np.ndarray:
    """The same chip frame sampled bicubically from the full image (no pyramid, no bilinear)."""
    from PIL import Image

    from facebank.engine.dlib_align import DLIB5_TEMPLATE, _template, similarity_transform

    points = model.shapes.from_eye_nose_mouth(rgb, face.landmarks)
    m, t = similarity_transform(_template(DLIB5_TEMPLATE, 150, 0.25), points)  # chip -> image
    coefficients = (m[0, 0], m[0, 1], t[0], m[1, 0], m[1, 1], t[1])
    chip = Image.fromarray(rgb).transform((150, 150), Image.Transform.AFFINE, coefficients, Image.Resampling.BICUBIC)
    return _flip_pair(model, np.asarray(chip))


def _tta_scales(model, rgb: np.ndarray, face) -> np.ndarray:
    """Test-time augmentation over the chip's scale: the flip-averaged vectors of chips at padding
    0.2, 0.25 and 0.3 averaged (three times the served inferences)."""
    from facebank.engine.dlib_align import face_chip

    points = model.shapes.from_eye_nose_mouth(rgb, face.landmarks)
    v = sum(_flip_pair(model, face_chip(rgb, points, padding=p)) for p in (0.2, 0.25, 0.3))
    return (v / np.linalg.norm(v)).astype(np.float32)


# variant -> how the dlib ResNet's vector of a detected face is made (MobileFaceNet's is the API's)
VARIANTS: dict[str, Callable] = {
    "api": _api,
    "no-flip": _no_flip,
    "template": _template,
    "yunet-box": _yunet_box,
    "sp-twice": _sp_twice,
    "padding-0.2": _padding(0.2),
    "padding-0.3": _padding(0.3),
    "bicubic": _bicubic,
    "tta-scales": _tta_scales,
}


def _chunks(photos: list[Path], groups: list[int] | None) -> list[tuple[int, int]]:
    """(start, end) of cache chunks: at most CHUNK photos, never across a group (the fold a photo
    first appears in), so the photos of fewer folds reuse the chunks of more."""
    groups = groups or [0] * len(photos)
    out, start = [], 0
    for end in range(1, len(photos) + 1):
        if end == len(photos) or groups[end] != groups[start] or end - start == CHUNK:
            out.append((start, end))
            start = end
    return out


def extract(
    photos: list[Path],
    source: str,
    cache: Path,
    kinds: list[str],
    variant: str = "api",
    groups: list[int] | None = None,
) -> Faces:
    """Every face of every photo from ``source`` (the packs' recognisers or the peer), cached in chunks."""
    tag = source if source in (PEER, QUALITY) else f"{variant}-{'+'.join(sorted(kinds))}"
    cache.mkdir(parents=True, exist_ok=True)
    embed: Callable | None = None
    parts = []
    for start, end in _chunks(photos, groups):
        chunk = photos[start:end]
        digest = hashlib.sha256("\n".join(str(p) for p in chunk).encode()).hexdigest()[:16]
        path = cache / f"{tag}-{digest}.npz"
        if not path.exists():
            if embed is None:
                embed = {PEER: _peer_faces, QUALITY: _quality_faces}.get(source) or _pack_faces(variant, kinds)
            began = time.monotonic()
            rows, sizes = [], []
            for i, photo in enumerate(chunk):
                rgb = decode(photo.read_bytes())
                sizes.append(rgb.shape[:2])
                rows.extend((i, *face) for face in embed(rgb))
            names = sorted({k for r in rows for k in r[3]}) or ([source] if source in (PEER, QUALITY) else kinds)
            arrays = {
                f"vector:{k}": np.array([r[3][k] for r in rows], np.float32).reshape(len(rows), -1) for k in names
            }
            tmp = path.with_suffix(".tmp.npz")
            np.savez(
                tmp,
                photo=np.array([r[0] for r in rows], int),
                box=np.array([r[1] for r in rows], float).reshape(-1, 4),
                score=np.array([r[2] for r in rows], float),
                size=np.array(sizes, int),
                **arrays,
            )
            tmp.rename(path)
            print(f"  {tag}: photos {start}-{start + len(chunk)} in {time.monotonic() - began:.0f} s", flush=True)
        with np.load(path) as data:
            parts.append(({k: data[k] for k in data.files}, start))
    return Faces(
        photo=np.concatenate([d["photo"] + start for d, start in parts]).astype(int),
        box=np.concatenate([d["box"] for d, _ in parts]),
        score=np.concatenate([d["score"] for d, _ in parts]),
        size=np.concatenate([d["size"] for d, _ in parts]),
        vectors={
            k.split(":", 1)[1]: np.concatenate([d[k] for d, _ in parts]) for k in parts[0][0] if k.startswith("vector:")
        },
    )


def pack_vectors(faces: Faces, name: str) -> np.ndarray:
    """The pack's vector of every face: per-model unit vectors scaled by sqrt(weight), concatenated."""
    parts = [np.sqrt(r.weight) * faces.vectors[r.kind] for r in PACKS[name].recognizers]
    v = np.concatenate(parts, 1)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ---------------------------------------------------------------- protocol


@dataclass(frozen=True)
class Pairs:
    fold: np.ndarray
    a: np.ndarray  # photo indices
    b: np.ndarray
    same: np.ndarray


def read_pairs(lfw: Path, folds: int, limit: int | None) -> tuple[list[Path], list[str], list[int], Pairs]:
    """Photos of the first ``folds`` folds (ordered by first fold, so fewer folds reuse the cache)."""
    with open(lfw / "pairs.tsv") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if int(r["fold"]) <= folds]
    if limit:
        rows = [r for fold in range(1, folds + 1) for r in [r for r in rows if int(r["fold"]) == fold][:limit]]
    index: dict[tuple[str, str], int] = {}
    first_fold: list[int] = []
    for r in rows:
        for n in ("1", "2"):
            if (r[f"name{n}"], r[f"image{n}"]) not in index:
                index[r[f"name{n}"], r[f"image{n}"]] = len(index)
                first_fold.append(int(r["fold"]))
    photos = [lfw / name / image for name, image in index]
    pairs = Pairs(
        np.array([int(r["fold"]) for r in rows]),
        np.array([index[r["name1"], r["image1"]] for r in rows]),
        np.array([index[r["name2"], r["image2"]] for r in rows]),
        np.array([r["same"] == "1" for r in rows]),
    )
    return photos, [name for name, _ in index], first_fold, pairs


def pair_scores(vectors: np.ndarray, chosen: np.ndarray, pairs: Pairs, euclidean: bool) -> np.ndarray:
    """Score of each pair (higher = more alike), -inf where a photo has no face."""
    va, vb = vectors[np.maximum(chosen[pairs.a], 0)], vectors[np.maximum(chosen[pairs.b], 0)]
    s = -np.linalg.norm(va - vb, axis=1) if euclidean else (va * vb).sum(1)
    return np.where((chosen[pairs.a] >= 0) & (chosen[pairs.b] >= 0), s, -np.inf)


def _best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold (midway between neighbouring scores) that maximises accuracy; >= means same."""
    finite = np.unique(scores[np.isfinite(scores)])
    candidates = np.concatenate([[finite[0] - 1], (finite[1:] + finite[:-1]) / 2, [finite[-1] + 1]])
    genuine, impostor = np.sort(scores[same]), np.sort(scores[~same])
    right = genuine.size - np.searchsorted(genuine, candidates) + np.searchsorted(impostor, candidates)
    return float(candidates[int(np.argmax(right))])


def ten_fold(scores: np.ndarray, pairs: Pairs) -> tuple[float, float, np.ndarray]:
    """Mean accuracy over folds (threshold from the other folds; in sample with one fold), its
    standard error, and whether each pair was decided right."""
    folds = np.unique(pairs.fold)
    right = np.zeros(len(scores), bool)
    accuracies = []
    for k in folds:
        test = pairs.fold == k
        train = ~test if len(folds) > 1 else test
        t = _best_threshold(scores[train], pairs.same[train])
        right[test] = (scores[test] >= t) == pairs.same[test]
        accuracies.append(float(right[test].mean()))
    a = np.array(accuracies)
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan"), right


def quality_table(quality: Faces, photos: int, right: np.ndarray, pairs: Pairs) -> str:
    """Per QualityFilter level: share of photos whose face it refuses (and why), and the accuracy of
    the pairs it keeps (both faces pass) against the pairs it refuses (``right``: the open pack's
    10-fold decisions with the API's face)."""
    from types import SimpleNamespace

    from facebank.operations.quality import BARS, quality_reasons

    chosen = choose(quality, "largest", photos)  # one face per photo: the API's own
    lines = [f"{'level':7s} {'refused':>16s} {'kept pairs: acc':>22s} {'refused pairs: acc':>25s}  reasons"]
    for level in [b for b in BARS if b != "NONE"]:
        refused, reasons = np.zeros(photos, bool), Counter()
        for p in np.flatnonzero(chosen >= 0):
            m = dict(zip(QUALITY_FIELDS, quality.vectors[QUALITY][chosen[p]], strict=True))
            face = SimpleNamespace(
                box=quality.box[chosen[p]],
                confidence=m["Confidence"],
                quality={"Sharpness": m["Sharpness"], "Brightness": m["Brightness"]},
                pose={"Roll": m["Roll"], "Yaw": m["Yaw"], "Pitch": m["Pitch"]},
            )
            why = quality_reasons(face, level)
            refused[p] = bool(why)
            reasons.update(r for r in why if r != "LOW_FACE_QUALITY")
        found = int((chosen >= 0).sum())
        kept_pairs = ~refused[pairs.a] & ~refused[pairs.b]
        n_ref = int(refused.sum())

        def acc(mask: np.ndarray) -> str:
            return f"{100 * right[mask].mean():6.2f} % of {int(mask.sum()):5d}" if mask.any() else f"{'-':>17s}"

        lines.append(
            f"{level:7s} {n_ref:5d} ({100 * n_ref / found:5.2f} %) {acc(kept_pairs):>22s} {acc(~kept_pairs):>25s}  "
            + ", ".join(f"{k} {v}" for k, v in reasons.most_common())
        )
    return "\n".join(lines)


def tar_at_far(vectors: np.ndarray, found: np.ndarray, labels: np.ndarray, fars: tuple[float, ...], euclidean: bool):
    """TAR at each FAR over all pairs of photos (a photo without a face: its genuine pairs are misses).

    The threshold at FAR f is the score of the ceil(f * impostors)-th highest impostor pair, counted."""
    _, ids = np.unique(labels, return_inverse=True)
    v = vectors.astype(np.float32)
    n = len(v)
    impostors = int((n * n - np.bincount(ids, minlength=ids.max() + 1).astype(np.int64).__pow__(2).sum()) // 2)
    keep = max(1, int(np.ceil(max(fars) * impostors)))
    top = np.empty(0, np.float32)
    genuine = []
    sq = (v * v).sum(1)
    for start in range(0, n, 512):
        block = v[start : start + 512]
        s = block @ v.T
        if euclidean:
            s = -np.sqrt(np.maximum(sq[start : start + 512, None] + sq[None] - 2 * s, 0))
        rows = np.arange(start, start + len(block))[:, None]
        upper = np.arange(n)[None] > rows
        valid = upper & found[rows] & found[None]
        same = ids[rows] == ids[None]
        genuine.append(np.where(found[rows] & found[None], s, -np.inf)[upper & same])
        imp = s[valid & ~same]
        top = np.concatenate([top, imp])
        if top.size > keep:
            top = np.partition(top, top.size - keep)[-keep:]
    gen = np.concatenate(genuine)
    top = np.sort(top)[::-1]
    out = {}
    for far in fars:
        k = max(1, int(np.ceil(far * impostors)))
        threshold = top[k - 1] if k <= top.size else -np.inf  # k impostors at or above: FAR <= far
        out[far] = float((gen > threshold).mean())
    return out, gen.size, impostors


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packs", default=",".join(PACKS), help="comma-separated pack names (default: all)")
    parser.add_argument("--no-peer", action="store_true", help=f"skip {PEER} (needs the bench extra)")
    parser.add_argument("--folds", type=int, default=10, help="use folds 1..N (default 10: the full protocol)")
    parser.add_argument("--limit", type=int, help="at most N pairs per fold (a quick look)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/facebank-lfw"), help="per-face cache directory")
    parser.add_argument("--variants", default="api", help=f"pipeline variants, of {','.join(VARIANTS)}")
    parser.add_argument("--rules", default="visible*share,largest,central", help=f"face choices, of {','.join(RULES)}")
    parser.add_argument("--no-all-pairs", action="store_true", help="skip TAR at FAR over all pairs")
    parser.add_argument("--dev", action="store_true", help="also all-pairs TAR on faces/dev")
    parser.add_argument("--quality", action="store_true", help="QualityFilter refusals on LFW (needs open)")
    args = parser.parse_args()

    lfw = shared_dir() / "faces" / "lfw"
    if not (lfw / "pairs.tsv").exists():
        raise SystemExit(f"no {lfw / 'pairs.tsv'}: set FACEBANK_SHARED to the shared data directory")
    photos, labels, groups, pairs = read_pairs(lfw, args.folds, args.limit)
    packs, rules = args.packs.split(",") if args.packs else [], args.rules.split(",")
    kinds = sorted({r.kind for p in packs for r in PACKS[p].recognizers})
    sets = [("LFW", photos, np.array(labels), groups)]
    if args.dev:
        dev = dev_images()
        sets.append(("faces/dev", [p for p, _ in dev], np.array([i for _, i in dev]), None))
    print(
        f"LFW pairs.tsv folds 1-{args.folds}: {len(pairs.same)} pairs ({int(pairs.same.sum())} same), "
        f"{len(photos)} photos of {len(set(labels))} people"
    )
    runs: list[tuple[str, str, str, Faces | None, bool]] = []  # (set, pipeline, variant, faces, euclidean)
    for set_name, set_photos, _, set_groups in sets:
        for variant in args.variants.split(",") if kinds else []:
            faces = extract(set_photos, "packs", args.cache, kinds, variant, set_groups)
            runs.append((set_name, "", variant, faces, False))
        if not args.no_peer:
            try:
                runs.append(
                    (set_name, PEER, "", extract(set_photos, PEER, args.cache, [PEER], groups=set_groups), True)
                )
            except ImportError:
                print(f"({PEER} not installed, no peer row: pip install -c constraints.txt -e '.[bench]')")
    api_right: np.ndarray | None = None  # open's per-pair decisions with the API's face (for --quality)
    header = f"{'pipeline':22s} {'face':13s} {'accuracy':>16s} {'no face':>7s}"
    if not args.no_all_pairs:
        header += f" {'TAR@1e-3':>9s} {'TAR@1e-4':>9s}"
    for set_name, set_photos, set_labels, _ in sets:
        print(f"\n{set_name}" + ("" if set_name == "LFW" else f": {len(set_photos)} photos"))
        print(header)
        for run_set, peer, variant, faces, euclidean in runs:
            if run_set != set_name or faces is None:
                continue
            for name in [peer] if peer else packs:
                vectors = faces.vectors[PEER] if peer else pack_vectors(faces, name)
                label = name if peer else f"{name} ({variant})" if variant != "api" else name
                for rule in rules if not peer else [r for r in rules if r != "visible*conf"]:
                    chosen = choose(faces, rule, len(set_photos))
                    line = f"{label:22s} {rule:13s}"
                    if set_name == "LFW":
                        mean, se, right = ten_fold(pair_scores(vectors, chosen, pairs, euclidean), pairs)
                        if (name, rule) == ("open", "visible*share"):
                            api_right = right
                        line += f" {100 * mean:8.2f} ± {100 * se:4.2f}"
                    else:
                        line += f" {'-':>16s}"
                    line += f" {int((chosen < 0).sum()):7d}"
                    if not args.no_all_pairs:
                        found = chosen >= 0
                        tar, _, _ = tar_at_far(
                            vectors[np.maximum(chosen, 0)], found, set_labels, (1e-3, 1e-4), euclidean
                        )
                        line += f" {tar[1e-3]:9.4f} {tar[1e-4]:9.4f}"
                    print(line, flush=True)
        if not args.no_all_pairs:
            gen = sum(int(n * (n - 1) // 2) for n in np.unique(set_labels, return_counts=True)[1])
            n = len(set_labels)
            print(f"(all pairs of the {n} photos: {gen} genuine, {n * (n - 1) // 2 - gen} impostor)")
    if args.quality:
        if api_right is None:
            raise SystemExit("--quality needs the open pack and the visible*share rule")
        quality = extract(photos, QUALITY, args.cache, [], groups=groups)
        print(f"\nQualityFilter on LFW: the API's face of each of {len(photos)} photos; pairs decided by open")
        print(quality_table(quality, len(photos), api_right, pairs))


if __name__ == "__main__":
    main()
