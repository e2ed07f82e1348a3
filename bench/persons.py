"""Person detection (MoveNet MultiPose Lightning) on the five shared videos: per-frame person counts
against the hand labels, the score margin behind persons.MIN_SCORE, and speed, against the same
network converted at 256 x 256 (MoveNet's own default size) as the baseline in the same run.

    python bench/persons.py [--fps 5] [--threads 1] [--no-baseline | --baseline-sizes 256,320]

Frames are sampled at ``--fps`` as a video job samples them (engine.video.sample_frames, PyAV).
Per frame the truth is how many people tests/data/video_person_labels.tsv says are in view
(frames within a label's stated uncertainty of a visit's start or end are left out); the
detected count is how many people score at least MIN_SCORE. Count recall = sum(min(true,
found)) / sum(true), precision = sum(min(true, found)) / sum(found). The margin: over all scored
frames, the lowest score among the top-``true`` people of a frame (real people) and the highest
score of everything else; MIN_SCORE sits between them.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from common import ROOT, shared_dir

LABELS = ROOT / "tests" / "data" / "video_person_labels.tsv"
VIDEOS = (
    "intel_one-by-one-person-detection.mp4",
    "intel_classroom.mp4",
    "intel_head-pose-face-detection-female-and-male.mp4",
    "intel_car-detection.mp4",
    "intel_asl-book.mp4",
)


@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float
    people: int
    uncertain_s: float


def labels() -> dict[str, list[Span]]:
    with open(LABELS) as f:
        rows = csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t")
        out: dict[str, list[Span]] = {}
        for r in rows:
            span = Span(float(r["start_s"]), float(r["end_s"]), int(r["people"]), float(r["uncertain_s"]))
            out.setdefault(r["video"], []).append(span)
    return out


def truth(spans: list[Span], t: float) -> int | None:
    """People in view at ``t`` seconds, or None when ``t`` is within a span's uncertainty of its ends."""
    if any(min(abs(t - s.start_s), abs(t - s.end_s)) < s.uncertain_s for s in spans):
        return None
    return next((s.people for s in spans if s.start_s <= t < s.end_s), 0)


def sample(path: Path, fps: float) -> Iterator[tuple[float, np.ndarray, float]]:
    """(seconds, RGB frame, decode ms) of the frames a video job samples at ``fps`` (engine.video)."""
    from facebank.engine.video import sample_frames

    with open(path, "rb") as f:
        frames = sample_frames(f, fps)
        while True:
            started = time.perf_counter()
            try:
                timestamp, rgb = next(frames)
            except StopIteration:
                return
            yield timestamp / 1000, rgb, (time.perf_counter() - started) * 1000


@dataclass
class Tally:
    matched: int = 0
    true: int = 0
    found: int = 0
    frames: int = 0
    people_scores: list[float] = field(default_factory=list)
    other_scores: list[float] = field(default_factory=list)
    detect_ms: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    duration_s: float = 0.0

    def add(self, n_true: int, scores: np.ndarray, min_score: float) -> None:
        ranked = np.sort(scores)[::-1]
        n_found = int((ranked >= min_score).sum())
        self.matched += min(n_true, n_found)
        self.true += n_true
        self.found += n_found
        self.frames += 1
        self.people_scores += ranked[:n_true].tolist()
        self.other_scores += ranked[n_true:].tolist()

    def merge(self, other: Tally) -> None:
        for name in ("matched", "true", "found", "frames", "duration_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("people_scores", "other_scores", "detect_ms", "decode_ms"):
            getattr(self, name).extend(getattr(other, name))

    @staticmethod
    def ratio(a: int, b: int) -> str:
        return f"{a / b:.3f}" if b else "  -  "


def run(detector, min_score: float, fps: float) -> dict[str, Tally]:
    spans = labels()
    tallies = {}
    for name in VIDEOS:
        tally = Tally()
        for t, rgb, decode_ms in sample(shared_dir() / "videos" / name, fps):
            started = time.perf_counter()
            blob, _ = detector.preprocess(rgb)
            scores = detector.infer(blob)[:, 55]
            tally.detect_ms.append((time.perf_counter() - started) * 1000)
            tally.decode_ms.append(decode_ms)
            tally.duration_s = t + 1.0 / fps
            n_true = truth(spans[name], t)
            if n_true is not None:
                tally.add(n_true, scores, min_score)
        tallies[name] = tally
    return tallies


def report(title: str, tallies: dict[str, Tally], fps: float) -> None:
    print(f"\n{title}")
    print(
        f"{'video':<52} {'frames':>6} {'true':>5} {'found':>5} {'recall':>6} {'precision':>9}"
        f" {'min person':>10} {'max other':>9} {'detect ms':>9} {'x real time':>11}"
    )
    total = Tally()
    for name, t in tallies.items():
        total.merge(t)
        low = f"{min(t.people_scores):.3f}" if t.people_scores else "-"
        high = f"{max(t.other_scores):.3f}" if t.other_scores else "-"
        speed = t.duration_s / ((sum(t.detect_ms) + sum(t.decode_ms)) / 1000)
        print(
            f"{name:<52} {t.frames:>6} {t.true:>5} {t.found:>5} {t.ratio(t.matched, t.true):>6}"
            f" {t.ratio(t.matched, t.found):>9} {low:>10} {high:>9} {np.median(t.detect_ms):>9.1f} {speed:>11.1f}"
        )
    speed = total.duration_s / ((sum(total.detect_ms) + sum(total.decode_ms)) / 1000)
    print(
        f"{'all':<52} {total.frames:>6} {total.true:>5} {total.found:>5} {total.ratio(total.matched, total.true):>6}"
        f" {total.ratio(total.matched, total.found):>9} {min(total.people_scores):>10.3f}"
        f" {max(total.other_scores):>9.3f} {np.median(total.detect_ms):>9.1f} {speed:>11.1f}"
    )
    print(f"  (x real time: video seconds per second of decoding at {fps:g} fps plus detection, one process)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=5.0, help="sampling rate (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default 1)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the smaller conversions")
    parser.add_argument("--baseline-sizes", default="256", help="input sizes to compare with (default 256)")
    args = parser.parse_args()
    os.environ["FACEBANK_ORT_THREADS"] = str(args.threads)

    from facebank import models
    from facebank.convert import movenet as movenet_convert
    from facebank.engine import persons
    from facebank.settings import Settings

    settings = Settings.from_env()
    path, source, _ = models.fetch(
        [persons.MODEL, "persons/movenet-multipose.json", "persons/movenet-multipose.bin"],
        model_dir=settings.resolved_model_dir,
        mirror=settings.model_mirror,
    )
    detector = persons.PersonDetector(path, args.threads)
    print(
        f"MoveNet MultiPose Lightning at {detector.size} x {detector.size}, "
        f"{path.stat().st_size / 1e6:.1f} MB, MIN_SCORE {persons.MIN_SCORE}, {args.threads} thread(s)"
    )
    report(f"{detector.size} x {detector.size} (shipped)", run(detector, persons.MIN_SCORE, args.fps), args.fps)
    if args.no_baseline:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(v) for v in args.baseline_sizes.split(",")):
            small = Path(tmp) / f"movenet_{size}.onnx"
            movenet_convert.convert(source, small, size=size)
            baseline = persons.PersonDetector(small, args.threads)
            title = f"{size} x {size} (baseline{': MoveNet default size' if size == 256 else ''})"
            report(title, run(baseline, persons.MIN_SCORE, args.fps), args.fps)


if __name__ == "__main__":
    main()
