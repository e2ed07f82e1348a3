"""Operations: plain functions from a validated request dict to a response dict.

The registry is shared by the local server and the Lambda handlers, so both transports run the
same code. ``Context`` carries what an operation needs (settings, storage, the face engine, an S3
client), each opened on first use so a process only loads what it uses: DetectFaces never opens
storage, and a collection listing never loads a model (nor imports onnxruntime). Which storage a
Context opens is decided by whoever builds it (``facebank.wiring``), never read here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from facebank.engine import packs
from facebank.engine.packs import Pack
from facebank.settings import Settings
from facebank.storage import MetadataStore, RequestLedger, Storage

if TYPE_CHECKING:
    from facebank.engine import FaceEngine
    from facebank.search import UserVectorIndex, VectorIndex
    from facebank.search.shards import ShardSearcher
    from facebank.storage.celebrities import CelebrityGallery, CelebrityIndex

Request = dict[str, Any]
Response = dict[str, Any]
Operation = Callable[[Request, "Context"], Response]

OPERATIONS: dict[str, Operation] = {}


def operation(name: str) -> Callable[[Operation], Operation]:
    def register(fn: Operation) -> Operation:
        OPERATIONS[name] = fn
        return fn

    return register


def _no_storage() -> Storage:
    raise RuntimeError("this Context has no storage (build it with facebank.wiring)")


def _no_celebrities() -> CelebrityGallery:
    raise RuntimeError("this Context has no celebrity gallery (build it with facebank.wiring)")


def _no_video_runner(job_id: str) -> None:
    raise RuntimeError("no video runner in this Context (build it with facebank.wiring)")


def _no_stream_runtime(name: str) -> None:
    raise RuntimeError("no stream processor runtime in this Context (build it with facebank.wiring)")


def _default_sns() -> Any:
    import boto3  # only video jobs with a NotificationChannel publish

    return boto3.client("sns")


def _default_s3() -> Any:
    import boto3  # only operations given an S3Object image pay for boto3

    return boto3.client("s3")


@dataclass
class Context:
    """Dependencies of the operations: settings, plus factories for storage and the S3 client
    that run once, on first use (storage is opened lazily so DetectFaces never touches it)."""

    settings: Settings = field(default_factory=Settings)
    open_storage: Callable[[], Storage] = field(default=_no_storage, repr=False)
    open_s3: Callable[[], Any] = field(default=_default_s3, repr=False)
    open_celebrities: Callable[[], CelebrityGallery] = field(default=_no_celebrities, repr=False)

    # Hands a new video job to the runtime that analyses it (embedded: the server's worker pool,
    # facebank.video_runner; AWS: the video queue). Set by facebank.wiring.
    submit_video_job: Callable[[str], None] = field(default=_no_video_runner, repr=False)
    open_sns: Callable[[], Any] = field(default=_default_sns, repr=False)
    # Hands a stream processor whose status just became STARTING to the runtime that runs it
    # (embedded: facebank serve's stream runner; AWS: an asynchronous invocation of the stream
    # consumer function). Stop needs no hook: the runtime watches the record's status/session.
    start_stream_processor: Callable[[str], None] = field(default=_no_stream_runtime, repr=False)
    # Who searches a collection's shards: None is this process (facebank/search/shards.py).
    open_searcher: Callable[[], ShardSearcher | None] = field(default=lambda: None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _opened: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, storage: Storage, settings: Settings | None = None) -> Context:
        """A Context over storage that is already open (tests wrap adapters this way)."""
        return cls(settings or Settings(), open_storage=lambda: storage)

    def _once(self, name: str, make: Callable[[], Any]) -> Any:
        # One instance per Context even when concurrent requests ask at once: two face indexes
        # would keep two segment caches and miss each other's forget().
        with self._lock:
            if name not in self._opened:
                self._opened[name] = make()
            return self._opened[name]

    @property
    def storage(self) -> Storage:
        return self._once("storage", self.open_storage)

    @property
    def index(self) -> VectorIndex:
        """Faces' vectors and metadata, with the segment cache of this process."""
        from facebank.search.index import VectorIndex  # numpy: only for operations on vectors

        return self._once(
            "index",
            lambda: VectorIndex(
                self.storage.vectors,
                self.storage.metadata,
                cache_bytes=self.settings.segment_cache_mb << 20,
                shard_rows=self.settings.shard_rows,
                searcher=self._once("searcher", self.open_searcher),
            ),
        )

    @property
    def user_index(self) -> UserVectorIndex:
        """The user-vector index beside the face index (its segment cache lives as long as this Context)."""
        from facebank.search.users import UserVectorIndex

        return self._once("user_index", lambda: UserVectorIndex(self.index, searcher=self.index.searcher))

    @property
    def metadata(self) -> MetadataStore:
        return self.storage.metadata

    @property
    def ledger(self) -> RequestLedger:
        return self.storage.ledger

    @property
    def s3(self) -> Any:
        return self._once("s3", self.open_s3)

    @property
    def sns(self) -> Any:
        """The SNS client video jobs publish their completion with."""
        return self._once("sns", self.open_sns)

    @property
    def engine(self) -> FaceEngine:
        from facebank.engine import get_engine  # onnxruntime loads here, only for model operations

        s = self.settings
        return get_engine(s.pack, s.resolved_model_dir, s.ort_threads)

    @property
    def model_pack(self) -> Pack:
        """The pack's description (names, calibration) without loading its models."""
        return packs.pack(self.settings.pack)

    @property
    def region(self) -> str:
        return self.settings.region

    @property
    def celebrities(self) -> CelebrityGallery:
        """The celebrity gallery (facebank.storage.celebrities), opened on first use."""
        return self._once("celebrities", self.open_celebrities)

    @property
    def celebrity_index(self) -> CelebrityIndex:
        """The gallery of this pack as a matrix, cached for the life of this Context and reloaded
        when another process changes the gallery."""
        from facebank.storage.celebrities import CelebrityIndex

        p = self.model_pack
        versions = (p.face_model_version, *p.compatible)
        return self._once("celebrity_index", lambda: CelebrityIndex(self.celebrities, p.name, versions))

    def collection_arn(self, collection_id: str) -> str:
        return f"arn:aws:rekognition:{self.settings.region}:{self.settings.account_id}:collection/{collection_id}"


# Importing the modules registers their operations.
from facebank.operations import (  # noqa: E402, F401
    celebrities,
    collections,
    faces,
    person_tracking,
    stream_processors,
    users,
    video,
)
