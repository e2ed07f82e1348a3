"""The shard fan-out client: ``LambdaShards``, the ``ShardSearcher`` the search functions' Context
gets from the composition root (``facebank/wiring.py``) when the stack deploys shard functions.
It invokes the shard-search function (``facebank.aws.shard_search``) once per shard; the event and
answer formats, and why failure is never a partial result, are described there.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from facebank.aws.observability import logger
from facebank.search.shards import ShardAnswer, ShardFetch, ShardQuery
from facebank.settings import Settings
from facebank.storage.errors import SegmentNotFound, ShardFailed, ShardThrottled

THROTTLED = {"TooManyRequestsException", "ThrottlingException", "EC2ThrottledException"}
ATTEMPTS = 3  # per shard (botocore's own retries are off: this loop is the only one)
RETRY_BUDGET_S = 15.0  # no new attempt after this long: the answer must beat API Gateway's 29 s
READ_TIMEOUT_S = 11.0  # the shard functions' timeout is 10 s (infra/shards.py)


Invoke = Callable[..., dict]  # lambda_client.invoke(FunctionName=..., Payload=...) -> its response
T = TypeVar("T")


class LambdaShards:
    """``facebank.search.shards.ShardSearcher`` over the shard-search function: one synchronous
    invocation per shard, at most ``concurrency`` in flight."""

    def __init__(
        self, invoke: Invoke, function_prefix: str, *, slots: int = 1, concurrency: int = 64, attempts: int = ATTEMPTS
    ):
        self.invoke = invoke
        self.function_prefix = function_prefix
        self.slots = max(1, slots)
        self.attempts = attempts
        self.pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="shard")

    @classmethod
    def from_settings(cls, settings: Settings) -> LambdaShards:
        import boto3
        from botocore.config import Config

        if not settings.shard_function:
            raise ValueError("FACEBANK_SHARD_FUNCTION is not set: there is no shard function to fan out to")
        config = Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=max(10, settings.shard_concurrency),
            connect_timeout=2,
            read_timeout=READ_TIMEOUT_S,
        )
        client = boto3.client("lambda", region_name=settings.region, config=config)
        return cls(
            client.invoke,
            settings.shard_function,
            slots=settings.shard_slots,
            concurrency=settings.shard_concurrency,
        )

    def function_for(self, collection_id: str, kind: str, shard: int) -> str:
        """The shard function that answers this shard: the same one for the same shard of the same
        collection every time, so its environments keep that shard's segments warm (Lambda routes
        an invocation to any environment of a function, so affinity must come from the name).
        Collections start at different slots, so their shards spread over all functions."""
        start = zlib.crc32(f"{kind}/{collection_id}".encode())
        return f"{self.function_prefix}{(start + shard) % self.slots}"

    def search(self, queries: list[ShardQuery]) -> list[ShardAnswer]:
        if len(queries) == 1:
            return [self._one(queries[0])]
        # list() waits for every shard and re-raises the first failure: no partial answer.
        return list(self.pool.map(self._one, queries))

    def fetch(self, requests: list[ShardFetch]) -> dict[str, Any]:
        import numpy as np

        def one(sf: ShardFetch) -> dict[str, Any]:
            event = {"collection_id": sf.collection_id, "kind": sf.kind, "shard": sf.shard,
                     "segments": list(sf.segments), "fetch": list(sf.rows)}  # fmt: skip
            found = self._invoke(sf.collection_id, sf.kind, sf.shard, event, _vectors)
            return {row: np.asarray(v, dtype=np.float32) for row, v in found.items()}

        out: dict[str, Any] = {}
        for found in self.pool.map(one, requests):
            for row, v in found.items():
                out.setdefault(row, v)
        return out

    def _one(self, sq: ShardQuery) -> ShardAnswer:
        event = {
            "collection_id": sq.collection_id,
            "kind": sq.kind,
            "shard": sq.shard,
            "segments": list(sq.segments),
            "query": sq.query.tolist(),
            "want": sq.want,
            "min_score": sq.min_score,
        }
        return self._invoke(sq.collection_id, sq.kind, sq.shard, event, _answer)

    def _invoke(self, collection_id: str, kind: str, shard: int, event: dict, parse: Callable[[dict], T | None]) -> T:
        payload = json.dumps(event).encode()
        function = self.function_for(collection_id, kind, shard)
        throttled = False
        started = time.monotonic()
        for attempt in range(self.attempts):
            if attempt:
                if time.monotonic() - started > RETRY_BUDGET_S:
                    break
                time.sleep(random.uniform(0.05, min(1.0, 0.1 * 4**attempt)))  # jittered: throttling eases
            try:
                response = self.invoke(FunctionName=function, InvocationType="RequestResponse", Payload=payload)
            except Exception as exc:  # noqa: BLE001 - every failure is retried, then named below
                throttled = _error_code(exc) in THROTTLED
                logger.warning("shard invocation failed", extra={"attempt": attempt, "throttled": throttled})
                continue
            answer = parse(response)
            if answer is not None:
                return answer
            throttled = False
        if throttled:
            raise ShardThrottled(f"shard {shard} of {collection_id!r} throttled")
        raise ShardFailed(f"shard {shard} of {collection_id!r} gave no answer")


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _payload(response: dict) -> Any:
    """The function's JSON answer; None when the invocation failed (function error, not JSON);
    raises SegmentNotFound when the shard says a segment is gone."""
    body: Any = response.get("Payload")
    raw: bytes = body.read() if hasattr(body, "read") else (body or b"")
    if response.get("FunctionError"):
        logger.warning("shard function error", extra={"error": raw[:500].decode(errors="replace")})
        return None
    try:
        doc = json.loads(raw or b"null")
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("error") == "SegmentNotFound":
        raise SegmentNotFound("a segment of the shard is gone")
    if not isinstance(doc, dict):
        logger.warning("shard answer unusable", extra={"payload": raw[:200].decode(errors="replace")})
        return None
    return doc


def _answer(response: dict) -> ShardAnswer | None:
    doc = _payload(response)
    try:
        rows, scores, complete = doc["rows"], doc["scores"], doc["complete"]
        if not (isinstance(rows, list) and isinstance(scores, list) and len(rows) == len(scores)):
            raise ValueError("rows and scores do not match")
        return ShardAnswer([str(r) for r in rows], [float(s) for s in scores], bool(complete))
    except (ValueError, KeyError, TypeError):
        logger.warning("shard answer unusable", extra={"keys": sorted(doc) if isinstance(doc, dict) else None})
        return None


def _vectors(response: dict) -> dict[str, list[float]] | None:
    doc = _payload(response)
    found = doc.get("vectors") if isinstance(doc, dict) else None
    if not isinstance(found, dict) or not all(isinstance(v, list) for v in found.values()):
        return None
    return found
