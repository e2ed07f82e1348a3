"""Eyeglasses, Sunglasses, Beard, Mustache and FaceOccluded: fit and measure the appearance heads on
hand-labelled LFW faces, scored on people the fit never saw.

    python bench/appearance.py                 # features (cached), per-attribute table, reliability table
    python bench/appearance.py --write         # also write facebank/engine/appearance_heads.json
    python bench/appearance.py --extract 3000  # features of 3000 more unlabelled LFW photos (candidates)
    python bench/appearance.py --candidates DIR  # ranked unlabelled photos likely positive, per attribute

Labels: tests/data/lfw_attributes.tsv (its header says how they were made): one row per LFW photo,
the face nearest the photo's centre, each attribute 1, 0 or ? (not scored). Features: the engine's own
``appearance.pixel_features`` (grey level and gradient at the 468 Face Mesh vertices and at rings
outside the face oval, at two scales), computed once per photo and kept in ``--cache`` (default
~/.cache/facebank/bench/appearance). Also kept, for the
comparison printed with ``--compare``: face-api's pooled features (AgeGenderNet 512, FaceExpressionNet
256), which serving could only give by changing those networks' files; ``--compare`` also scores the
variants of ``appearance_variants.py`` (the recogniser's vector, HOG and LBP of the lower face, and
their combinations with the served features).

Head: the top ``COMPONENTS`` principal components of each scale's features (whitened; over the labelled
and faces/dev faces, no labels used), an L2-regularised logistic regression on them (Newton's method,
numpy; ``RIDGE``), then Platt scaling (Confidence). ``COMPONENTS`` and ``RIDGE`` were chosen among a few
values on the same folds (docs/faces.md). Scoring is identity-disjoint: people are split into
``FOLDS`` folds (GroupKFold by person), each fold predicted by a head fitted on the others; the Platt map
for a fold's predictions is fitted on the other folds' out-of-fold predictions, so neither the head
nor its calibration ever saw the person scored. Value = calibrated P(true) >= 0.5, Confidence =
100 max(p, 1 - p). Intervals: 95 % percentile bootstrap over people (``BOOT`` resamples). Baseline:
the constant majority answer (balanced accuracy 0.5). An attribute ships when its balanced accuracy
meets ``TARGETS``; ``--write`` fits the shipped heads on all labelled faces, with the Platt map of the
out-of-fold predictions. faces/dev (tests/data/appearance_labels.tsv, 34 other people, largest
face) is scored with those final heads as an independent check.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("FACEBANK_ORT_THREADS", "1")

import numpy as np
from common import ROOT, dev_images, load_engine, shared_dir

from facebank.engine.appearance import FEATURES, HEADS, pixel_features
from facebank.engine.image import decode

LFW_LABELS = ROOT / "tests" / "data" / "lfw_attributes.tsv"
DEV_LABELS = ROOT / "tests" / "data" / "appearance_labels.tsv"
HEADS_JSON = ROOT / "facebank" / "engine" / "appearance_heads.json"
COLUMNS = {"eyeglasses": "EYEGLASSES", "sunglasses": "SUNGLASSES", "beard": "BEARD", "mustache": "MUSTACHE"}
COLUMNS["face_occluded"] = "FACE_OCCLUDED"
TARGETS = {"EYEGLASSES": 0.90, "SUNGLASSES": 0.90, "BEARD": 0.90, "MUSTACHE": 0.90, "FACE_OCCLUDED": 0.80}
RIDGE = 30.0  # L2 penalty on the whitened components' weights (summed log loss)
COMPONENTS = 80  # principal components per block of features (two blocks of pixel features)
FOLDS = 10
BOOT = 1000
SEED = 0
SETS = ("pix", "ag", "ex")  # pixel features (served), face-api pooled features (comparison only)
BINS = (50, 60, 70, 80, 90, 95, 100.01)


# ---------------------------------------------------------------- features


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facebank" / "bench" / "appearance"


def read_lfw_labels() -> dict[str, dict[str, str]]:
    if not LFW_LABELS.exists():
        return {}
    lines = [line for line in LFW_LABELS.read_text().splitlines() if line and not line.startswith("#")]
    return {"lfw/" + row["image"]: row for row in csv.DictReader(lines, delimiter="\t")}


def read_dev_labels() -> dict[str, dict[str, str]]:
    lines = [line for line in DEV_LABELS.read_text().splitlines() if not line.startswith("#")]
    return {row["path"]: row for row in csv.DictReader(lines, delimiter="\t")}


def load_cache(cache: Path) -> dict[str, dict[str, np.ndarray]]:
    """photo path (relative to faces/) -> {"found", "pix", "ag", "ex"}."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for chunk in sorted(cache.glob("chunk*.npz")):
        with np.load(chunk) as npz:
            data = {k: npz[k] for k in ("paths", "found", *SETS)}  # each npz[k] reads the file again
        if data["pix"].shape[1] != FEATURES:  # made by an earlier feature function: computed again
            continue
        for i, path in enumerate(data["paths"].tolist()):
            out[path] = {k: data[k][i] for k in ("found", *SETS)}
    return out


def pooled_session(path: Path):
    """A session of a face-api graph that also outputs its pooled 'features' tensor (bench only)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def extract(paths: list[str], cache: Path, chunk_size: int = 300) -> None:
    """Features of each photo not yet cached: for lfw/ the face nearest the centre, else the largest."""
    from facebank import models
    from facebank.engine import faceapi
    from facebank.engine.packs import FACEAPI_AGE_GENDER, FACEAPI_EXPRESSION

    cache.mkdir(parents=True, exist_ok=True)
    done = set(load_cache(cache))
    todo = [p for p in dict.fromkeys(paths) if p not in done]
    if not todo:
        return
    engine = load_engine()
    attribute_models = engine.attribute_models
    nets = {
        "ag": pooled_session(models.resolve(FACEAPI_AGE_GENDER, engine.model_dir)),
        "ex": pooled_session(models.resolve(FACEAPI_EXPRESSION, engine.model_dir)),
    }
    faces_dir = shared_dir() / "faces"
    for start in range(0, len(todo), chunk_size):
        batch, began = todo[start : start + chunk_size], time.time()
        rows: dict[str, list] = {k: [] for k in ("paths", "found", *SETS)}
        for rel in batch:
            rgb = decode((faces_dir / rel).read_bytes())
            faces = engine.detect(rgb)
            rows["paths"].append(rel)
            rows["found"].append(bool(faces))
            if not faces:
                for name, size in (("pix", FEATURES), ("ag", 512), ("ex", 256)):
                    rows[name].append(np.zeros(size))
                continue
            centre = np.array(rgb.shape[1::-1]) / 2
            face = faces[0]
            if rel.startswith("lfw/"):
                face = min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))
            blob = faceapi.to_blob(faceapi.face_crop(rgb, face))
            for name, net in nets.items():
                rows[name].append(net.run(["features"], {"image": blob})[0][0])
            mesh = attribute_models.measure(rgb, face, eyes=False).mesh  # serving's mesh: face.mesh from the Pose
            rows["pix"].append(pixel_features(rgb, mesh))
        digest = hashlib.sha1("\n".join(batch).encode()).hexdigest()[:12]
        np.savez(cache / f"chunk-{digest}.npz", **{k: np.array(v) for k, v in rows.items()})
        print(f"  features: {start + len(batch)} of {len(todo)} photos ({time.time() - began:.0f} s)", flush=True)


# ---------------------------------------------------------------- heads


@dataclass(frozen=True)
class Logistic:
    """P(true) = sigmoid(weights . (x - mean) / scale + bias)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def logit(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weights + self.bias


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = RIDGE) -> Logistic:
    """L2-regularised logistic regression by Newton's method on standardised ``x`` (bias unpenalised)."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    penalty = np.full(z.shape[1], ridge)
    penalty[-1] = 0.0
    beta = np.zeros(z.shape[1])
    for _ in range(60):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -30, 30)))
        gradient = z.T @ (p - y) + penalty * beta
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(z.shape[1])
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-7:
            break
    return Logistic(mean, scale, beta[:-1], float(beta[-1]))


def fit_platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of P = sigmoid(slope * logit + intercept), by maximum likelihood."""
    fitted = fit_logistic(logits[:, None], y, ridge=1e-6)
    slope = float(fitted.weights[0] / fitted.scale[0])
    return slope, float(fitted.bias - slope * fitted.mean[0])


@dataclass(frozen=True)
class Basis:
    """Standardisation and the top ``COMPONENTS`` principal directions (whitened) of the features of
    the labelled and faces/dev faces (no label is used): x -> ((x - mean) / scale) @ directions."""

    mean: np.ndarray
    scale: np.ndarray
    directions: np.ndarray  # features x COMPONENTS, each column divided by its singular value's spread

    def project(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.directions


def fit_basis(x: np.ndarray, components: int = 0, blocks: tuple[int, ...] = ()) -> Basis:
    """Principal components of each block of columns (split at ``blocks``) apart, side by side."""
    components = components or COMPONENTS
    mean, scale = x.mean(0), x.std(0) + 1e-6
    edges = [0, *blocks, x.shape[1]]
    directions = np.zeros((x.shape[1], components * (len(edges) - 1)))
    for b, (start, stop) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        part = (x[:, start:stop] - mean[start:stop]) / scale[start:stop]
        _, singular, vt = np.linalg.svd(part, full_matrices=False)
        spread = singular[:components] / np.sqrt(len(x))
        directions[start:stop, b * components : (b + 1) * components] = vt[:components].T / spread
    return Basis(mean, scale, directions)


def person_folds(people: np.ndarray, folds: int = FOLDS, seed: int = SEED) -> np.ndarray:
    """Fold of each row: people shuffled and dealt round-robin (GroupKFold by person)."""
    names = sorted(set(people.tolist()))
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of = {names[i]: k % folds for k, i in enumerate(order)}
    return np.array([fold_of[p] for p in people])


def out_of_fold(x: np.ndarray, y: np.ndarray, fold: np.ndarray, ridge: float = RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """(out-of-fold logits, cross-fitted calibrated P(true)) for every row."""
    logits = np.zeros(len(y))
    for k in np.unique(fold):
        test = fold == k
        logits[test] = fit_logistic(x[~test], y[~test], ridge).logit(x[test])
    calibrated = np.zeros(len(y))
    for k in np.unique(fold):
        test = fold == k
        slope, intercept = fit_platt(logits[~test], y[~test])
        calibrated[test] = 1.0 / (1.0 + np.exp(-(slope * logits[test] + intercept)))
    return logits, calibrated


# ---------------------------------------------------------------- scoring


def scores(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(balanced accuracy, accuracy) of Value = p >= 0.5."""
    predicted, truth = p >= 0.5, y.astype(bool)
    recall = predicted[truth].mean() if truth.any() else np.nan
    specificity = (~predicted[~truth]).mean() if (~truth).any() else np.nan
    return float(np.nanmean([recall, specificity])), float((predicted == truth).mean())


def bootstrap(p: np.ndarray, y: np.ndarray, people: np.ndarray, reps: int = BOOT) -> np.ndarray:
    """[reps x 3] (balanced accuracy, accuracy, baseline accuracy) over people resampled with replacement."""
    names, index = np.unique(people, return_inverse=True)
    rows = [np.flatnonzero(index == i) for i in range(len(names))]
    rng = np.random.default_rng(SEED)
    out = np.zeros((reps, 3))
    for r in range(reps):
        take = np.concatenate([rows[i] for i in rng.integers(0, len(names), len(names))])
        balanced, accuracy = scores(p[take], y[take])
        share = y[take].mean()
        out[r] = balanced, accuracy, max(share, 1 - share)
    return out


def interval(values: np.ndarray) -> str:
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return f"{low:.3f}-{high:.3f}"


@dataclass
class Result:
    name: str
    n: int
    positives: int
    people: int
    positive_people: int
    balanced: float
    accuracy: float
    baseline: float
    boot: np.ndarray
    p: np.ndarray
    y: np.ndarray

    @property
    def ships(self) -> bool:
        return self.balanced >= TARGETS[self.name]

    def row(self) -> str:
        b = self.boot
        return (
            f"| {self.name} | {self.n} faces of {self.people} people; {self.positives} positive from "
            f"{self.positive_people} people | {self.balanced:.3f} ({interval(b[:, 0])}) | "
            f"{self.accuracy:.3f} ({interval(b[:, 1])}) | {self.baseline:.3f} ({interval(b[:, 2])}) | "
            f"{TARGETS[self.name]:.2f}: {'ships' if self.ships else 'left out'} |"
        )


def reliability(results: list[Result]) -> list[str]:
    """Answers grouped by Confidence: how many, their mean Confidence, the share right (95 % Wilson)."""
    conf = np.concatenate([100 * np.maximum(r.p, 1 - r.p) for r in results])
    right = np.concatenate([(r.p >= 0.5) == r.y.astype(bool) for r in results])
    lines = ["| Confidence | answers | mean Confidence | share right (95 %) |", "|---|---|---|---|"]
    for low, high in zip(BINS[:-1], BINS[1:], strict=True):
        inside = (conf >= low) & (conf < high)
        n = int(inside.sum())
        if not n:
            continue
        hits = int(right[inside].sum())
        lo, hi = wilson(hits, n)
        share = f"{hits / n:.3f} ({lo:.3f}-{hi:.3f})"
        lines.append(f"| {low}-{min(high, 100):g} | {n} | {conf[inside].mean():.1f} | {share} |")
    return lines


def wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def labelled(labels, features, column: str) -> tuple[list[str], np.ndarray]:
    keep = [p for p, row in labels.items() if row[column] in ("0", "1") and p in features and features[p]["found"]]
    return keep, np.array([float(labels[p][column]) for p in keep])


def bases_of(features) -> dict[str, Basis]:
    """The basis of each feature set over the labelled LFW faces and every faces/dev face (fixed by the
    committed label files, so ``--write`` gives the same heads from any cache)."""
    faces_dir = shared_dir() / "faces"
    paths = sorted({*read_lfw_labels(), *(str(p.relative_to(faces_dir)) for p, _ in dev_images())})
    found = [features[p] for p in paths if p in features and features[p]["found"]]
    blocks = {"pix": (2 * 468,)}  # the fine-scale vertex features, then the coarse ones and the rings
    return {
        name: fit_basis(np.array([f[name] for f in found], dtype=np.float64), blocks=blocks.get(name, ()))
        for name in SETS
    }


def evaluate(labels, features, bases: dict[str, Basis], feature_set: str = "pix") -> list[Result]:
    results = []
    for column, name in COLUMNS.items():
        paths, y = labelled(labels, features, column)
        if len(set(y.tolist())) < 2:
            print(f"{name}: not enough labels ({len(y)} faces)")
            continue
        people = np.array([p.split("/")[1] for p in paths])
        x = bases[feature_set].project(np.array([features[p][feature_set] for p in paths], dtype=np.float64))
        _, p = out_of_fold(x, y, person_folds(people))
        balanced, accuracy = scores(p, y)
        share = y.mean()
        results.append(
            Result(
                name,
                len(y),
                int(y.sum()),
                len(set(people)),
                len(set(people[y == 1])),
                balanced,
                accuracy,
                max(share, 1 - share),
                bootstrap(p, y, people),
                p,
                y,
            )
        )
    return results


def final_heads(labels, features, names: list[str]) -> dict:
    """Every shipped head fitted on all labelled faces, with the Platt map of its out-of-fold logits."""
    spec: dict = {"features": FEATURES, "heads": {}}
    basis = bases_of(features)["pix"]
    spec["mean"], spec["scale"] = basis.mean.tolist(), basis.scale.tolist()
    for column, name in COLUMNS.items():
        if name not in names:
            continue
        paths, y = labelled(labels, features, column)
        people = np.array([p.split("/")[1] for p in paths])
        x = basis.project(np.array([features[p]["pix"] for p in paths], dtype=np.float64))
        logits, _ = out_of_fold(x, y, person_folds(people))
        slope, intercept = fit_platt(logits, y)
        head = fit_logistic(x, y)
        # fold the head's own standardisation and the basis into weights on the standardised features
        on_components = head.weights / head.scale
        weights = basis.directions @ on_components
        bias = head.bias - float(np.dot(on_components, head.mean))
        spec["heads"][name] = {
            "weights": [float(f"{w:.7g}") for w in weights],
            "bias": float(f"{bias:.7g}"),
            "calibration": [float(f"{slope:.7g}"), float(f"{intercept:.7g}")],
            "faces": len(y),
            "positives": int(y.sum()),
            "people": len(set(people)),
        }
    spec["mean"] = [float(f"{v:.7g}") for v in spec["mean"]]
    spec["scale"] = [float(f"{v:.7g}") for v in spec["scale"]]
    return spec


def apply_spec(spec: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    from facebank.convert.appearance import folded

    names, weights, bias = folded(spec)
    p = 1.0 / (1.0 + np.exp(-(x @ weights + bias)))
    return {n: p[:, i] for i, n in enumerate(names)}


def dev_label(row: dict[str, str], column: str) -> float | None:
    if column == "eyeglasses" and "1" in (row["eyeglasses"], row["sunglasses"]):
        return 1.0
    return float(row[column]) if row[column] in ("0", "1") else None


def dev_check(spec: dict, features) -> None:
    labels = read_dev_labels()
    column_of = {name: column for column, name in COLUMNS.items()}
    paths = [p for p in labels if p in features and features[p]["found"]]
    x = np.array([features[p]["pix"] for p in paths], dtype=np.float64)
    predicted = apply_spec(spec, x)
    print("\nfaces/dev (tests/data/appearance_labels.tsv, largest face, heads fitted on LFW only):")
    print("| attribute | faces (positive) | balanced accuracy | accuracy | baseline |")
    print("|---|---|---|---|---|")
    for name, p in predicted.items():
        column = column_of[name]
        # that file's basis keeps sunglasses out of its eyeglasses column; Rekognition's Eyeglasses has both
        truth = {q: dev_label(labels[q], column) for q in paths}
        keep = np.array([truth[q] is not None for q in paths])
        y = np.array([truth[q] for q, k in zip(paths, keep, strict=True) if k], dtype=np.float64)
        balanced, accuracy = scores(p[keep], y)
        baseline = max(y.mean(), 1 - y.mean())
        shipped = "shipped" if name in spec["shipped"] else "left out"
        print(f"| {name} ({shipped}) | {len(y)} ({int(y.sum())}) | {balanced:.3f} | {accuracy:.3f} | {baseline:.3f} |")


def candidates(labels, features, out: Path, top: int = 300) -> None:
    """Unlabelled LFW photos ranked by P(true) of a head fitted on all labels, per attribute."""
    out.mkdir(parents=True, exist_ok=True)
    pool = [p for p, f in features.items() if p.startswith("lfw/") and p not in labels and f["found"]]
    basis = bases_of(features)["pix"]
    x_pool = basis.project(np.array([features[p]["pix"] for p in pool], dtype=np.float64))
    for column, _name in COLUMNS.items():
        paths, y = labelled(labels, features, column)
        if len(set(y.tolist())) < 2:
            continue
        head = fit_logistic(basis.project(np.array([features[p]["pix"] for p in paths], dtype=np.float64)), y)
        ranked = np.argsort(-head.logit(x_pool))[:top]
        (out / f"candidates_{column}.txt").write_text("".join(pool[i].removeprefix("lfw/") + "\n" for i in ranked))
        print(f"  {out / f'candidates_{column}.txt'}: {len(ranked)} of {len(pool)} unlabelled photos")


def latency(spec_path: Path, cache: Path, photos: int = 100) -> None:
    """CPU time of the appearance step (features + heads) per face on one thread, against ALL's whole
    cost in the same run (CPU time, so other work on a shared machine does not inflate it)."""
    from facebank.convert.appearance import convert
    from facebank.engine.appearance import AppearanceHeads

    engine = load_engine()
    onnx_path = cache / "appearance_heads.onnx"
    cache.mkdir(parents=True, exist_ok=True)
    convert(spec_path, onnx_path)
    heads = AppearanceHeads(onnx_path, threads=1)
    heads.members = dict(HEADS)  # time all five, shipped or not
    images = [decode(p.read_bytes()) for p, _ in dev_images()[:photos]]
    added, whole = [], []
    for rgb in images:
        faces = engine.detect(rgb, max_faces=1)
        if not faces:
            continue
        face = faces[0]
        mesh = engine.attribute_models.measure(rgb, face, eyes=False).mesh
        began = time.process_time()
        heads.describe(rgb, face, mesh)
        added.append(time.process_time() - began)
        began = time.process_time()
        engine.describe(rgb, [face], ["ALL"])
        whole.append(time.process_time() - began)
    a, w = np.array(added) * 1000, np.array(whole) * 1000
    print(
        f"\nlatency: CPU time on one thread, {len(a)} faces/dev photos (one face each): the appearance step "
        f"(features + all five heads) median {np.median(a):.2f} ms, 95th percentile {np.percentile(a, 95):.2f} ms; "
        f"the whole of ALL median {np.median(w):.1f} ms (target for the step: at most 5 ms)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--write", action="store_true", help=f"write {HEADS_JSON.relative_to(ROOT)}")
    parser.add_argument("--extract", type=int, default=0, help="features of this many more unlabelled LFW photos")
    parser.add_argument("--candidates", type=Path, help="write candidates_<attribute>.txt here")
    parser.add_argument("--compare", action="store_true", help="also score the other feature sets and variants")
    parser.add_argument("--latency", action="store_true", help="time the appearance step")
    args = parser.parse_args()

    labels = read_lfw_labels()
    faces_dir = shared_dir() / "faces"
    wanted = [str(p.relative_to(faces_dir)) for p, _ in dev_images()] + sorted(labels)
    if args.extract:
        everyone = sorted(str(p.relative_to(faces_dir)) for p in (faces_dir / "lfw").glob("*/*.jpg"))
        cached = set(load_cache(args.cache))
        pool = [p for p in np.random.default_rng(SEED).permutation(everyone).tolist() if p not in cached]
        wanted += pool[: args.extract]
    extract(wanted, args.cache)
    features = load_cache(args.cache)
    if args.candidates:
        candidates(labels, features, args.candidates)
    print(f"LFW labels: {len(labels)} photos (tests/data/lfw_attributes.tsv); {FOLDS} person-disjoint folds")
    bases = bases_of(features)
    for feature_set in SETS if args.compare else ("pix",):
        results = evaluate(labels, features, bases, feature_set)
        print(f"\nfeatures: {feature_set}; 95 % intervals: bootstrap over people ({BOOT} resamples)")
        print("| attribute | labelled | balanced accuracy | share right | majority baseline | target |")
        print("|---|---|---|---|---|---|")
        for r in results:
            print(r.row())
        if feature_set == "pix" and results:
            print("\nreliability (out-of-fold, all five attributes together):")
            print("\n".join(reliability(results)))
            for r in results:
                print(f"  {r.name}: " + " ".join(reliability([r])[2:]).replace("|", " "))
    if args.compare:
        from appearance_variants import compare

        compare(labels, features, args.cache, COLUMNS)
    if args.write:
        results = evaluate(labels, features, bases)
        spec = final_heads(labels, features, [r.name for r in results])
        spec["shipped"] = [r.name for r in results if r.ships]
        spec["provenance"] = (
            "python bench/appearance.py --write: logistic heads on appearance.pixel_features, fitted on "
            "tests/data/lfw_attributes.tsv (LFW: research/benchmark use), Platt-calibrated out of fold"
        )
        HEADS_JSON.write_text(json.dumps(spec, indent=0, sort_keys=True) + "\n")
        print(f"\nwrote {HEADS_JSON.relative_to(ROOT)}: shipped {', '.join(spec['shipped']) or 'none'}")
    if HEADS_JSON.exists():
        dev_check(json.loads(HEADS_JSON.read_text()), features)
        if args.latency:
            latency(HEADS_JSON, args.cache)


if __name__ == "__main__":
    main()
