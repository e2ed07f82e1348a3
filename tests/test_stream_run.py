"""The stream processor loop (operations.stream_run.run_stream) over the SQLite store with a real
clip read by engine.stream_media, and the Kinesis sink (storage.kinesis) against moto and a
stubbed partial failure. The whole runtime through `facebank serve`: tests/test_streams_server.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from support import SHARED, embedded_ctx, serialised_moto

from facebank.engine.stream_media import Fragment, SourceError, open_source
from facebank.operations import OPERATIONS
from facebank.operations.stream_run import run_stream
from facebank.storage.kinesis import KinesisSink, KinesisWriteError

CLIP = SHARED / "videos" / "intel_head-pose-face-detection-female-and-male.mp4"  # 2 faces, 4.5 s, 12.5 fps
KVS = "arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam/1700000000000"
KDS = "arn:aws:kinesis:us-east-1:123456789012:stream/out"


def require_clip() -> Path:
    if not CLIP.is_file():
        pytest.skip(f"{CLIP.name} not found in {CLIP.parent} (set FACEBANK_SHARED to the shared/ folder)")
    return CLIP


class ListSink:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def put(self, records: list[dict]) -> None:
        self.records += records


class Uncloseable:
    """One source read by two runs in turn (run_stream closes what it is given when it ends)."""

    def __init__(self, fragments: Iterator[Fragment]):
        self.fragments = fragments

    def __iter__(self):
        return self

    def __next__(self) -> Fragment:
        return next(self.fragments)


class Yield:
    """should_yield: True once ``after`` fragments have been asked for."""

    def __init__(self, after: int):
        self.calls, self.after = 0, after

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls > self.after


@pytest.fixture
def ctx(model_env, tmp_path):
    ctx = embedded_ctx(tmp_path / "data")
    OPERATIONS["CreateCollection"]({"CollectionId": "people"}, ctx)
    OPERATIONS["CreateStreamProcessor"](
        {
            "Name": "door",
            "Input": {"KinesisVideoStream": {"Arn": KVS}},
            "Output": {"KinesisDataStream": {"Arn": KDS}},
            "RoleArn": "arn:aws:iam::000000000000:role/r",
            "Settings": {"FaceSearch": {"CollectionId": "people"}},
        },
        ctx,
    )
    ctx.start_stream_processor = lambda name: None  # the test runs the loop itself
    OPERATIONS["StartStreamProcessor"]({"Name": "door"}, ctx)
    return ctx


def test_a_run_resumed_from_its_checkpoint_continues_its_tracks_and_sampling(ctx):
    fragments = Uncloseable(open_source(str(require_clip()), realtime=False))
    store = ctx.storage.streams
    session = store.get("door").session
    first, second = ListSink(), ListSink()
    assert run_stream("door", session, ctx, fragments, first, should_yield=Yield(2)) == "yield"
    assert store.get("door").status == "RUNNING"
    checkpoint = store.get_checkpoint("door")
    tracker = checkpoint["analyzer"]["tracker"]
    assert checkpoint["session"] == session and checkpoint["fragment"].isdigit()
    assert tracker["next_index"] == 2 and len(tracker["tracks"]) == 2  # the clip's two people
    # Picked up from the checkpoint (as after a restart or a hand-over): the same two tracks go on.
    with pytest.raises(SourceError, match="ended after 4.4 s"):
        run_stream("door", session, ctx, fragments, second)
    assert store.get_checkpoint("door")["analyzer"]["tracker"]["next_index"] == 2
    records = first.records + second.records
    times = [
        r["InputInformation"]["KinesisVideo"]["ProducerTimestamp"]
        + r["InputInformation"]["KinesisVideo"]["FrameOffsetInSeconds"]
        for r in records
    ]
    gaps = [round(b - a, 2) for a, b in zip(times, times[1:], strict=False)]
    assert len(records) == 18 and set(gaps) == {0.24, 0.32}  # 4 fps on a 12.5 fps clip, across both runs
    assert all(
        len(r["FaceSearchResponse"]) == 2 and not any(f["MatchedFaces"] for f in r["FaceSearchResponse"])
        for r in records
    )


NO_FACES = SHARED / "videos" / "intel_car-detection.mp4"  # cars on a road: no face (docs/video.md)


def test_a_frame_without_a_face_still_has_its_record_with_an_empty_face_search_response(ctx):
    # The guide: "For each analyzed frame, Amazon Rekognition Video outputs a JSON frame record".
    if not NO_FACES.is_file():
        pytest.skip(f"{NO_FACES.name} not found in {NO_FACES.parent}")
    sink = ListSink()
    session = ctx.storage.streams.get("door").session
    fragments = open_source(str(NO_FACES), realtime=False)
    assert run_stream("door", session, ctx, fragments, sink, should_yield=Yield(3)) == "yield"
    times = [
        r["InputInformation"]["KinesisVideo"]["ProducerTimestamp"]
        + r["InputInformation"]["KinesisVideo"]["FrameOffsetInSeconds"]
        for r in sink.records
    ]
    assert len(sink.records) >= 8 and all(0.2 <= b - a <= 0.35 for a, b in zip(times, times[1:], strict=False))
    assert all(r["FaceSearchResponse"] == [] for r in sink.records)


def test_stop_lost_lease_and_max_duration(ctx):
    store = ctx.storage.streams
    session = store.get("door").session
    clip = str(require_clip())
    # Stop: STOPPING -> STOPPED by the runtime, before the next fragment is analysed.
    OPERATIONS["StopStreamProcessor"]({"Name": "door"}, ctx)
    sink = ListSink()
    assert run_stream("door", session, ctx, open_source(clip, realtime=False), sink) == "stopped"
    assert store.get("door").status == "STOPPED" and sink.records == []
    # Started again: a runtime still working for the old session stops at once.
    OPERATIONS["StartStreamProcessor"]({"Name": "door", "StopSelector": {"MaxDurationInSeconds": 2}}, ctx)
    assert run_stream("door", session, ctx, open_source(clip, realtime=False), sink) == "lost"
    # MaxDurationInSeconds on the runtime's clock: a fake one, a second per call.
    ticks = iter(range(1000))
    why = run_stream("door", session + 1, ctx, open_source(clip, realtime=False), sink, clock=lambda: next(ticks))
    assert why == "stopped" and store.get("door").status == "STOPPED"
    assert 0 < len(sink.records) <= 8  # at most 2 fragments analysed


# --- the sink


@pytest.fixture
def kinesis():
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        serialised_moto(mp)
        with mock_aws():
            client = boto3.client("kinesis", region_name="us-east-1")
            client.create_stream(StreamName="out", ShardCount=1)
            yield client


def read_all(client) -> list[dict]:
    shard = client.list_shards(StreamName="out")["Shards"][0]["ShardId"]
    iterator = client.get_shard_iterator(StreamName="out", ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = client.get_records(ShardIterator=iterator["ShardIterator"], Limit=10000)["Records"]
    return [json.loads(r["Data"]) for r in records]


def test_sink_writes_every_record_in_batches_of_at_most_500(kinesis):
    calls = []
    kinesis.meta.events.register("provide-client-params.kinesis.PutRecords", lambda params, **_: calls.append(params))
    KinesisSink(kinesis, KDS, "door").put([{"n": i} for i in range(1201)])
    assert [len(c["Records"]) for c in calls] == [500, 500, 201]
    assert {r["PartitionKey"] for c in calls for r in c["Records"]} == {"door"}
    assert read_all(kinesis) == [{"n": i} for i in range(1201)]


def test_sink_retries_only_the_failed_entries_then_gives_up_with_the_reason():
    client = boto3.client("kinesis", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    slept: list[float] = []
    sink = KinesisSink(client, KDS, "door", attempts=3, sleep=slept.append)
    throttled = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard"}
    ok = {"SequenceNumber": "1", "ShardId": "shardId-000000000000"}
    with Stubber(client) as stub:
        stub.add_response("put_records", {"FailedRecordCount": 1, "Records": [ok, throttled, ok]})
        stub.add_response(
            "put_records",
            {"Records": [ok]},
            {"StreamARN": KDS, "Records": [{"Data": b'{"n":1}', "PartitionKey": "door"}]},
        )
        sink.put([{"n": 0}, {"n": 1}, {"n": 2}])
        stub.assert_no_pending_responses()
        for _ in range(3):
            stub.add_response("put_records", {"FailedRecordCount": 1, "Records": [throttled]})
        with pytest.raises(KinesisWriteError, match="1 record.* after 3 attempts: ProvisionedThroughputExceeded"):
            sink.put([{"n": 3}])
    assert slept == [0.1, 0.1, 0.2]  # backoff doubles per attempt, bounded


def test_sink_refuses_a_record_over_kinesis_limit():
    with pytest.raises(KinesisWriteError, match="1 MB"):
        KinesisSink(object(), KDS, "door").put([{"x": "a" * (1024 * 1024)}])


# --- the serve settings


def test_stream_sources_from_repeated_flags_or_the_environment():
    import argparse

    from facebank.settings import Settings, add_flags, with_flags
    from facebank.stream_runner import parse_streams

    parser = argparse.ArgumentParser()
    add_flags(parser)
    env = Settings.from_env({"FACEBANK_STREAMS": "door=rtsp://cam/1, yard=/clips/yard.mp4"})
    assert parse_streams(env.streams) == {"door": "rtsp://cam/1", "yard": "/clips/yard.mp4"}
    args = parser.parse_args(["--stream", "door=rtsp://u:p@cam/a?x=1,2", "--stream", "gate=http://h/live.m3u8"])
    flagged = with_flags(env, args)  # flags replace the variable's list; a flag's URL may hold a comma
    assert parse_streams(flagged.streams) == {"door": "rtsp://u:p@cam/a?x=1,2", "gate": "http://h/live.m3u8"}
    with pytest.raises(ValueError, match="expected NAME=URL"):
        parse_streams(["door"])


def test_a_source_that_cannot_be_opened_says_which_without_its_password(tmp_path):
    from support import free_port

    with pytest.raises(SourceError) as refused:
        next(open_source(f"rtsp://admin:secret@127.0.0.1:{free_port()}/stream1", timeout_s=2))
    assert "cannot be opened" in str(refused.value) and "secret" not in str(refused.value)
    assert "rtsp://127.0.0.1:" in str(refused.value)
    with pytest.raises(SourceError, match="does not exist"):
        next(open_source(str(tmp_path / "missing.mp4")))
    (tmp_path / "noise.mp4").write_bytes(b"not a video" * 100)
    with pytest.raises(SourceError, match="cannot be opened"):
        next(open_source(str(tmp_path / "noise.mp4")))


# --- the embedded runner: threads


def wait_for(check, timeout: float = 30.0):
    import time

    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)  # polling a thread's progress, bounded by the deadline
    return value


def stream_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("stream-")]


def test_runner_threads_end_on_shutdown_and_stop_and_processors_resume(ctx, kinesis):
    from facebank.stream_runner import StreamRunner

    store = ctx.storage.streams
    runner = StreamRunner(ctx, {"cam": str(require_clip())}, lambda region: kinesis, lambda url: open_source(url))
    runner.start("door")
    runner.start("door")  # once per session, however often it is called
    wait_for(lambda: store.get("door").status == "RUNNING")
    assert runner.running() == ["door"] and len(stream_threads()) == 1
    runner.stop()  # facebank serve stopping: threads end between fragments, the processor stays RUNNING
    assert stream_threads() == [] and store.get("door").status == "RUNNING"

    again = StreamRunner(ctx, {"cam": str(require_clip())}, lambda region: kinesis, lambda url: open_source(url))
    assert again.resume() == 1
    wait_for(lambda: read_all(kinesis))  # records of the resumed run
    OPERATIONS["StopStreamProcessor"]({"Name": "door"}, ctx)
    wait_for(lambda: store.get("door").status == "STOPPED", timeout=10)
    wait_for(lambda: stream_threads() == [], timeout=5)
    again.stop()


# --- network sources


class _Clip:
    """A loopback HTTP server for one file; ``stall_after`` bytes: then it stops sending (a camera
    that goes silent) without closing the connection."""

    def __init__(self, body: bytes, stall_after: int | None = None):
        import http.server
        import threading

        clip = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: clip.stall_after] if clip.stall_after else body)
                self.wfile.flush()
                if clip.stall_after:
                    clip.release.wait(30)

            def log_message(self, *args):
                pass

        self.stall_after, self.release = stall_after, threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/live.ts"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def as_mpegts(clip: Path) -> bytes:
    """The clip remuxed to MPEG-TS: what a camera or an encoder serves live over HTTP (no seeking)."""
    import io

    import av

    out = io.BytesIO()
    with av.open(str(clip)) as src, av.open(out, "w", format="mpegts") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    return out.getvalue()


def test_an_http_source_is_read_and_a_silent_one_times_out():
    body = as_mpegts(require_clip())
    served = _Clip(body)
    try:
        fragments = open_source(served.url)
        frames = 0
        with pytest.raises(SourceError, match="ended after 4.4 s"):
            for fragment in fragments:
                frames += sum(1 for _ in fragment.frames)
        assert frames == 56  # every frame of the 4.5 s clip at 12.5 fps
    finally:
        served.close()
    silent = _Clip(body, stall_after=len(body) // 2)
    try:
        with pytest.raises(SourceError, match=r"stopped after \d+\.\d s of video"):
            for fragment in open_source(silent.url, timeout_s=1):
                for _ in fragment.frames:
                    pass
    finally:
        silent.close()


def test_an_hls_source_is_read(tmp_path):
    import functools
    import http.server
    import threading

    import av

    clip = require_clip()
    with av.open(str(clip)) as src, av.open(str(tmp_path / "live.m3u8"), "w", format="hls") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/live.m3u8"
        frames = 0
        with pytest.raises(SourceError, match="ended after 4.4 s"):
            for fragment in open_source(url):
                frames += sum(1 for _ in fragment.frames)
        assert frames == 56
    finally:
        server.shutdown()
        server.server_close()


def test_start_selector_skips_fragments_before_it():
    from facebank.stream_runner import selected

    fragments = [Fragment(str(100 + i), 1000.0 + i, 1000.0 + i, []) for i in range(5)]
    by_time = selected(iter(fragments), {"KVSStreamStartSelector": {"ProducerTimestamp": 1_002_000}})
    assert [f.number for f in by_time] == ["102", "103", "104"]
    by_number = selected(iter(fragments), {"KVSStreamStartSelector": {"FragmentNumber": "103"}})
    assert [f.number for f in by_number] == ["103", "104"]
    assert len(list(selected(iter(fragments), None))) == 5
