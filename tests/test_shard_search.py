"""Sharded search through the Lambda handlers: SearchFaces and SearchUsers, invoked with API
Gateway events, fan out to the shard-search function (``functions/shard_search.py``) over a
boto3 Lambda client whose Invoke is routed in-process to that handler, on DynamoDB + S3 under
moto. The answers must equal an exact search over every live vector; a shard that stays
throttled or broken fails the request (ThrottlingException / InternalServerError), never
answers from the other shards."""

from __future__ import annotations

import importlib
import io
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import boto3
import numpy as np
import pytest
from support import check_shape, serialised_moto

from facebank.aws.shard_search import ATTEMPTS
from facebank.storage.ports import FaceRecord
from facebank.validation import service_model

REGION = "us-east-1"
BUCKET = "facebank-shards-test"
PREFIX = "fbshard-"
SHARD_PREFIX = "facebank-ShardSearch"
SLOTS = 3
SHARD_ROWS = 40
DIM = 128


def _event(operation: str, body: dict) -> dict:
    return {
        "resource": f"/{operation}",
        "path": f"/{operation}",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/x-amz-json-1.1"},
        "requestContext": {"requestId": "req-1", "stage": "v1"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def call(operation: str, body: dict) -> tuple[int, dict]:
    """An API call through the operation's Lambda handler; the answer checked against botocore."""
    response = importlib.import_module(f"functions.{_snake(operation)}").handler(_event(operation, body))
    out = json.loads(response["body"])
    if response["statusCode"] == 200:
        check_shape(service_model().operation_model(operation).output_shape, out, operation)
    return response["statusCode"], out


class _Http:
    def __init__(self, status: int):
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.content = b""


@dataclass
class LambdaRoute:
    """lambda:Invoke of the shard function, answered by its handler in this process. `fault`
    decides per call whether to answer otherwise (throttle, crash, ...)."""

    calls: list[dict] = field(default_factory=list)
    fault: Callable[[dict, int], tuple[int, dict] | None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, model, params, **_):
        if model.name != "Invoke":
            return None
        from facebank.aws.runtime import LocalContext
        from functions.shard_search import handler

        function = params["url_path"].split("/")[3]  # /2015-03-31/functions/<name>/invocations
        assert function in {f"{SHARD_PREFIX}{n}" for n in range(SLOTS)}, function
        event = json.loads(params["body"])
        with self.lock:
            self.calls.append(event | {"function": function})
            n = sum(1 for c in self.calls if c["segments"] == event["segments"])
        if self.fault and (answer := self.fault(event, n)) is not None:
            return _Http(answer[0]), answer[1]
        try:
            result, error = handler(event, LocalContext(function_name=function)), None
        except Exception as exc:  # noqa: BLE001 - what Lambda reports as an unhandled function error
            result, error = {"errorMessage": str(exc), "errorType": type(exc).__name__}, "Unhandled"
        parsed = {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(result).encode())}
        if error:
            parsed["FunctionError"] = error
        return _Http(200), parsed


@pytest.fixture(scope="module")
def env():
    """moto storage, the search functions' environment (fan-out on), and a sharded collection."""
    from moto import mock_aws

    from facebank.aws import runtime
    from facebank.storage.dynamodb import TableNames, create_tables

    with pytest.MonkeyPatch.context() as mp:
        serialised_moto(mp)
        for k, v in {
            "AWS_REGION": REGION,
            "FACEBANK_VECTOR_BUCKET": BUCKET,
            "FACEBANK_TABLE_PREFIX": PREFIX,
            "FACEBANK_SHARD_FUNCTION": SHARD_PREFIX,
            "FACEBANK_SHARD_SLOTS": str(SLOTS),
            "FACEBANK_SHARD_ROWS": str(SHARD_ROWS),
            "FACEBANK_SHARD_CONCURRENCY": "4",
            "POWERTOOLS_METRICS_NAMESPACE": "facebank-test",
        }.items():
            mp.setenv(k, v)
        with mock_aws():
            session = boto3.session.Session(region_name=REGION)
            route = LambdaRoute()
            session.events.register("before-call.lambda.Invoke", route, unique_id="facebank-shard-route")
            mp.setattr(boto3, "DEFAULT_SESSION", session)
            create_tables(session.client("dynamodb"), TableNames.with_prefix(PREFIX))
            session.client("s3").create_bucket(Bucket=BUCKET)
            runtime.reset_shared_context()
            try:
                yield build_collection(runtime.shared_context(), route)
            finally:
                runtime.reset_shared_context()


@dataclass
class Collection:
    ctx: object
    route: LambdaRoute
    cid: str
    ids: list[str]
    vectors: np.ndarray  # unit rows, as stored
    live: list[int]  # rows of faces still in the collection
    users: dict[str, list[str]]  # user id -> its faces
    sent_to: dict[tuple, set[str]] = field(default_factory=dict)  # shard's segments -> functions invoked


def build_collection(ctx, route: LambdaRoute) -> Collection:
    """240 faces in 12 IndexFaces-sized segments, compacted into shards of <= 40 rows, then 2
    segments more (the tail, in no shard yet) and some faces deleted; 50 users of 2 faces each."""
    cid = "sharded"
    assert call("CreateCollection", {"CollectionId": cid})[0] == 200
    rng = np.random.default_rng(17)
    centres = rng.standard_normal((60, DIM)).astype(np.float32)
    ids, vecs = [], []

    def add(n_batches: int, tag: str) -> None:
        for b in range(n_batches):
            batch = centres[rng.integers(0, 60, 20)] + 0.6 * rng.standard_normal((20, DIM)).astype(np.float32)
            batch /= np.linalg.norm(batch, axis=1, keepdims=True)
            recs = [
                FaceRecord(f"{tag}{b:07x}-{i:04x}-4000-8000-000000000000", "0000000a-0000-4000-8000-000000000000", None,
                           {"Width": 0.5, "Height": 0.5, "Left": 0.1, "Top": 0.1}, 99.0, "6.0", None, "", 0.0)
                for i in range(20)
            ]  # fmt: skip
            ctx.index.add_faces(cid, recs, batch)
            ids.extend(r.face_id for r in recs)
            vecs.append(batch)

    add(12, "a")
    ctx.index._clock = lambda: 4e9  # every segment is old enough to compact
    ctx.index.compact(cid, min_age_s=0)
    add(2, "b")
    vectors = np.concatenate(vecs)
    gone = set(ids[3::11])
    assert call("DeleteFaces", {"CollectionId": cid, "FaceIds": sorted(gone)})[0] == 200
    live = [i for i, f in enumerate(ids) if f not in gone]
    users: dict[str, list[str]] = {}
    for u in range(50):
        user = f"user{u:02d}"
        members = [ids[i] for i in live[u * 2 : u * 2 + 2]]
        assert call("CreateUser", {"CollectionId": cid, "UserId": user})[0] == 200
        status, out = call(
            "AssociateFaces", {"CollectionId": cid, "UserId": user, "FaceIds": members, "UserMatchThreshold": 0}
        )
        assert status == 200 and len(out["AssociatedFaces"]) == 2, out
        users[user] = members
    ctx.user_index._clock = lambda: 4e9
    ctx.user_index.compact(cid, min_age_s=0)
    return Collection(ctx, route, cid, ids, vectors, live, users)


def exact(ids: list[str], vectors: np.ndarray, query: np.ndarray, k: int, exclude: str) -> list[str]:
    scores = vectors @ (query / np.linalg.norm(query))
    ranked = sorted(zip(ids, scores.tolist(), strict=True), key=lambda p: (-p[1], p[0]))
    return [i for i, _ in ranked if i != exclude][:k]


def test_collection_is_really_sharded(env):
    face_shards = env.ctx.index.shard_layout(env.cid)
    user_shards = env.ctx.user_index.shard_layout(env.cid)
    assert len(face_shards) >= 7 and len(user_shards) >= 2
    assert env.ctx.index.searcher is not None  # the fan-out, not this process


@pytest.mark.parametrize("probe", [0, 5, 77, 150, 230])
def test_search_faces_over_shards_equals_the_unsharded_search(env, probe):
    face_id = env.ids[env.live[probe % len(env.live)]]
    env.route.calls.clear()
    status, out = call("SearchFaces", {"CollectionId": env.cid, "FaceId": face_id, "MaxFaces": 25,
                                       "FaceMatchThreshold": 0})  # fmt: skip
    assert status == 200, out
    live_ids = [env.ids[i] for i in env.live]
    query = env.vectors[env.ids.index(face_id)]
    assert [m["Face"]["FaceId"] for m in out["FaceMatches"]] == exact(
        live_ids, env.vectors[env.live], query, 25, face_id
    )
    # One invocation per shard of the collection, each with its own segments, and each shard
    # always sent to the same shard function (whose environments keep it warm).
    shards = env.ctx.index.shard_layout(env.cid)
    searches = [c for c in env.route.calls if "fetch" not in c]
    assert sorted(tuple(c["segments"]) for c in searches) == sorted(tuple(s) for _, s in shards)
    # The searched face's vector came from the shards too (its segment was compacted away since it
    # was indexed, so from all of them): the search function itself read no segment.
    fetches = [c for c in env.route.calls if "fetch" in c]
    assert fetches and all(c["fetch"] == [face_id] for c in fetches)
    for c in env.route.calls:
        env.sent_to.setdefault(tuple(c["segments"]), set()).add(c["function"])
    assert all(len(functions) == 1 for functions in env.sent_to.values())
    assert len({f for functions in env.sent_to.values() for f in functions}) == SLOTS  # spread over all


def test_search_users_over_shards_equals_the_unsharded_search(env):
    user_ids = sorted(env.users)
    means = []
    for user in user_ids:
        m = env.vectors[[env.ids.index(f) for f in env.users[user]]].mean(axis=0)
        means.append(m / np.linalg.norm(m))
    env.route.calls.clear()
    status, out = call("SearchUsers", {"CollectionId": env.cid, "UserId": "user07", "MaxUsers": 12,
                                       "UserMatchThreshold": 0})  # fmt: skip
    assert status == 200, out
    expected = exact(user_ids, np.stack(means), means[7], 12, "user07")  # the user itself is left out
    assert [m["User"]["UserId"] for m in out["UserMatches"]] == expected
    searches = [c for c in env.route.calls if "fetch" not in c]
    assert {c["kind"] for c in searches} == {"users"} and len(searches) >= 2
    # The user's vector is built from its faces' vectors, fetched from the face shards.
    assert {c["kind"] for c in env.route.calls if "fetch" in c} == {"faces"}


def _search(env) -> tuple[int, dict]:
    return call("SearchFaces", {"CollectionId": env.cid, "FaceId": env.ids[env.live[0]], "MaxFaces": 10})


def _first_shard(env) -> list[str]:
    return env.ctx.index.shard_layout(env.cid)[0][1]


def test_a_throttled_shard_is_retried_then_fails_the_search_with_throttling(env):
    victim = _first_shard(env)
    throttled = (429, {"Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"}})
    env.route.fault = lambda event, n: throttled if event["segments"] == victim else None
    env.route.calls.clear()
    try:
        status, out = _search(env)
    finally:
        env.route.fault = None
    assert status == 400 and out["__type"] == "ThrottlingException", out
    assert sum(1 for c in env.route.calls if c["segments"] == victim and "fetch" not in c) in (0, ATTEMPTS)
    assert sum(1 for c in env.route.calls if c["segments"] == victim) >= ATTEMPTS


def test_a_failing_shard_fails_the_search_never_a_partial_answer(env):
    victim = _first_shard(env)
    crash = (200, {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(b'{"errorMessage":"x"}')})

    def fault(event, n):
        if event["segments"] == victim:
            return 200, dict(crash[1], Payload=io.BytesIO(b'{"errorMessage":"Task timed out"}'))
        return None

    env.route.fault = fault
    try:
        status, out = _search(env)
    finally:
        env.route.fault = None
    assert status == 500 and out["__type"] == "InternalServerError", out


def test_a_shard_that_fails_once_is_retried_and_the_answer_is_whole(env):
    victim = _first_shard(env)
    expected = _search(env)
    garbage = (200, {"StatusCode": 200, "Payload": io.BytesIO(b'{"rows": ["x"]}')})
    env.route.fault = lambda event, n: garbage if event["segments"] == victim and n == 1 else None
    env.route.calls.clear()
    try:
        got = _search(env)
    finally:
        env.route.fault = None
    assert got == expected and got[0] == 200
    assert sum(1 for c in env.route.calls if c["segments"] == victim) >= 2


def test_a_segment_compacted_away_mid_search_is_planned_again(env):
    victim = _first_shard(env)
    expected = _search(env)
    gone = (200, {"StatusCode": 200, "Payload": io.BytesIO(b'{"error": "SegmentNotFound"}')})
    env.route.fault = lambda event, n: gone if event["segments"] == victim and n == 1 else None
    try:
        got = _search(env)
    finally:
        env.route.fault = None
    assert got == expected


def test_embedded_search_uses_the_same_shards_in_one_process(env, tmp_path):
    """`facebank serve`'s path: the same stored map and merge, shards searched in this process."""
    from facebank.search.index import VectorIndex

    local = VectorIndex(env.ctx.index.vectors, env.ctx.index.metadata, shard_rows=SHARD_ROWS)
    assert local.searcher is None
    face_id = env.ids[env.live[9]]
    env.route.calls.clear()
    got = local.search_by_face_id(env.cid, face_id, 20)
    assert not env.route.calls
    assert got == env.ctx.index.search_by_face_id(env.cid, face_id, 20)
