"""Stream processors (issue 26): lag from a frame entering to its record on the output stream, how
many 720p 30 fps streams one core sustains, and the cost of a stream-hour on AWS against
Rekognition's stream processor price.

    python bench/streams.py                       # rates 2 and 4 fps, 45 s per run (about 10 minutes)
    python bench/streams.py --rates 4 --seconds 30 --max-streams 3

Input: a 1280x720, 30 fps H.264 file (libx264 veryfast, crf 23, a keyframe a second, no B-frames:
as an IP camera sends) made with PyAV from shared/videos' asl-book clip (one person signing, the
face in every frame: the costly case, every sampled frame is detected and its face tracked and
searched), looped to --seconds; cached under /work/cache/sp-pipe (FACEBANK_BENCH_CACHE).

Each run is the embedded runtime's own loop: N processors, each a thread running
``stream_run.run_stream`` over ``stream_media.open_source`` (the file read at its own frame rate, as
a camera delivers it) with a ``KinesisSink`` writing to a moto server (another process: its CPU is
not ours) and the SQLite store of a fresh data dir (record re-read and checkpoint per fragment),
searching a collection of 10 faces/dev faces (none is the clip's person: every face is searched,
nothing matches). The process is pinned to ONE core (sched_setaffinity), one onnxruntime thread.

- lag of a record = when PutRecords returned - (ProducerTimestamp + FrameOffsetInSeconds), i.e.
  the wall time since its frame entered (the producer timestamp is the wall clock when the source
  opened plus the frame's presentation time, and packets are released at their time);
- CPU per stream = process CPU seconds / seconds of video (the one core's share one stream takes);
- N streams are sustained when the p95 lag stays within 2 s and the lag does not grow (the last
  third's median is within 0.5 s of the first third's). N grows from 1 until a run fails that.

The baseline in the same run is the other sampling rate (2 vs 4 fps). Cost per stream-hour is
computed from the measured figures and list prices (us-east-1; see --help and docs/streams.md).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("FACEBANK_ORT_THREADS", "1")

from common import ROOT, shared_dir

CACHE = Path(os.environ.get("FACEBANK_BENCH_CACHE", "/work/cache/sp-pipe"))
CLIP = "intel_asl-book.mp4"
TARGET_LAG_S = 2.0
# Prices (us-east-1 list prices; docs/streams.md cites the pages).
LAMBDA_GB_S = 0.0000133334  # arm64, as docs/cost.md
LAMBDA_REQUEST = 0.20 / 1e6
KDS_PUT_UNIT = 0.014 / 1e6  # per 25 KB PUT payload unit (provisioned mode)
KDS_SHARD_HOUR = 0.015  # one shard: 1,000 records/s, shared by every processor writing to it
KVS_CONSUMED_GB = 0.0085  # GetMedia data consumed by the consumer (Rekognition's own read is in its price)
REKOGNITION_PER_MIN = 0.12  # streaming video face search, per minute of video (docs/streams.md)
LAMBDA_MAX_S = 900
VCPU_MB = 1769  # Lambda gives one full vCPU at 1,769 MB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def camera_file(seconds: int) -> Path:
    """asl-book at 1280x720, 30 fps, looped to ``seconds``: a keyframe a second, no B-frames."""
    import av

    out = CACHE / f"camera-720p30-asl-{seconds}s.mp4"
    if out.is_file():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with av.open(str(shared_dir() / "videos" / CLIP)) as src:
        frames = [f.reformat(width=1280, height=720, format="yuv420p") for f in src.decode(video=0)]
    tmp = out.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as dst:
        stream = dst.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "g": "30", "bf": "0"}
        for i in range(seconds * 30):
            frame = frames[i % len(frames)]
            frame.pts, frame.time_base = i, Fraction(1, 30)  # the camera's clock: frame i at i/30 s
            for packet in stream.encode(frame):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    tmp.rename(out)
    return out


@dataclass
class Run:
    rate: float
    streams: int
    video_s: float
    cpu_s: float
    lags: list[float]
    thirds: tuple[float, float]  # median lag of the first and last third of each stream's records
    records: int
    record_bytes: float
    failures: list[str]

    @property
    def cpu_per_stream(self) -> float:
        return self.cpu_s / (self.video_s * self.streams)

    def p(self, q: float) -> float:
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    @property
    def sustained(self) -> bool:
        return not self.failures and self.p(0.95) <= TARGET_LAG_S and self.thirds[1] - self.thirds[0] <= 0.5


class TimedSink:
    """The real KinesisSink; each record's lag taken when PutRecords returned."""

    def __init__(self, sink, lags: list[float], sizes: list[int]):
        self.sink, self.lags, self.sizes = sink, lags, sizes

    def put(self, records: list[dict]) -> None:
        import json

        self.sink.put(records)
        done = time.time()
        for r in records:
            video = r["InputInformation"]["KinesisVideo"]
            self.lags.append(done - (video["ProducerTimestamp"] + video["FrameOffsetInSeconds"]))
            self.sizes.append(len(json.dumps(r, separators=(",", ":"))))


def make_context(data_dir: Path, rate: float, moto_url: str):
    from facebank.operations import OPERATIONS
    from facebank.settings import Settings
    from facebank.wiring import embedded_context

    settings = replace(Settings.from_env(), data_dir=data_dir, stream_sample_fps=rate, account_id="123456789012")
    ctx = embedded_context(settings)
    ctx.start_stream_processor = lambda name: None  # this bench runs the loop itself
    OPERATIONS["CreateCollection"]({"CollectionId": "bench"}, ctx)
    photos = sorted((shared_dir() / "faces" / "dev").glob("*/1.jpg"))[:10]
    for photo in photos:
        OPERATIONS["IndexFaces"]({"CollectionId": "bench", "Image": {"Bytes": photo.read_bytes()}, "MaxFaces": 1}, ctx)
    return ctx


def run(rate: float, streams: int, clip: Path, seconds: int, moto_url: str) -> Run:
    import boto3

    from facebank.engine.stream_media import SourceError, open_source
    from facebank.operations import OPERATIONS
    from facebank.operations.stream_run import run_stream
    from facebank.storage.kinesis import KinesisSink

    data_dir = Path(tempfile.mkdtemp(prefix="streams-bench-"))
    ctx = make_context(data_dir, rate, moto_url)
    kinesis = boto3.client(
        "kinesis", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    out = f"bench-{rate:g}-{streams}-{time.time_ns()}"
    kinesis.create_stream(StreamName=out, ShardCount=1)
    per_stream: list[list[float]] = [[] for _ in range(streams)]
    sizes: list[int] = []
    failures: list[str] = []
    for i in range(streams):
        OPERATIONS["CreateStreamProcessor"](
            {
                "Name": f"cam{i}",
                "Input": {
                    "KinesisVideoStream": {"Arn": f"arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam{i}/1"}
                },
                "Output": {"KinesisDataStream": {"Arn": f"arn:aws:kinesis:us-east-1:123456789012:stream/{out}"}},
                "RoleArn": "arn:aws:iam::123456789012:role/bench",
                "Settings": {"FaceSearch": {"CollectionId": "bench"}},
            },
            ctx,
        )
        OPERATIONS["StartStreamProcessor"]({"Name": f"cam{i}"}, ctx)

    def one(i: int) -> None:
        sink = TimedSink(
            KinesisSink(kinesis, f"arn:aws:kinesis:us-east-1:123456789012:stream/{out}", f"cam{i}"),
            per_stream[i],
            sizes,
        )
        try:
            run_stream(f"cam{i}", 1, ctx, open_source(str(clip)), sink)
        except SourceError as exc:
            if "ended" not in str(exc):
                failures.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - reported in the table
            failures.append(f"{type(exc).__name__}: {exc}")

    warm_up(ctx, clip)  # models loaded and run once before the clock starts (a running server has them)
    cpu0 = time.process_time()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu0
    lags = [lag for s in per_stream for lag in s]
    firsts = [statistics.median(s[: max(1, len(s) // 3)]) for s in per_stream if s]
    lasts = [statistics.median(s[-max(1, len(s) // 3) :]) for s in per_stream if s]
    thirds = (max(firsts, default=float("nan")), max(lasts, default=float("nan")))
    return Run(
        rate, streams, float(seconds), cpu, lags, thirds, len(lags), statistics.fmean(sizes) if sizes else 0.0, failures
    )


def warm_up(ctx, clip: Path) -> None:
    import av

    with av.open(str(clip)) as src:
        rgb = next(src.decode(video=0)).to_ndarray(format="rgb24")
    for face in ctx.engine.detect(rgb):
        ctx.engine.embed(rgb, face)


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cost_per_stream_hour(r: Run, memory_mb: int) -> dict[str, float]:
    """One consumer function per processor, invoked back to back for the hour (15-minute runs)."""
    lambda_cost = memory_mb / 1024 * 3600 * LAMBDA_GB_S + (3600 / (LAMBDA_MAX_S - 60)) * LAMBDA_REQUEST
    records_per_hour = r.records / (r.video_s * r.streams) * 3600
    units = max(1, -(-int(r.record_bytes) // 25_600))
    kds = records_per_hour * units * KDS_PUT_UNIT
    return {"lambda": lambda_cost, "kinesis_puts": kds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="2,4", help="sampling rates to compare (frames analysed per second)")
    parser.add_argument("--seconds", type=int, default=45, help="seconds of 720p30 video per run")
    parser.add_argument("--max-streams", type=int, default=4)
    parser.add_argument("--cpu", type=int, default=None, help="the core to pin to (default: the last one)")
    parser.add_argument("--memory", type=int, default=2048, help="the consumer function's MB (the stack's memorySize)")
    args = parser.parse_args()

    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    clip = camera_file(args.seconds)
    port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    moto_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        load = os.getloadavg()[0]
        print(
            f"720p 30 fps, {args.seconds} s of video per stream, pinned to core {cpu} of {os.cpu_count()}, "
            f"load {load:.1f}"
        )
        print(
            f"{'rate':>5} {'streams':>7} {'CPU/stream':>10} {'records':>7} {'lag p50':>8} {'p95':>6} {'max':>6} "
            f"{'1st/last third':>15}  sustained"
        )
        best: dict[float, Run] = {}
        singles: dict[float, Run] = {}
        for rate in [float(x) for x in args.rates.split(",")]:
            for n in range(1, args.max_streams + 1):
                r = run(rate, n, clip, args.seconds, moto_url)
                if n == 1:
                    singles[rate] = r
                print(
                    f"{rate:>5g} {n:>7} {r.cpu_per_stream:>9.0%} {r.records:>7} {r.p(0.5):>7.2f}s {r.p(0.95):>5.2f}s "
                    f"{max(r.lags, default=float('nan')):>5.2f}s {r.thirds[0]:>6.2f}/{r.thirds[1]:<6.2f}s  "
                    f"{'yes' if r.sustained else 'NO'}{'  ' + '; '.join(r.failures[:2]) if r.failures else ''}",
                    flush=True,
                )
                if not r.sustained:
                    break
                best[rate] = r
        print(
            f"\nCost per stream-hour on AWS (consumer at {args.memory} MB, arm64) against Rekognition "
            f"${REKOGNITION_PER_MIN}/min:"
        )
        for rate, r in singles.items():
            parts = cost_per_stream_hour(r, args.memory)
            total = sum(parts.values())
            # The smallest function that holds this process (peak RSS + 25%) and gives the stream its CPU + 25%.
            need = max(peak_rss_mb(), r.cpu_per_stream * VCPU_MB) * 1.25
            min_mb = max(128, -(-int(need) // 64) * 64)
            small = cost_per_stream_hour(r, min_mb)
            kvs = clip.stat().st_size / args.seconds * 3600 / 1e9 * KVS_CONSUMED_GB
            rek = REKOGNITION_PER_MIN * 60
            print(
                f"  {rate:g} fps: Lambda ${parts['lambda']:.4f} + Kinesis PUTs ${parts['kinesis_puts']:.4f} "
                f"= ${total:.4f} (+ KVS GetMedia ${kvs:.4f}, + a shard-hour ${KDS_SHARD_HOUR} shared by all "
                "processors) "
                f"vs Rekognition ${rek:.2f}: {rek / total:.0f}x less; at {min_mb} MB (peak RSS {peak_rss_mb():.0f} MB, "
                f"CPU {r.cpu_per_stream:.0%} of a vCPU, each +25%): ${sum(small.values()):.4f}"
            )
            print(
                f"        streams per core: sustained here {best[rate].streams if rate in best else 0} "
                "(a core shared with "
                f"other processes at load {os.getloadavg()[0]:.1f}); by CPU, a dedicated core at 80%: "
                f"{int(0.8 / r.cpu_per_stream)}"
            )
    finally:
        moto.terminate()
        moto.wait(10)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
