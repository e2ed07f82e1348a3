"""Face attribute accuracy on the hand-checked labels, and what ALL costs over DEFAULT.

    python bench/attributes.py          # accuracies with the pinned thresholds, then latency
    python bench/attributes.py --fit    # also fit thresholds, slopes and the gaze pitch offset
                                        # (pin them in facebank/engine/attributes.py), and face-api's
                                        # crop, AgeRange interval and expression temperature
                                        # (pin them in facebank/engine/faceapi.py)

Labels: tests/data/attribute_labels.tsv (its header says how they were made). EyesOpen, MouthOpen
and Smile are scored by their Value; gaze by EyeDirection Yaw: beyond 15 degrees to either side is
"looking left/right", else "straight" (the band is fixed, not fitted). With --fit, each binary
attribute's ratio gets a one-feature logistic regression on all labelled faces; the accuracy in
brackets is leave-one-out (fit on the others, predict the one), the honest figure for a fitted
threshold. Latency: every faces/dev image, one thread, DetectFaces' engine call with DEFAULT and with
ALL interleaved in the same run (best of 3 each), extra milliseconds per detected face; of it, what
face-api's two networks cost (preprocess + infer + postprocess, best of 3).

AgeRange, Gender and Emotions (face-api.js's networks) are scored on the largest face of every
faces/dev image against tests/data/identity_labels.tsv (gender of all 34 people; age of the 108 LFW
photos of 16 people, from dates of birth), and Emotions' HAPPY on the smile labels. Photos of one
person are not independent, so the intervals resample people (identity bootstrap, 90 %) or count
people (Clopper-Pearson, 95 %), and the AgeRange interval is checked leave-one-identity-out: its
percentiles refitted without a person, then scored on that person's photos.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import statistics
import time
from dataclasses import dataclass

os.environ["FACEBANK_ORT_THREADS"] = "1"  # one thread, as the target is stated

import numpy as np
from common import ROOT, dev_images, load_engine, shared_dir

from facebank.engine import Face, faceapi
from facebank.engine import attributes as fa
from facebank.engine.image import decode

LABELS = ROOT / "tests" / "data" / "attribute_labels.tsv"
IDENTITIES = ROOT / "tests" / "data" / "identity_labels.tsv"
GAZE_BAND = 15.0  # degrees of EyeDirection Yaw beyond which a face "looks left/right"
BINARY = (("eyes_open", "EyesOpen"), ("mouth_open", "MouthOpen"), ("smile", "Smile"))
AGE_DATE = datetime.date(2003, 1, 1)  # LFW's news photos are of 2002-2003 (identity_labels.tsv)
AGE_COVERAGE = 0.85  # AgeRange's nominal coverage: the share of true ages it should hold
# MediaPipe mesh vertices at the places of the iBUG 68 landmarks face-api's crop is drawn around
# (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67): only their bounding box is used.
MESH_68 = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
)  # fmt: skip


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


Result = tuple[dict[str, str], dict, tuple[float, float, float], np.ndarray]


def measure(engine, rows: list[dict[str, str]]) -> list[Result]:
    """Per labelled face: its row, FaceDetail with ALL, the raw ratios (eyes, mouth, width) and
    face-api's 7 expression probabilities."""
    expressions = attribute_model(engine, "EMOTIONS")
    out, cache = [], {}
    for row in rows:
        if row["path"] not in cache:
            rgb = decode((shared_dir() / "faces" / row["path"]).read_bytes())
            cache = {row["path"]: (rgb, engine.detect(rgb, attributes=["ALL"]))}
        rgb, faces = cache[row["path"]]
        face = labelled_face(faces, row)
        m = engine.attribute_models.measure(rgb, face)
        ratios = (m.eye_ratio(), *m.mouth(engine.attribute_models.canonical))
        out.append((row, face.detail(), ratios, expressions.infer(expressions.preprocess(rgb, face))))
    return out


def report_accuracy(results, fit: bool) -> None:
    print(f"attribute accuracy on {LABELS.relative_to(ROOT)} ({len(results)} faces)")
    pinned = {"eyes_open": fa.EYES_OPEN, "mouth_open": fa.MOUTH_OPEN, "smile": fa.SMILE}
    for i, (label, member) in enumerate(BINARY):
        scored = [(r[label] == "1", d[member]["Value"], ratios[i]) for r, d, ratios, _ in results if r[label] in "01"]
        truth = np.array([t for t, _, _ in scored])
        accuracy = np.mean([t == v for t, v, _ in scored])
        line = f"  {member:10s} n={len(scored):3d} ({truth.sum()} true)  accuracy {accuracy:.3f}"
        if fit:
            x = np.array([r for _, _, r in scored])
            threshold, slope = fit_logistic(x, truth.astype(float))
            line += f"  [leave-one-out {leave_one_out(x, truth.astype(float)):.3f}; fit ({threshold:.3f}, {slope:.1f}),"
            line += f" pinned {pinned[label]}]"
        print(line)
    gazed = [(r["gaze"], d["EyeDirection"], d["Pose"]) for r, d, _, _ in results if r["gaze"] in "LRS"]
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


# --- AgeRange, Gender, Emotions (face-api.js's networks) -----------------------------------------


def attribute_model(engine, name: str):
    """The pack's attribute model that provides the botocore Attribute ``name``."""
    return next(m for m in engine.attribute_models.models if name in m.provides)


def read_identities() -> dict[str, dict[str, str]]:
    lines = [line for line in IDENTITIES.read_text().splitlines() if not line.startswith("#")]
    return {r["identity"]: r for r in csv.DictReader(lines, delimiter="\t")}


def age_on(born: str, day: datetime.date = AGE_DATE) -> int | None:
    """Completed years on ``day`` of someone born on ``born`` (ISO date; "-" when unknown)."""
    if born == "-":
        return None
    birth = datetime.date.fromisoformat(born)
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


@dataclass(frozen=True)
class Reading:
    """What face-api's networks say of the largest face of one faces/dev photo."""

    identity: str
    age: float  # AgeGenderNet's estimate, years
    p_male: float
    expressions: np.ndarray  # 7 probabilities, faceapi_convert.EXPRESSIONS order
    crop: tuple[float, float, float] | None  # with --fit: face-api's own box, see faceapi_box


def faceapi_box(face: Face, mesh: np.ndarray) -> tuple[float, float, float]:
    """face-api's crop (the box of its 68 landmarks grown by 20 % of its width and height) in the
    detector box's eye-levelled frame: (width, height, centre below the box centre), each / the box's
    longer side. The 68 landmarks are stood in for by the mesh vertices at their places."""
    (left_x, left_y), (right_x, right_y) = face.landmarks[:2]
    angle = math.atan2(right_y - left_y, right_x - left_x)
    c, s = math.cos(angle), math.sin(angle)
    centre, side = (face.box[:2] + face.box[2:]) / 2, float(np.max(face.box[2:] - face.box[:2]))
    levelled = (mesh[list(MESH_68), :2] - centre) @ np.array([[c, -s], [s, c]])  # turned by -angle
    low, high = levelled.min(0), levelled.max(0)
    low, high = low - 0.1 * (high - low), high + 0.1 * (high - low)
    return float((high - low)[0] / side), float((high - low)[1] / side), float((low + high)[1] / 2 / side)


def read_dev(engine, fit: bool) -> list[Reading]:
    ages, expressions = attribute_model(engine, "AGE_RANGE"), attribute_model(engine, "EMOTIONS")
    readings = []
    for path, identity in dev_images():
        rgb = decode(path.read_bytes())
        face = engine.detect(rgb, max_faces=1)[0]
        age, p_male = ages.infer(ages.preprocess(rgb, face))
        probabilities = expressions.infer(expressions.preprocess(rgb, face))
        crop = None
        if fit:
            crop = faceapi_box(face, engine.attribute_models.mesh.run(rgb, face.box, face.landmarks[:2]).points)
        readings.append(Reading(identity, age, p_male, probabilities, crop))
    return readings


def clopper_pearson(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for a rate of ``hits`` in ``n``, by bisection on the binomial tails."""
    tail = (1 - level) / 2

    def at_least(k: int, p: float) -> float:  # P(X >= k) at rate p
        return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))

    def root(gap) -> float:  # the p in (0, 1) where the increasing function gap(p) crosses 0
        low, high = 0.0, 1.0
        for _ in range(60):
            low, high = ((low + high) / 2, high) if gap((low + high) / 2) < 0 else (low, (low + high) / 2)
        return (low + high) / 2

    lower = 0.0 if hits == 0 else root(lambda p: at_least(hits, p) - tail)
    upper = 1.0 if hits == n else root(lambda p: tail - (1 - at_least(hits + 1, p)))
    return lower, upper


def people_bootstrap(by_identity: dict[str, list[float]], statistic=np.mean, draws: int = 2000, seed: int = 0):
    """90 % interval of ``statistic`` over all values when people are drawn again with replacement."""
    rng = np.random.default_rng(seed)
    names = sorted(by_identity)
    values = []
    for _ in range(draws):
        pick = rng.choice(len(names), len(names))
        values.append(statistic([v for i in pick for v in by_identity[names[i]]]))
    return np.percentile(values, [5, 95])


def age_offsets(estimates: np.ndarray, truths: np.ndarray, coverage: float = AGE_COVERAGE) -> tuple[float, float]:
    """faceapi.AGE_INTERVAL holding ``coverage`` of true ages: equal-tailed percentiles of the error
    (true - estimate), in years at the adult scale (faceapi.age_range shrinks it below AGE_ADULT)."""
    scale = np.minimum(estimates, faceapi.AGE_ADULT) / faceapi.AGE_ADULT
    tail = (1 - coverage) / 2
    low, high = np.quantile((truths - estimates) / scale, [tail, 1 - tail])
    return float(low), float(high)


def inside(estimate: float, truth: int, offsets: tuple[float, float]) -> tuple[bool, int]:
    """Whether AgeRange holds ``truth``, and its width in years."""
    age_range = faceapi.age_range(estimate, offsets)
    return age_range["Low"] <= truth <= age_range["High"], age_range["High"] - age_range["Low"]


def report_gender(readings: list[Reading], identities: dict[str, dict[str, str]]) -> None:
    right = [(r.identity, (r.p_male >= 0.5) == (identities[r.identity]["gender"] == "Male")) for r in readings]
    hits = sum(ok for _, ok in right)
    people = {name for name, _ in right}
    people_right = sum(all(ok for n, ok in right if n == name) for name in people)
    low, high = clopper_pearson(hits, len(right))
    p_low, p_high = clopper_pearson(people_right, len(people))
    confidence = np.array([100 * max(r.p_male, 1 - r.p_male) for r in readings])
    print(
        f"  Gender     n={len(right):3d} faces: {hits} right ({hits / len(right):.3f}, 95 % {low:.3f}-{high:.3f}); "
        f"{people_right} of {len(people)} people with every photo right ({p_low:.3f}-{p_high:.3f}); "
        f"Confidence min {confidence.min():.1f}, 5th percentile {np.percentile(confidence, 5):.1f}"
    )


def report_age(readings: list[Reading], identities: dict[str, dict[str, str]], fit: bool) -> None:
    scored = [(r.identity, r.age, age_on(identities[r.identity]["born"])) for r in readings]
    scored = [(name, est, truth) for name, est, truth in scored if truth is not None]
    names = np.array([n for n, _, _ in scored])
    estimates = np.array([e for _, e, _ in scored])
    truths = np.array([t for _, _, t in scored], float)
    errors: dict[str, list[float]] = {}
    for name, est, truth in scored:
        errors.setdefault(name, []).append(est - truth)
    mae_interval = people_bootstrap(errors, lambda v: np.mean(np.abs(v)))
    print(
        f"  age        n={len(scored):3d} faces of {len(errors)} people: MAE {np.mean(np.abs(estimates - truths)):.2f} "
        f"years (90 % {mae_interval[0]:.1f}-{mae_interval[1]:.1f}), bias {np.mean(estimates - truths):+.2f} "
        f"(estimate - true; true ages within about a year, identity_labels.tsv)"
    )
    pinned = [inside(e, int(t), faceapi.AGE_INTERVAL) for e, t in zip(estimates, truths, strict=True)]
    held_out: dict[str, list[float]] = {}
    hits, widths = np.zeros(len(names), bool), np.zeros(len(names))
    for name in sorted(errors):
        mine = names == name
        offsets = age_offsets(estimates[~mine], truths[~mine])
        hits[mine], widths[mine] = zip(
            *(inside(e, int(t), offsets) for e, t in zip(estimates[mine], truths[mine], strict=True)), strict=True
        )
        held_out[name] = list(hits[mine])
    coverage = hits.mean()
    interval = people_bootstrap(held_out)
    print(
        f"  AgeRange   pinned {faceapi.AGE_INTERVAL}: {np.mean([h for h, _ in pinned]):.3f} of true ages inside, "
        f"median width {np.median([w for _, w in pinned]):.0f} years (p10-p90 "
        f"{np.percentile([w for _, w in pinned], 10):.0f}-{np.percentile([w for _, w in pinned], 90):.0f}); "
        f"leave-one-identity-out {coverage:.3f} (90 % over people {interval[0]:.2f}-{interval[1]:.2f}), "
        f"median width {np.median(widths):.0f}; nominal {AGE_COVERAGE}"
    )
    narrow = {w: np.mean(np.abs(truths - estimates) <= w / 2) for w in (5, 10)}
    print(f"    a range of 5 / 10 years centred on the estimate would hold {narrow[5]:.2f} / {narrow[10]:.2f}")
    bands = ((0, 35), (35, 50), (50, 60), (60, 200))
    band_mae = [np.mean(np.abs(estimates - truths)[(estimates >= a) & (estimates < b)]) for a, b in bands]
    band_hits = [hits[(estimates >= a) & (estimates < b)].mean() for a, b in bands]
    print(
        "    by estimate (years: MAE, AgeRange leave-one-identity-out coverage): "
        + ", ".join(f"{a}-{b}: {m:.1f}, {h:.2f}" for (a, b), m, h in zip(bands, band_mae, band_hits, strict=True))
    )
    if fit:
        low, high = age_offsets(estimates, truths)
        print(f"    fit: AGE_INTERVAL = ({low:.1f}, {high:.1f})")
        report_proportional_age_range(names, estimates, truths, bands)


def report_proportional_age_range(names, estimates, truths, bands) -> None:
    """The alternative to AGE_INTERVAL's shape: an interval proportional to the estimate (percentiles
    of log(true / estimate)), leave-one-identity-out, with its coverage by estimate band."""
    tail = (1 - AGE_COVERAGE) / 2
    hits, widths = np.zeros(len(names), bool), np.zeros(len(names))
    for name in sorted(set(names)):
        mine = names == name
        low, high = np.quantile(np.log(truths[~mine] / estimates[~mine]), [tail, 1 - tail])
        lows, highs = np.round(estimates[mine] * np.exp(low)), np.round(estimates[mine] * np.exp(high))
        hits[mine], widths[mine] = (lows <= truths[mine]) & (truths[mine] <= highs), highs - lows
    low, high = np.quantile(np.log(truths / estimates), [tail, 1 - tail])
    pinned = np.round(estimates * np.exp(high)) - np.round(estimates * np.exp(low))
    by_band = ", ".join(f"{a}-{b}: {hits[(estimates >= a) & (estimates < b)].mean():.2f}" for a, b in bands)
    print(
        f"    proportional alternative: median width {np.median(pinned):.0f} years (leave-one-identity-out "
        f"{np.median(widths):.0f}), coverage leave-one-identity-out {hits.mean():.3f}; by estimate {by_band}"
    )


def happy_probability(probabilities: np.ndarray, temperature: float) -> float:
    emotions = faceapi.emotions(probabilities, temperature)
    return next(e["Confidence"] for e in emotions if e["Type"] == "HAPPY") / 100


def log_loss(rows: list[tuple[bool, np.ndarray]], temperature: float) -> float:
    p = np.clip([happy_probability(x, temperature) for _, x in rows], 1e-6, 1 - 1e-6)
    y = np.array([smiling for smiling, _ in rows], float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_temperature(rows: list[tuple[bool, np.ndarray]]) -> float:
    """The softmax temperature under which P(HAPPY) best predicts the smile labels (log loss)."""
    grid = np.exp(np.linspace(np.log(0.2), np.log(5.0), 161))
    return float(min(grid, key=lambda t: log_loss(rows, t)))


def cluster(path: str) -> str:
    """The person of a labelled face for leave-one-out: dev/<identity>/..., else the photo itself."""
    parts = path.split("/")
    return parts[1] if parts[0] == "dev" else path


def report_emotions(results: list[Result], fit: bool) -> None:
    rows = [(r["smile"] == "1", x, cluster(r["path"])) for r, _, _, x in results if r["smile"] in ("0", "1")]
    happy = faceapi.EMOTIONS.index("HAPPY")
    for label, smiling in (("smiling", True), ("not smiling", False)):
        chosen = [int(np.argmax(x) == happy) for s, x, _ in rows if s == smiling]
        low, high = clopper_pearson(sum(chosen), len(chosen))
        share = f"{sum(chosen)} of {len(chosen)} faces labelled {label} (95 % {low:.2f}-{high:.2f})"
        print(f"  Emotions   HAPPY first on {share}")
    scored = [(s, x) for s, x, _ in rows]
    held_out = []
    for person in sorted({c for _, _, c in rows}):
        rest = [(s, x) for s, x, c in rows if c != person]
        temperature = fit_temperature(rest)
        held_out += [(s, x, temperature) for s, x, c in rows if c == person]
    loss = -np.mean(
        [
            np.log(np.clip(happy_probability(x, t) if s else 1 - happy_probability(x, t), 1e-6, 1))
            for s, x, t in held_out
        ]
    )
    print(
        f"  HAPPY Confidence as P(smiling), n={len(scored)}: log loss raw {log_loss(scored, 1.0):.3f}, pinned "
        f"temperature {faceapi.EXPRESSION_TEMPERATURE} {log_loss(scored, faceapi.EXPRESSION_TEMPERATURE):.3f}, "
        f"leave-one-person-out fit {loss:.3f}"
    )
    if fit:
        print(f"    fit: EXPRESSION_TEMPERATURE = {fit_temperature(scored):.2f}")


def report_faceapi(engine, results: list[Result], fit: bool) -> None:
    readings = read_dev(engine, fit)
    identities = read_identities()
    print(
        f"face-api.js networks on the largest face of {len(readings)} faces/dev photos ({IDENTITIES.relative_to(ROOT)})"
    )
    report_gender(readings, identities)
    report_age(readings, identities, fit)
    report_emotions(results, fit)
    if fit:
        crops = np.array([r.crop for r in readings])
        width, height, shift = np.median(crops, axis=0)
        print(f"    fit: CROP_WIDTH = {width:.2f}, CROP_HEIGHT = {height:.2f}, CROP_SHIFT = {shift:.2f} (medians)")


def report_latency(engine, limit: int) -> None:
    extra, per_face, nets = [], [], []
    networks = [attribute_model(engine, "AGE_RANGE"), attribute_model(engine, "EMOTIONS")]
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
            for face in faces:
                runs = []
                for _ in range(3):
                    start = time.perf_counter()
                    for network in networks:
                        network.estimate(rgb, face)
                    runs.append((time.perf_counter() - start) * 1000)
                nets.append(min(runs))
    print(
        f"latency, one thread, {len(extra)} faces/dev images: DetectFaces engine call DEFAULT median "
        f"{statistics.median(per_face):.1f} ms per image; ALL costs median {statistics.median(extra):.1f} ms, "
        f"p90 {np.percentile(extra, 90):.1f} ms more per face (target: at most 25 + 10 for face-api's networks); "
        f"of it, face-api's two networks median {statistics.median(nets):.1f} ms, p90 {np.percentile(nets, 90):.1f} "
        f"per face ({len(nets)} faces; target: at most 10)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", action="store_true", help="fit thresholds and print leave-one-out accuracy")
    parser.add_argument("--latency-images", type=int, default=0, help="limit the latency run (0: all)")
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args()
    engine = load_engine()
    results = measure(engine, read_labels())
    report_accuracy(results, args.fit)
    report_faceapi(engine, results, args.fit)
    if not args.no_latency:
        report_latency(engine, args.latency_images)


if __name__ == "__main__":
    main()
