"""The stream processor store contract (ports.StreamProcessorStore), run against every adapter
set of the storage suite (conftest.stores): conditional transitions, racing transitions with one
winner, the checkpoint lease, pagination, the limit."""

from __future__ import annotations

import threading

import pytest
from storage_helpers import list_all, run_threads

from facebank.storage import InvalidPaginationToken, StreamProcessorRecord, StreamProcessorStore
from facebank.storage.errors import StreamProcessorExists, StreamProcessorLimit


@pytest.fixture
def streams(stores) -> StreamProcessorStore:
    if not isinstance(stores.streams, StreamProcessorStore):
        pytest.skip(f"the {stores.kind} adapters have no stream processor store on this branch")
    return stores.streams


def processor(name: str, **kw) -> StreamProcessorRecord:
    defaults = dict(
        arn=f"arn:aws:rekognition:us-east-1:123456789012:streamprocessor/{name}",
        status="STOPPED",
        input_arn="arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam/1700000000000",
        output_arn="arn:aws:kinesis:us-east-1:123456789012:stream/out",
        role_arn="arn:aws:iam::123456789012:role/r",
        collection_id="c1",
        face_match_threshold=85.5,
        created=1_700_000_000.25,
        updated=1_700_000_000.25,
        tags={"team": "qa"},
        notification_sns_arn="arn:aws:sns:us-east-1:123456789012:t",
    )
    return StreamProcessorRecord(name=name, **{**defaults, **kw})


def test_create_get_round_trip(streams):
    assert streams.get("p1") is None
    streams.create(processor("p1"), 10)
    assert streams.get("p1") == processor("p1")
    assert streams.get_checkpoint("p1") is None


def test_a_name_is_taken_once(streams):
    streams.create(processor("p1"), 10)
    with pytest.raises(StreamProcessorExists):
        streams.create(processor("p1", collection_id="other"), 10)
    assert streams.get("p1").collection_id == "c1"


def test_the_limit_counts_processors_and_a_delete_frees_a_slot(streams):
    for i in range(3):
        streams.create(processor(f"p{i}"), 3)
    with pytest.raises(StreamProcessorLimit):
        streams.create(processor("p3"), 3)
    with pytest.raises(StreamProcessorExists):  # a taken name is the answer even at the limit
        streams.create(processor("p0"), 3)
    assert streams.delete("p1", ("STOPPED",))
    streams.create(processor("p3"), 3)
    assert [r.name for r in list_all(lambda t: streams.list(10, t))] == ["p0", "p2", "p3"]


def test_limit_holds_under_concurrent_creates(streams):
    made, refused = [], []
    lock = threading.Lock()

    def create(i: int) -> None:
        try:
            streams.create(processor(f"p{i:02d}"), 4)
            outcome = made
        except StreamProcessorLimit:
            outcome = refused
        with lock:
            outcome.append(i)

    run_threads(10, create)
    assert (len(made), len(refused)) == (4, 6)
    assert len(list_all(lambda t: streams.list(3, t))) == 4


def test_transition_is_conditional_on_status_and_session(streams):
    streams.create(processor("p1"), 10)
    assert streams.transition("p1", ("RUNNING",), "STOPPING") is None  # it is STOPPED
    assert streams.transition("nope", ("STOPPED",), "STARTING") is None
    started = streams.transition(
        "p1", ("STOPPED", "FAILED"), "STARTING", new_session=True, changes={"start_selector": {"K": 1}}
    )
    assert (started.status, started.session, started.start_selector) == ("STARTING", 1, {"K": 1})
    assert started.updated > processor("p1").updated
    assert streams.get("p1") == started
    assert streams.transition("p1", ("STARTING",), "RUNNING", session=0) is None  # an old session's runtime
    running = streams.transition("p1", ("STARTING",), "RUNNING", session=1)
    assert (running.status, running.session) == ("RUNNING", 1)
    failed = streams.transition("p1", ("RUNNING",), "FAILED", "the input stream disappeared", session=1)
    assert (failed.status, failed.status_message) == ("FAILED", "the input stream disappeared")
    again = streams.transition("p1", ("FAILED",), "STARTING", new_session=True)
    assert (again.status, again.status_message, again.session) == ("STARTING", None, 2)  # None clears it


def test_transition_refuses_unknown_statuses_and_fields(streams):
    streams.create(processor("p1"), 10)
    with pytest.raises(ValueError):
        streams.transition("p1", ("STOPPED",), "PAUSED")
    with pytest.raises(ValueError):
        streams.transition("p1", ("STOPPED",), "STOPPED", changes={"session": 9})
    assert streams.get("p1") == processor("p1")


def test_changes_keep_the_rest_of_the_record(streams):
    streams.create(processor("p1"), 10)
    got = streams.transition("p1", ("STOPPED",), "STOPPED", changes={"data_sharing_opt_in": True, "tags": {}})
    assert got == streams.get("p1")
    assert (got.data_sharing_opt_in, got.tags, got.collection_id, got.face_match_threshold) == (True, {}, "c1", 85.5)


def test_two_racing_transitions_have_one_winner(streams):
    for round_ in range(3):
        name = f"p{round_}"
        streams.create(processor(name), 10)
        results: list = [None] * 6

        def start(i: int, name: str = name, results: list = results) -> None:
            results[i] = streams.transition(name, ("STOPPED",), "STARTING", new_session=True)

        run_threads(6, start)
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        assert streams.get(name).session == 1 == winners[0].session


def test_checkpoint_is_a_lease_of_the_session(streams):
    streams.create(processor("p1"), 10)
    streams.transition("p1", ("STOPPED",), "STARTING", new_session=True)
    assert streams.put_checkpoint("p1", 1, {"fragment": "9100", "analyzer": {"tracks": [1, 2]}})
    assert streams.get_checkpoint("p1") == {"fragment": "9100", "analyzer": {"tracks": [1, 2]}}
    streams.transition("p1", ("STARTING",), "RUNNING", session=1)  # a transition keeps the checkpoint
    assert streams.get_checkpoint("p1") == {"fragment": "9100", "analyzer": {"tracks": [1, 2]}}
    streams.transition("p1", ("RUNNING",), "STOPPING")
    streams.transition("p1", ("STOPPING",), "STOPPED", session=1)
    streams.transition("p1", ("STOPPED",), "STARTING", new_session=True)
    assert streams.get_checkpoint("p1") is None  # a new session starts without one
    assert not streams.put_checkpoint("p1", 1, {"fragment": "9200"})  # the old session lost its lease
    assert streams.get_checkpoint("p1") is None
    assert streams.put_checkpoint("p1", 2, {"fragment": "9300"})
    assert not streams.put_checkpoint("gone", 1, {})
    assert streams.get("p1").status == "STARTING"  # a checkpoint never touches the record


def test_delete_is_conditional_and_takes_the_checkpoint(streams):
    streams.create(processor("p1"), 10)
    streams.transition("p1", ("STOPPED",), "STARTING", new_session=True)
    streams.put_checkpoint("p1", 1, {"fragment": "1"})
    assert not streams.delete("p1", ("STOPPED", "FAILED"))
    assert not streams.delete("nope", ("STOPPED",))
    streams.transition("p1", ("STARTING",), "FAILED", "no input", session=1)
    assert streams.delete("p1", ("STOPPED", "FAILED"))
    assert (streams.get("p1"), streams.get_checkpoint("p1")) == (None, None)
    assert not streams.delete("p1", ("STOPPED", "FAILED"))
    streams.create(processor("p1"), 1)  # the name and the slot are free again
    assert streams.get("p1") == processor("p1")


def test_pagination_in_name_order(streams):
    names = ["a", "B", "c.1", "c-2", "z_9", "0"]
    for name in names:
        streams.create(processor(name), 10)
    pages = []
    got = list_all(lambda t: (pages.append(t) or True) and streams.list(2, t))
    assert [r.name for r in got] == sorted(names)
    assert len(pages) == 3 and all(len(p) <= 255 for p in pages[1:])
    first, token = streams.list(10)
    assert ([r.name for r in first], token) == (sorted(names), None)
    with pytest.raises(InvalidPaginationToken):
        streams.list(2, "not-a-token")
    assert streams.list(2, streams.list(5)[1]) == ([streams.get("z_9")], None)


def test_embedded_data_dir_from_before_stream_processors_gains_the_table(tmp_path):
    """The table is added to a database at the current schema version without changing it
    (CREATE TABLE IF NOT EXISTS, as the jobs table), and processors survive a reopen (a restart)."""
    import sqlite3

    from facebank.storage import open_embedded
    from facebank.storage.sqlite import SCHEMA_VERSION

    first = open_embedded(tmp_path)
    first.metadata.close()
    db = sqlite3.connect(tmp_path / "metadata.sqlite3")
    db.execute("DROP TABLE stream_processors")  # as a data dir written before issue 26
    db.commit()
    db.close()
    again = open_embedded(tmp_path)
    again.streams.create(processor("p1"), 10)
    again.streams.transition("p1", ("STOPPED",), "STARTING", new_session=True)
    again.streams.put_checkpoint("p1", 1, {"fragment": "7"})
    again.metadata.close()
    reopened = open_embedded(tmp_path)
    assert (reopened.streams.get("p1").status, reopened.streams.get_checkpoint("p1")) == ("STARTING", {"fragment": "7"})
    reopened.metadata.close()
    db = sqlite3.connect(tmp_path / "metadata.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
