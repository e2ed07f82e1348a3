"""Eyeglasses, Sunglasses, Beard, Mustache and FaceOccluded: can a small classifier on features the
engine already computes tell them, measured leave-one-identity-out (LOIO) on hand labels?

    python bench/appearance.py    # features (cached), LOIO figures per attribute and feature set

An attribute would ship if its LOIO accuracy is at least SHIP_ACCURACY and its 95 % interval lies
above the majority baseline. None did (docs/faces.md "Left out"), so nothing is written and no code
path returns them; the fitted coefficients of a passing attribute would go, with this provenance,
into package data read by an ``attributes.AttributeModel``.

Labels: tests/data/appearance_labels.tsv (its header says how they were made), one row per faces/dev
photo, scored on its largest detected face; "-" (the labeller could not tell) is not scored.

Features, computed once per photo and cached (``CACHE``):
  dlib               the open pack's 128-d recogniser vector (unit length)
  faceapi_age_gender the 512-d pooled features before AgeGenderNet's age and gender layers
  faceapi_expression the 256-d pooled features before FaceExpressionNet's expression layer
  mesh_luminance     grey level at each of the 468 Face Mesh vertices (a box blur 1/40 of the face
                     wide), standardised within the face: dark lenses, hair on the jaw, a hand
  mesh_edges         grey-level gradient magnitude at the same vertices, box-blurred the same way and
                     divided by the face's mean: glasses frames, beard texture, a hand's outline
Classifier: L2-regularised logistic regression (Newton's method, numpy) on standardised features,
``RIDGE`` fixed before any figure was seen (not tuned on these folds). For each identity the model is
fitted on the other 33 and predicts that person's photos; accuracy is counted on those predictions.
The 95 % interval is Wilson's on the photo count (photos of one person are not independent, so it is
narrower than the truth); the baseline is the constant majority answer; balanced accuracy is the mean
of the recall on positives and on negatives. An attribute ships on its best feature set (by balanced
accuracy); choosing among four on the same folds flatters the winner a little.

Two diagnostics follow for that best set, not used for the decision: the same LOIO at ``RIDGE`` / 10
and x 10 (is the verdict an artefact of the penalty?), and photo-level 10-fold cross-validation, where a
person's other photos are in the training set (what the features give when the person has been seen:
the gap to LOIO is how much the classifier leans on recognising the person rather than the attribute).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("FACEBANK_ORT_THREADS", "1")

import numpy as np
from common import ROOT, dev_images, load_engine, shared_dir

from facebank.engine.image import decode

LABELS = ROOT / "tests" / "data" / "appearance_labels.tsv"
CACHE = Path("/tmp/facebank_appearance_features.npz")
# label column -> botocore Attribute name
ATTRIBUTES = {
    "eyeglasses": "EYEGLASSES",
    "sunglasses": "SUNGLASSES",
    "beard": "BEARD",
    "mustache": "MUSTACHE",
    "face_occluded": "FACE_OCCLUDED",
}
FEATURE_SETS = ("dlib", "faceapi_age_gender", "faceapi_expression", "mesh_luminance", "mesh_edges")
RIDGE = 10.0  # L2 penalty on the standardised weights (summed log loss), fixed in advance
SHIP_ACCURACY = 0.90  # LOIO accuracy an attribute needs (and to beat the majority baseline) to ship
Z95 = 1.959964


def read_labels() -> dict[str, dict[str, str]]:
    lines = [line for line in LABELS.read_text().splitlines() if not line.startswith("#")]
    return {row["path"]: row for row in csv.DictReader(lines, delimiter="\t")}


def pooled_features_session(path: Path):
    """An onnxruntime session of a face-api graph that also outputs its pooled 'features' tensor."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def grey(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ [0.299, 0.587, 0.114]


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    dy, dx = np.gradient(image)
    return np.hypot(dx, dy)


def mesh_luminance(rgb: np.ndarray, mesh: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Grey level at the 468 mesh vertices, box-blurred over 1/40 of the face width, z-scored."""
    values = at_vertices(grey(rgb), mesh, box)
    return (values - values.mean()) / (values.std() + 1e-6)


def mesh_edges(rgb: np.ndarray, mesh: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Gradient magnitude at the 468 mesh vertices, blurred as mesh_luminance, / its mean over the face."""
    values = at_vertices(gradient_magnitude(grey(rgb)), mesh, box)
    return values / (values.mean() + 1e-6)


def at_vertices(image: np.ndarray, mesh: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Mean of ``image`` in a square 1/40 of the face box wide around each mesh vertex."""
    radius = max(1, int(round(float(box[2] - box[0]) / 80)))
    h, w = image.shape
    integral = np.pad(image, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    x = np.clip(np.round(mesh[:, 0]).astype(int), 0, w - 1)
    y = np.clip(np.round(mesh[:, 1]).astype(int), 0, h - 1)
    x0, x1 = np.clip(x - radius, 0, w), np.clip(x + radius + 1, 0, w)
    y0, y1 = np.clip(y - radius, 0, h), np.clip(y + radius + 1, 0, h)
    sums = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return sums / ((x1 - x0) * (y1 - y0))


def compute_features() -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """(photo paths relative to faces/, identities, feature set -> n x d), from CACHE when it holds them."""
    images = dev_images()
    paths = [str(p.relative_to(shared_dir() / "faces")) for p, _ in images]
    identities = [identity for _, identity in images]
    if CACHE.exists():
        data = np.load(CACHE)
        if list(data["paths"]) == paths and set(FEATURE_SETS) <= set(data.files):
            return paths, identities, {name: data[name] for name in FEATURE_SETS}
    from facebank import models
    from facebank.engine import faceapi
    from facebank.engine.packs import FACEAPI_AGE_GENDER, FACEAPI_EXPRESSION

    engine = load_engine()
    nets = {
        "faceapi_age_gender": pooled_features_session(models.resolve(FACEAPI_AGE_GENDER, engine.model_dir)),
        "faceapi_expression": pooled_features_session(models.resolve(FACEAPI_EXPRESSION, engine.model_dir)),
    }
    rows: dict[str, list[np.ndarray]] = {name: [] for name in FEATURE_SETS}
    for path, _ in images:
        rgb = decode(path.read_bytes())
        face = engine.detect(rgb, max_faces=1)[0]
        rows["dlib"].append(engine.embed(rgb, face))
        blob = faceapi.to_blob(faceapi.face_crop(rgb, face))
        for name, net in nets.items():
            rows[name].append(net.run(["features"], {"image": blob})[0][0])
        mesh = engine.attribute_models.mesh.run(rgb, face.box, face.landmarks[:2]).points
        rows["mesh_luminance"].append(mesh_luminance(rgb, mesh, face.box))
        rows["mesh_edges"].append(mesh_edges(rgb, mesh, face.box))
    features = {name: np.array(v, dtype=np.float64) for name, v in rows.items()}
    np.savez(CACHE, paths=np.array(paths), **features)
    return paths, identities, features


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
    mean, scale = x.mean(0), x.std(0) + 1e-9
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    penalty = np.full(z.shape[1], ridge)
    penalty[-1] = 0.0
    beta = np.zeros(z.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(z @ beta)))
        gradient = z.T @ (p - y) + penalty * beta
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(z.shape[1])
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return Logistic(mean, scale, beta[:-1], float(beta[-1]))


def wilson(hits: int, n: int) -> tuple[float, float]:
    p = hits / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return centre - half, centre + half


@dataclass(frozen=True)
class Evaluation:
    n: int
    positives: int
    people: int  # identities with at least one positive photo
    accuracy: float
    interval: tuple[float, float]
    baseline: float
    balanced: float
    recall: float  # on positives

    @property
    def passes(self) -> bool:
        return self.accuracy >= SHIP_ACCURACY and self.interval[0] > self.baseline

    def line(self) -> str:
        return (
            f"n={self.n:3d} positives={self.positives:3d} people={self.people:2d}  LOIO accuracy {self.accuracy:.3f} "
            f"[{self.interval[0]:.3f}-{self.interval[1]:.3f}]  baseline {self.baseline:.3f}  "
            f"balanced {self.balanced:.3f}  recall+ {self.recall:.3f}"
        )


def leave_one_identity_out(x: np.ndarray, y: np.ndarray, identities: np.ndarray) -> Evaluation:
    logits = np.zeros(len(y))
    for person in sorted(set(identities)):
        mine = identities == person
        logits[mine] = fit_logistic(x[~mine], y[~mine]).logit(x[mine])
    predicted = logits >= 0
    truth = y.astype(bool)
    hits = int((predicted == truth).sum())
    positives = int(truth.sum())
    recall = float(predicted[truth].mean()) if positives else float("nan")
    specificity = float((~predicted[~truth]).mean())
    return Evaluation(
        n=len(y),
        positives=positives,
        people=len(set(identities[truth])),
        accuracy=hits / len(y),
        interval=wilson(hits, len(y)),
        baseline=max(positives, len(y) - positives) / len(y),
        balanced=(recall + specificity) / 2,
        recall=recall,
    )


def photo_folds(x: np.ndarray, y: np.ndarray, folds: int = 10, seed: int = 0) -> float:
    """Accuracy of 10-fold cross-validation over photos (stratified by label, people not held out)."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), int)
    for value in (0.0, 1.0):
        members = rng.permutation(np.flatnonzero(y == value))
        fold[members] = np.arange(len(members)) % folds
    predicted = np.zeros(len(y), bool)
    for k in range(folds):
        test = fold == k
        predicted[test] = fit_logistic(x[~test], y[~test]).logit(x[test]) >= 0
    return float((predicted == y.astype(bool)).mean())


def report_diagnostics(x: np.ndarray, y: np.ndarray, people: np.ndarray) -> None:
    for ridge in (RIDGE / 10, RIDGE * 10):
        logits = np.zeros(len(y))
        for person in sorted(set(people)):
            mine = people == person
            logits[mine] = fit_logistic(x[~mine], y[~mine], ridge).logit(x[mine])
        predicted, truth = logits >= 0, y.astype(bool)
        balanced = (predicted[truth].mean() + (~predicted[~truth]).mean()) / 2
        print(f"    ridge {ridge:g}: LOIO accuracy {(predicted == truth).mean():.3f}, balanced {balanced:.3f}")
    print(f"    photo-level 10-fold (people seen in training): accuracy {photo_folds(x, y):.3f}")


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    labels = read_labels()
    paths, identities, features = compute_features()
    for column, name in ATTRIBUTES.items():
        scored = [i for i, p in enumerate(paths) if labels[p][column] in ("0", "1")]
        y = np.array([float(labels[paths[i]][column]) for i in scored])
        people = np.array([identities[i] for i in scored])
        print(f"{name} ({len(paths) - len(scored)} photos marked '-' not scored)")
        results = {}
        for feature_set in FEATURE_SETS:
            results[feature_set] = leave_one_identity_out(features[feature_set][scored], y, people)
            verdict = "passes" if results[feature_set].passes else "fails"
            print(f"  {feature_set:19s} {results[feature_set].line()}  {verdict}")
        best = max(FEATURE_SETS, key=lambda f: (results[f].balanced, results[f].accuracy))
        print(f"  best by balanced accuracy: {best}")
        report_diagnostics(features[best][scored], y, people)


if __name__ == "__main__":
    main()
