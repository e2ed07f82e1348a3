"""The stream consumer client: ``invoke`` hands a stream processor's session to the consumer
function (``functions/stream_consumer.py``, ``facebank.aws.streams``) with an asynchronous Lambda
invocation, and ``start`` is ``Context.start_stream_processor`` of ``aws_context``
(``facebank/wiring.py``): StartStreamProcessor's hand-over of a processor it just made STARTING.

The consumer uses ``invoke`` too, to hand the session over to its next invocation before its own
15 minutes run out. The event is ``{"name", "session", "hop"}``: ``hop`` counts the invocations of
one session (0 for Start's), so a late duplicate of an earlier invocation never takes the session
back (facebank.aws.streams, the lease). Used by the composition root and the consumer; it imports
no handler.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from facebank.settings import Settings

if TYPE_CHECKING:
    from facebank.storage.ports import StreamProcessorStore

_clients: dict[str, Any] = {}


def lambda_client(settings: Settings) -> Any:
    """The Lambda client of this execution environment (boto3's endpoint resolution)."""
    if settings.region not in _clients:
        import boto3
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=15)
        _clients[settings.region] = boto3.client("lambda", region_name=settings.region, config=config)
    return _clients[settings.region]


def consumer_function(settings: Settings) -> str:
    function = settings.stream_consumer_function
    if not function:
        raise RuntimeError(
            "no stream consumer configured for this function: FACEBANK_STREAM_CONSUMER_FUNCTION is not set"
        )
    return function


def invoke(settings: Settings, name: str, session: int, hop: int) -> None:
    """One asynchronous invocation of the consumer for the processor's session (Lambda queues the
    event and answers 202; its own retries and the on-failure destination take it from there)."""
    event = {"name": name, "session": session, "hop": hop}
    response = lambda_client(settings).invoke(
        FunctionName=consumer_function(settings),
        InvocationType="Event",
        Payload=json.dumps(event, separators=(",", ":")).encode(),
    )
    status = response.get("StatusCode")
    if status != 202:
        raise RuntimeError(f"Lambda did not accept the stream consumer's invocation (status {status})")


def start(settings: Settings, store: StreamProcessorStore, name: str) -> None:
    """Context.start_stream_processor on AWS: the consumer's first invocation for the session
    Start has just opened (read back from the record; a processor deleted since needs none)."""
    consumer_function(settings)  # a missing configuration fails Start before anything else
    rec = store.get(name)
    if rec is None:
        return
    invoke(settings, name, rec.session, 0)
