"""Stored-video analysis speed per stage, with 1 and 2 workers, and face recall against the sampling rate.

    python bench/video.py                 # all three tables on shared/videos (a few minutes)
    python bench/video.py --rates 2,5     # fewer sampling rates in the recall table

Speed is seconds of video analysed per second of wall time ("x real time"), per stage, on every
clip of shared/videos at the sampling rate (FACEBANK_VIDEO_SAMPLE_FPS, default the setting):
decode (demux + decode every frame, RGB for the sampled ones), detect (FaceDetector, landmarks,
pose, quality), embed (every face, the pack's recognisers), track (engine.tracker). Stages run one
after another on one thread, each inference on one onnxruntime thread, as a `facebank serve`
worker does. Then whole face-search analyses (decode + detect + embed + track) of all clips at
once with 1 and 2 worker threads, as `--video-workers 1|2`.

Person tracking (StartPersonTracking, issue 15; target: at least 3x real time at the sampling rate):
the same clips, stages decode, persons (MoveNet MultiPose: letterbox, inference, boxes), faces
(the face detector with DEFAULT attributes, on frames with people only: each person's Face) and
track (engine.tracker on the body boxes), then whole person-tracking analyses with 1 and 2 worker
threads; the face-search tables above are the baseline in the same run.

Recall against sampling rate, with every frame analysed as the baseline in the same run:
- clips with faces in every frame (MANIFEST.tsv: head-pose 2 faces, asl 1, classroom 4): the
  share of sampled frames where the detector finds that many faces;
- one-by-one (six visits, faces seen in glimpses): the share of face *sightings* caught, a
  sighting being a run of frames with a face in the every-frame baseline (gaps under 1 s merged),
  caught when at least one sampled frame inside it has a face; and the labelled visits with a face;
- car (no person): faces found (false positives).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("FACEBANK_ORT_THREADS", "1")

from common import load_engine, shared_dir

from facebank.engine.tracker import Tracker
from facebank.engine.video import probe, sample_frames
from facebank.operations.video_jobs import EMBED_REFRESH_MS, REUSE_IOU, embed_and_track
from facebank.settings import Settings

EXPECTED_FACES = {  # MANIFEST.tsv content column: faces in every frame
    "intel_head-pose-face-detection-female-and-male.mp4": 2,
    "intel_asl-book.mp4": 1,
    "intel_classroom.mp4": 4,
}
VISITS_S = [(8, 20), (23, 44), (50, 70), (74, 86), (92, 118), (125, 137)]  # one-by-one, +-2 s
ONE_BY_ONE = "intel_one-by-one-person-detection.mp4"
CAR = "intel_car-detection.mp4"


def clips() -> list[Path]:
    folder = shared_dir() / "videos"
    with open(folder / "MANIFEST.tsv") as f:
        return [folder / row["file"] for row in csv.DictReader(f, delimiter="\t")]


def at_640x360(data: bytes) -> bytes:
    """The clip re-encoded at 640x360 (H.264, same frames and rate): the size the target is stated for."""
    import av

    out = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(out, "w", format="mp4") as dst:
        inp = src.streams.video[0]
        stream = dst.add_stream("libx264", rate=inp.average_rate)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for frame in src.decode(inp):
            for packet in stream.encode(frame.reformat(width=640, height=360, format="yuv420p")):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    return out.getvalue()


def stage_times(engine, data: bytes, fps: float, reuse: bool = True) -> dict[str, float]:
    """Seconds spent in each stage over the whole clip; ``reuse``: faces that continue their track
    beyond doubt are not embedded again within EMBED_REFRESH_MS (as video_jobs does), otherwise
    every face of every sampled frame is embedded (the baseline)."""
    spent = dict.fromkeys(("decode", "detect", "embed", "track"), 0.0)
    tracker = Tracker()
    frames = sample_frames(io.BytesIO(data), fps)
    while True:
        t0 = time.perf_counter()
        try:
            timestamp, rgb = next(frames)
        except StopIteration:
            spent["decode"] += time.perf_counter() - t0
            return spent
        t1 = time.perf_counter()
        faces = engine.detect(rgb)
        t2 = time.perf_counter()
        h, w = rgb.shape[:2]
        boxes = [(f.box[0] / w, f.box[1] / h, f.box[2] / w, f.box[3] / h) for f in faces]
        certain = tracker.certain_continuations(timestamp, boxes, REUSE_IOU, EMBED_REFRESH_MS) if reuse else []
        t3 = time.perf_counter()
        embeddings = [None if certain and certain[i] is not None else engine.embed(rgb, f) for i, f in enumerate(faces)]
        t4 = time.perf_counter()
        tracker.update(timestamp, boxes, embeddings)
        t5 = time.perf_counter()
        for name, seconds in zip(spent, (t1 - t0, t2 - t1, t4 - t3, (t3 - t2) + (t5 - t4)), strict=True):
            spent[name] += seconds


def analyse(engine, data: bytes, fps: float) -> int:
    """A whole face-search analysis of a clip (no collection): decode, detect, embed, track."""
    tracker = Tracker()
    for timestamp, rgb in sample_frames(io.BytesIO(data), fps):
        embed_and_track(engine, tracker, timestamp, rgb, engine.detect(rgb))
    return len(tracker.summaries())


def speed_tables(engine, videos: dict[str, bytes], durations: dict[str, float], fps: float) -> None:
    print(f"\nSpeed per stage at {fps:g} fps, one thread (x real time = video seconds / wall seconds)")
    print(
        f"{'clip':52} {'size':>9} {'decode':>8} {'detect':>8} {'embed':>8} {'track':>8} {'detection':>10} "
        f"{'search':>8} {'search, every':>14}"
    )
    print(f"{'':52} {'':9} {'':8} {'':8} {'':8} {'':8} {'job':>10} {'job':>8} {'face embedded':>14}")
    totals = dict.fromkeys(("decode", "detect", "embed", "track"), 0.0)
    baseline_total = 0.0
    for name, data in videos.items():
        spent = stage_times(engine, data, fps)
        baseline = sum(stage_times(engine, data, fps, reuse=False).values())
        baseline_total += baseline
        info = probe(io.BytesIO(data))
        cells = [f"{durations[name] / s:7.1f}x" if s > 0 else "    inf" for s in spent.values()]
        detection = durations[name] / (spent["decode"] + spent["detect"])
        everything = durations[name] / sum(spent.values())
        print(
            f"{name[:52]:52} {info.width:>4}x{info.height:<4} {' '.join(cells)} {detection:9.1f}x {everything:7.1f}x "
            f"{durations[name] / baseline:13.1f}x"
        )
        for k in totals:
            totals[k] += spent[k]
    seconds = sum(durations.values())
    cells = [f"{seconds / s:7.1f}x" for s in totals.values()]
    detection = seconds / (totals["decode"] + totals["detect"])
    label = f"all clips ({seconds:.1f} s of video)"
    print(
        f"{label:52} {'':9} {' '.join(cells)} {detection:9.1f}x {seconds / sum(totals.values()):7.1f}x "
        f"{seconds / baseline_total:13.1f}x"
    )

    print(f"\nWhole analyses (decode + detect + embed + track) of every clip at {fps:g} fps, by worker threads")
    for workers in (1, 2):
        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda d: analyse(engine, d, fps), videos.values()))
        wall = time.perf_counter() - start
        plural = "s" if workers > 1 else " "
        print(f"  {workers} worker{plural}: {seconds:.1f} s of video in {wall:.1f} s = {seconds / wall:.1f}x")


def person_stage_times(engine, detector, data: bytes, fps: float) -> dict[str, float]:
    """Seconds spent in each person-tracking stage over the whole clip (as person_tracking.frame_items)."""
    from facebank.operations.person_tracking import faces_of_people

    spent = dict.fromkeys(("decode", "persons", "faces", "track"), 0.0)
    tracker = Tracker()
    frames = sample_frames(io.BytesIO(data), fps)
    while True:
        t0 = time.perf_counter()
        try:
            timestamp, rgb = next(frames)
        except StopIteration:
            spent["decode"] += time.perf_counter() - t0
            return spent
        t1 = time.perf_counter()
        people = detector.detect(rgb)
        t2 = time.perf_counter()
        faces = engine.detect(rgb) if people else []
        faces_of_people(people, faces)
        t3 = time.perf_counter()
        h, w = rgb.shape[:2]
        if people:
            tracker.update(timestamp, [(p.box[0] / w, p.box[1] / h, p.box[2] / w, p.box[3] / h) for p in people])
        t4 = time.perf_counter()
        for name, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[name] += seconds


def track_persons(engine, detector, data: bytes, fps: float) -> int:
    """A whole person-tracking analysis of a clip, as a job's segment runs it; returns the Indexes."""
    from facebank.operations.person_tracking import frame_items

    tracker, indexes = Tracker(), set()
    for timestamp, rgb in sample_frames(io.BytesIO(data), fps):
        indexes |= {item["Person"]["Index"] for item in frame_items(timestamp, rgb, detector, engine, tracker)}
    return len(indexes)


def person_speed_tables(engine, videos: dict[str, bytes], durations: dict[str, float], fps: float) -> None:
    from facebank.engine.packs import PERSON_DETECTOR
    from facebank.engine.persons import PersonDetector
    from facebank.models import fetch

    settings = Settings.from_env()
    path = fetch([PERSON_DETECTOR], model_dir=settings.resolved_model_dir, mirror=settings.model_mirror)[0]
    detector = PersonDetector(path, engine.ort_threads)
    detector.detect(_warm(engine)[0])
    print(f"\nPerson tracking speed per stage at {fps:g} fps, one thread (target: at least 3x real time)")
    print(f"{'clip':52} {'size':>9} {'decode':>8} {'persons':>8} {'faces':>8} {'track':>8} {'indexes':>8} {'job':>8}")
    totals = dict.fromkeys(("decode", "persons", "faces", "track"), 0.0)
    for name, data in videos.items():
        spent = person_stage_times(engine, detector, data, fps)
        info = probe(io.BytesIO(data))
        cells = [f"{durations[name] / s:7.1f}x" if s > 0 else "    inf" for s in spent.values()]
        indexes = track_persons(engine, detector, data, fps)
        everything = durations[name] / sum(spent.values())
        print(f"{name[:52]:52} {info.width:>4}x{info.height:<4} {' '.join(cells)} {indexes:>8} {everything:7.1f}x")
        for k in totals:
            totals[k] += spent[k]
    seconds = sum(durations.values())
    cells = [f"{seconds / s:7.1f}x" for s in totals.values()]
    label = f"all clips ({seconds:.1f} s of video)"
    print(f"{label:52} {'':9} {' '.join(cells)} {'':>8} {seconds / sum(totals.values()):7.1f}x")
    print(f"\nWhole person-tracking analyses of every clip at {fps:g} fps, by worker threads")
    for workers in (1, 2):
        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda d: track_persons(engine, detector, d, fps), videos.values()))
        wall = time.perf_counter() - start
        plural = "s" if workers > 1 else " "
        print(f"  {workers} worker{plural}: {seconds:.1f} s of video in {wall:.1f} s = {seconds / wall:.1f}x")


def every_frame(engine, data: bytes, frame_rate: float) -> list[tuple[int, int]]:
    """(timestamp, faces found) of every frame: the baseline."""
    return [(ts, len(engine.detect(rgb))) for ts, rgb in sample_frames(io.BytesIO(data), frame_rate * 1.001)]


PHASES = 5  # grid offsets averaged over, so a sighting caught or missed by luck of alignment counts fairly


def at_rate(frames: list[tuple[int, int]], fps: float, phase: float = 0.0) -> list[tuple[int, int]]:
    """The frames sample_frames picks at fps (the same grid rule, applied to the baseline), the
    grid shifted by ``phase`` of a period (0: the grid sample_frames uses)."""
    period, picked = 1000.0 / fps, []
    next_sample = phase * period
    for ts, n in frames:
        if ts + 1e-6 >= next_sample:
            picked.append((ts, n))
            while next_sample <= ts + 1e-6:
                next_sample += period
    return picked


def sightings(frames: list[tuple[int, int]], merge_ms: int = 1000) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for ts, n in frames:
        if n == 0:
            continue
        if runs and ts - runs[-1][1] <= merge_ms:
            runs[-1][1] = ts
        else:
            runs.append([ts, ts])
    return [(a, b) for a, b in runs]


def recall_table(engine, videos: dict[str, bytes], rates: list[float]) -> None:
    baseline = {}
    for name, data in videos.items():
        if name.endswith("@640x360"):
            continue
        baseline[name] = every_frame(engine, data, probe(io.BytesIO(data)).frame_rate)
    print(f"\nRecall against the sampling rate (baseline: every frame, same run; mean of {PHASES} grid offsets)")
    header = f"{'measure':58}" + "".join(f"{f'{r:g} fps':>10}" for r in rates) + f"{'every':>10}"
    print(header)
    phases = [k / PHASES for k in range(PHASES)]
    for name, expected in EXPECTED_FACES.items():
        row = []
        for grids in [[at_rate(baseline[name], r, p) for p in phases] for r in rates] + [[baseline[name]]]:
            share = sum(sum(n == expected for _, n in g) / len(g) for g in grids) / len(grids)
            row.append(f"{share:9.0%} ")
        print(f"{name[6:36] + f': frames with all {expected} faces':58}" + "".join(row))
    reference = sightings(baseline[ONE_BY_ONE])
    row, visits_row = [], []
    for grids in [[at_rate(baseline[ONE_BY_ONE], r, p) for p in phases] for r in rates] + [[baseline[ONE_BY_ONE]]]:
        caught = visits = 0.0
        for frames in grids:
            with_face = [ts for ts, n in frames if n]
            caught += sum(any(a <= ts <= b for ts in with_face) for a, b in reference) / len(grids)
            visits += sum(any((a - 2) * 1000 <= ts <= (b + 2) * 1000 for ts in with_face) for a, b in VISITS_S) / len(
                grids
            )
        row.append(f"{caught / len(reference):9.0%} ")
        visits_row.append(f"{visits:>6.1f}/{len(VISITS_S)} ")
    shortest = min(b - a for a, b in reference)
    label = f"one-by-one: sightings caught (of {len(reference)}, shortest {shortest} ms)"
    print(f"{label:58}" + "".join(row))
    print(f"{'one-by-one: visits with a face found':58}" + "".join(visits_row))
    outside = sum(
        n
        for ts, n in baseline[ONE_BY_ONE]
        if n and not any((a - 2) * 1000 <= ts <= (b + 2) * 1000 for a, b in VISITS_S)
    )
    print(f"{'one-by-one: faces found outside the visits (every frame)':58}{outside:>10}")
    print(f"{'car: faces found (every frame; no face in the clip)':58}{sum(n for _, n in baseline[CAR]):>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=float, default=None, help="sampling rate of the speed tables")
    parser.add_argument("--rates", default="1,2,3,4,5", help="sampling rates of the recall table")
    parser.add_argument("--skip-recall", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument(
        "--aws",
        action="store_true",
        help="then the AWS model (bench/video_aws.py with its defaults): an hour of 720p with N parallel "
        "segments, cost per video minute against Rekognition's",
    )
    parser.add_argument("--skip-persons", action="store_true", help="skip the person-tracking tables")
    args = parser.parse_args()
    fps = args.fps or Settings.from_env().video_sample_fps
    engine = load_engine()
    videos = {p.name: p.read_bytes() for p in clips()}
    for name in (ONE_BY_ONE, "intel_head-pose-face-detection-female-and-male.mp4"):
        videos[f"{name[:-4]} @640x360"] = at_640x360(videos[name])
    durations = {name: probe(io.BytesIO(data)).duration_ms / 1000 for name, data in videos.items()}
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"pack {engine.pack.name}, onnxruntime threads per inference {engine.ort_threads}, {os.cpu_count()} cores")
    print(f"load average at start {load} (other processes share the cores: figures are lower bounds)")
    engine.embed(*_warm(engine))
    if not args.skip_speed:
        speed_tables(engine, videos, durations, fps)
    if not args.skip_persons:
        person_speed_tables(engine, videos, durations, fps)
    if not args.skip_recall:
        recall_table(engine, videos, [float(r) for r in args.rates.split(",")])
    if args.aws:  # last: it starts moto in this process
        import video_aws

        video_aws.main([])


def _warm(engine):
    """Load every model before timing (the first inference of a session is slower)."""
    data = next(iter(p.read_bytes() for p in clips() if p.name in EXPECTED_FACES))
    for _, rgb in sample_frames(io.BytesIO(data), 1.0):
        faces = engine.detect(rgb)
        if faces:
            return rgb, faces[0]
    raise SystemExit("no face in the warm-up clip")


if __name__ == "__main__":
    main()
