"""Face attribute accuracy on the hand-checked labels, and what ALL costs over DEFAULT.

    python bench/attributes.py          # accuracies with the pinned thresholds, then latency
    python bench/attributes.py --fit    # also fit thresholds, slopes and the gaze pitch offset
                                        # (pin them in facebank/engine/attributes.py)

Labels: tests/data/attribute_labels.tsv (its header says how they were made). EyesOpen, MouthOpen
and Smile are scored by their Value; gaze by EyeDirection Yaw: beyond 15 degrees to either side is
"looking left/right", else "straight" (the band is fixed, not fitted). With --fit, each binary
attribute's ratio gets a one-feature logistic regression on all labelled faces; the accuracy in
brackets is leave-one-out (fit on the others, predict the one), the honest figure for a fitted
threshold. Latency: every faces/dev image, one thread, DetectFaces' engine call with DEFAULT and with
ALL interleaved in the same run (best of 3 each), extra milliseconds per detected face.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time

os.environ["FACEBANK_ORT_THREADS"] = "1"  # one thread, as the target is stated

import numpy as np
from common import ROOT, dev_images, load_engine, shared_dir

from facebank.engine import Face
from facebank.engine import attributes as fa
from facebank.engine.image import decode

LABELS = ROOT / "tests" / "data" / "attribute_labels.tsv"
GAZE_BAND = 15.0  # degrees of EyeDirection Yaw beyond which a face "looks left/right"
BINARY = (("eyes_open", "EyesOpen"), ("mouth_open", "MouthOpen"), ("smile", "Smile"))


def read_labels() -> list[dict[str, str]]:
    lines = [line for line in LABELS.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def labelled_face(faces: list[Face], row: dict[str, str]) -> Face:
    """The detected face whose box centre is nearest the labelled one."""
    h, w = faces[0].image_size
    target = np.array([float(row["x"]) * w, float(row["y"]) * h])
    return min(faces, key=lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - target))


def gaze_class(yaw: float) -> str:
    return "L" if yaw < -GAZE_BAND else "R" if yaw > GAZE_BAND else "S"


def fit_logistic(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(threshold, slope) of P(y=1) = sigmoid(slope * (x - threshold)), by Newton's method."""
    mu, sd = x.mean(), x.std()
    design = np.stack([(x - mu) / sd, np.ones_like(x)], axis=1)
    w = np.zeros(2)
    for _ in range(50):
        p = 1 / (1 + np.exp(-design @ w))
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + 1e-3 * np.eye(2)  # tiny ridge: separable data
        w -= np.linalg.solve(hessian, design.T @ (p - y) + 1e-3 * w)
    return float(mu - w[1] * sd / w[0]), float(w[0] / sd)


def leave_one_out(x: np.ndarray, y: np.ndarray) -> float:
    hits = 0
    for i in range(len(x)):
        rest = np.arange(len(x)) != i
        threshold, slope = fit_logistic(x[rest], y[rest])
        hits += (slope * (x[i] - threshold) > 0) == bool(y[i])
    return hits / len(x)


def measure(engine, rows: list[dict[str, str]]) -> list[tuple[dict[str, str], dict, tuple[float, float, float]]]:
    """Per labelled face: its row, FaceDetail with ALL, and the raw ratios (eyes, mouth, width)."""
    out, cache = [], {}
    for row in rows:
        if row["path"] not in cache:
            rgb = decode((shared_dir() / "faces" / row["path"]).read_bytes())
            cache = {row["path"]: (rgb, engine.detect(rgb, attributes=["ALL"]))}
        rgb, faces = cache[row["path"]]
        face = labelled_face(faces, row)
        m = engine.attribute_models.measure(rgb, face)
        out.append((row, face.detail(), (m.eye_ratio(), *m.mouth(engine.attribute_models.canonical))))
    return out


def report_accuracy(results, fit: bool) -> None:
    print(f"attribute accuracy on {LABELS.relative_to(ROOT)} ({len(results)} faces)")
    pinned = {"eyes_open": fa.EYES_OPEN, "mouth_open": fa.MOUTH_OPEN, "smile": fa.SMILE}
    for i, (label, member) in enumerate(BINARY):
        scored = [(r[label] == "1", d[member]["Value"], ratios[i]) for r, d, ratios in results if r[label] in "01"]
        truth = np.array([t for t, _, _ in scored])
        accuracy = np.mean([t == v for t, v, _ in scored])
        line = f"  {member:10s} n={len(scored):3d} ({truth.sum()} true)  accuracy {accuracy:.3f}"
        if fit:
            x = np.array([r for _, _, r in scored])
            threshold, slope = fit_logistic(x, truth.astype(float))
            line += f"  [leave-one-out {leave_one_out(x, truth.astype(float)):.3f}; fit ({threshold:.3f}, {slope:.1f}),"
            line += f" pinned {pinned[label]}]"
        print(line)
    gazed = [(r["gaze"], d["EyeDirection"], d["Pose"]) for r, d, _ in results if r["gaze"] in "LRS"]
    hits = np.mean([g == gaze_class(e["Yaw"]) for g, e, _ in gazed])
    counts = {c: sum(g == c for g, _, _ in gazed) for c in "LSR"}
    band = f"|EyeDirection Yaw| > {GAZE_BAND:.0f}"
    print(f"  {'gaze L/S/R':10s} n={len(gazed):3d} {counts}  accuracy {hits:.3f} ({band} is left/right)")
    straight = [(abs(e["Yaw"]), abs(p["Yaw"]), e["Pitch"]) for g, e, p in gazed if g == "S"]
    eye, head, pitch = (np.array(v) for v in zip(*straight, strict=False))
    print(
        f"  faces looking at the camera (S, n={len(straight)}): |EyeDirection Yaw| median {np.median(eye):.1f}, "
        f"p90 {np.percentile(eye, 90):.1f} deg; |Pose Yaw| median {np.median(head):.1f}, "
        f"p90 {np.percentile(head, 90):.1f}"
    )
    if fit:
        offset = fa.GAZE_PITCH_OFFSET + float(np.median(pitch))
        print(f"  gaze pitch offset: median EyeDirection Pitch of S faces {np.median(pitch):+.1f} -> pin {offset:.1f}")


def report_latency(engine, limit: int) -> None:
    extra, per_face = [], []
    images = dev_images()[: limit or None]
    for path, _ in images:
        rgb = decode(path.read_bytes())
        times: dict[str, list[float]] = {"DEFAULT": [], "ALL": []}
        for _ in range(3):
            for mode, runs in times.items():
                start = time.perf_counter()
                faces = engine.detect(rgb, attributes=[mode])
                runs.append((time.perf_counter() - start) * 1000)
        if faces:
            extra.append((min(times["ALL"]) - min(times["DEFAULT"])) / len(faces))
            per_face.append(min(times["DEFAULT"]))
    print(
        f"latency, one thread, {len(extra)} faces/dev images: DetectFaces engine call DEFAULT median "
        f"{statistics.median(per_face):.1f} ms per image; ALL costs median {statistics.median(extra):.1f} ms, "
        f"p90 {np.percentile(extra, 90):.1f} ms more per face (target: at most 25)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", action="store_true", help="fit thresholds and print leave-one-out accuracy")
    parser.add_argument("--latency-images", type=int, default=0, help="limit the latency run (0: all)")
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args()
    engine = load_engine()
    report_accuracy(measure(engine, read_labels()), args.fit)
    if not args.no_latency:
        report_latency(engine, args.latency_images)


if __name__ == "__main__":
    main()
