"""The video job store and job results contract (ports.JobStore, ports.JobResults), run against
every adapter set of the storage suite (conftest.stores)."""

from __future__ import annotations

import threading

import pytest

from facebank.storage import JobExists, JobLimit, JobRecord, JobResults, JobStore, ResultNotFound


@pytest.fixture
def jobs(stores) -> JobStore:
    if not isinstance(stores.jobs, JobStore):
        pytest.skip(f"the {stores.kind} adapters have no video job store on this branch")
    return stores.jobs


@pytest.fixture
def results(stores) -> JobResults:
    if not isinstance(stores.results, JobResults):
        pytest.skip(f"the {stores.kind} adapters have no video job results on this branch")
    return stores.results


def job(job_id: str, **kw) -> JobRecord:
    defaults = dict(
        api="StartFaceSearch",
        status="IN_PROGRESS",
        video={"S3Object": {"Bucket": "videos", "Name": "clip.mp4", "Version": "v1"}},
        params={"CollectionId": "c1", "FaceMatchThreshold": 80.0, "pack": "open", "sample_fps": 5.0},
        created=1_700_000_000.5,
        job_tag="tag-1",
        notification_channel={"SNSTopicArn": "arn:aws:sns:us-east-1:123456789012:t", "RoleArn": "arn:r"},
    )
    return JobRecord(job_id=job_id, **{**defaults, **kw})


def test_create_and_get_round_trip(jobs):
    assert jobs.get_job("a" * 32) is None
    jobs.create_job(job("a" * 32), max_active=20)
    got = jobs.get_job("a" * 32)
    want = job("a" * 32)
    assert (got.job_id, got.api, got.status, got.video, got.params, got.created) == (
        want.job_id,
        want.api,
        "IN_PROGRESS",
        want.video,
        want.params,
        want.created,
    )
    assert (got.job_tag, got.notification_channel) == (want.job_tag, want.notification_channel)
    assert (got.status_message, got.video_metadata, got.segments_total, got.segments_done, got.result_count) == (
        None,
        None,
        0,
        frozenset(),
        0,
    )
    assert got.updated > 0


def test_optional_fields_stay_absent(jobs):
    jobs.create_job(job("j1", job_tag=None, notification_channel=None, api="StartFaceDetection"), 20)
    got = jobs.get_job("j1")
    assert (got.job_tag, got.notification_channel, got.api) == (None, None, "StartFaceDetection")


def test_a_job_id_is_taken_once(jobs):
    jobs.create_job(job("j1"), 20)
    with pytest.raises(JobExists):
        jobs.create_job(job("j1", api="StartFaceDetection"), 20)
    assert jobs.get_job("j1").api == "StartFaceSearch"
    assert [j.job_id for j in jobs.active_jobs()] == ["j1"]


def test_plan_and_segments(jobs):
    jobs.create_job(job("j1"), 20)
    metadata = {"Codec": "h264", "DurationMillis": 250_000, "FrameRate": 29.97, "ColorRange": "LIMITED"}
    jobs.plan_job("j1", metadata, 3)
    got = jobs.get_job("j1")
    assert (got.video_metadata, got.segments_total) == (metadata, 3)
    assert jobs.segment_done("j1", 2) == (1, 3)
    assert jobs.segment_done("j1", 2) == (1, 3)  # a retried segment counts once
    assert jobs.segment_done("j1", 0) == (2, 3)
    assert jobs.get_job("j1").segments_done == frozenset({0, 2})
    jobs.plan_job("j1", metadata, 3)  # planning again (a resumed job) keeps the segments done
    assert jobs.get_job("j1").segments_done == frozenset({0, 2})


def test_concurrent_segment_done_loses_none(jobs):
    jobs.create_job(job("j1"), 20)
    jobs.plan_job("j1", {"DurationMillis": 1}, 12)
    threads = [threading.Thread(target=jobs.segment_done, args=("j1", k)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert jobs.get_job("j1").segments_done == frozenset(range(12))


def test_finish_once(jobs):
    jobs.create_job(job("j1"), 20)
    assert jobs.finish_job("j1", "SUCCEEDED", None, 1234) is True
    assert jobs.finish_job("j1", "FAILED", "late", 0) is False  # the first ending stands
    got = jobs.get_job("j1")
    assert (got.status, got.status_message, got.result_count) == ("SUCCEEDED", None, 1234)
    assert jobs.finish_job("missing", "FAILED", "x", 0) is False
    jobs.plan_job("j1", {"DurationMillis": 9}, 9)  # a finished job is not re-planned
    assert jobs.get_job("j1").segments_total == 0


def test_failed_job_keeps_its_message(jobs):
    jobs.create_job(job("j1"), 20)
    assert jobs.finish_job("j1", "FAILED", "The file is truncated", 0)
    got = jobs.get_job("j1")
    assert (got.status, got.status_message) == ("FAILED", "The file is truncated")


def test_limit_counts_jobs_in_progress_only(jobs):
    for i in range(3):
        jobs.create_job(job(f"j{i}", created=1_700_000_000.0 + i), max_active=3)
    with pytest.raises(JobLimit):
        jobs.create_job(job("j3"), max_active=3)
    assert jobs.get_job("j3") is None
    assert jobs.finish_job("j1", "FAILED", "x", 0)  # frees its slot
    jobs.create_job(job("j3"), max_active=3)
    assert sorted(j.job_id for j in jobs.active_jobs()) == ["j0", "j2", "j3"]


def test_limit_holds_under_concurrent_creates(jobs):
    outcomes: list[str] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        try:
            jobs.create_job(job(f"j{i:02d}"), max_active=5)
            result = "created"
        except JobLimit:
            result = "limited"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created"] * 5 + ["limited"] * 7
    assert len(jobs.active_jobs()) == 5


def test_finish_is_atomic_under_races(jobs):
    jobs.create_job(job("j1"), 20)
    wins: list[bool] = []
    threads = [
        threading.Thread(target=lambda s=s: wins.append(jobs.finish_job("j1", s, None, 0)))
        for s in ("SUCCEEDED", "FAILED") * 4
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    # The slot was freed exactly once: the limit still allows exactly one more job at max 1.
    jobs.create_job(job("j2"), max_active=1)
    with pytest.raises(JobLimit):
        jobs.create_job(job("j3"), max_active=1)


def test_results_put_get_replace_delete(results):
    with pytest.raises(ResultNotFound):
        results.get("j1", "TIMESTAMP-000000.json")
    results.put("j1", "TIMESTAMP-000000.json", b"[1]")
    results.put("j1", "segment-00000.json", b"{}")
    assert results.get("j1", "TIMESTAMP-000000.json") == b"[1]"
    results.put("j1", "TIMESTAMP-000000.json", b"[1, 2]")  # a retried step replaces its blob
    assert results.get("j1", "TIMESTAMP-000000.json") == b"[1, 2]"
    results.put("j2", "TIMESTAMP-000000.json", b"[]")
    results.delete_job("j1")
    results.delete_job("j1")  # idempotent
    with pytest.raises(ResultNotFound):
        results.get("j1", "segment-00000.json")
    assert results.get("j2", "TIMESTAMP-000000.json") == b"[]"


def test_results_readers_never_see_a_torn_blob(results):
    big = [bytes([i]) * 300_000 for i in range(1, 4)]
    results.put("j1", "page.json", big[0])
    written = threading.Event()
    reads: list[bool] = []

    def read() -> None:
        while not written.is_set():
            data = results.get("j1", "page.json")
            reads.append(data in big)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(12):
        results.put("j1", "page.json", big[i % 3])
    written.set()
    reader.join()
    assert reads and all(reads)
