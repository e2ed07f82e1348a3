"""The storage ports: metadata (collections, faces, users), vectors (embedding segments), the
request ledger (answers of requests made with a ClientRequestToken) and, on AWS only, the ingest
ledger (what each S3 ingest object was indexed into).

Adapters: sqlite.SqliteMetadataStore + files.FileVectorStore + sqlite.SqliteRequestLedger
(embedded), dynamodb.DynamoMetadataStore + s3.S3VectorStore + dynamodb_ledgers.DynamoRequestLedger +
dynamodb_ledgers.DynamoIngestLedger (AWS). Contracts every adapter honours (tests/storage runs the
same suite against both):

- Pagination tokens are opaque strings; a malformed one raises InvalidPaginationToken. Faces and
  users are listed in id order; collections in an adapter-defined but stable order.
- Counts (face_count, user_count) change in the same atomic write as the rows they count.
- Write order for new faces is vectors first, metadata second (see index.VectorIndex.add_faces):
  a crash in between leaves only orphan vectors, which search filters out and compaction drops.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # numpy loads only where vectors are handled, not for metadata calls
    import numpy as np


@dataclass
class CollectionRecord:
    collection_id: str
    arn: str
    face_model_version: str
    pack: str  # which model pack produced the embeddings; searches must not mix packs
    created: float  # epoch seconds
    tags: dict[str, str] = field(default_factory=dict)
    face_count: int = 0
    user_count: int = 0


@dataclass
class FaceRecord:
    face_id: str
    image_id: str
    external_image_id: str | None
    bounding_box: dict[str, float]  # Width/Height/Left/Top, ratios of the image size
    confidence: float
    index_faces_model_version: str
    user_id: str | None
    segment: str  # name of the vector segment holding this face's embedding when indexed
    created: float


@dataclass
class UserRecord:
    user_id: str
    status: str  # Rekognition's UserStatus: CREATED, UPDATING (membership changed), ACTIVE
    face_ids: list[str] = field(default_factory=list)  # sorted; maintained by set_face_user
    client_request_token: str | None = None
    created: float = 0.0
    # Membership version: bumped by every set_face_user that adds or removes one of its faces.
    version: int = 0
    # The row of the user-vector segments holding the vector built from the membership of the
    # version committed with set_user_vector (None: no vector, e.g. no faces). See users.py.
    vector_id: str | None = None


@runtime_checkable
class MetadataStore(Protocol):
    # --- collections
    def create_collection(self, rec: CollectionRecord) -> None:
        """Store a new collection (counts start at 0 whatever rec says). Raises CollectionExists."""

    def get_collection(self, collection_id: str) -> CollectionRecord | None: ...

    def list_collections(
        self, max_results: int, next_token: str | None = None
    ) -> tuple[list[CollectionRecord], str | None]: ...

    def delete_collection(self, collection_id: str) -> bool:
        """Remove the collection with its faces and users, and the request-ledger entries of its
        scope (same id); False if it did not exist."""

    def update_tags(self, collection_id: str, put: dict[str, str], remove: list[str]) -> dict[str, str]:
        """Set the tags in put and drop the keys in remove, atomically; returns the tags now.

        Raises CollectionNotFound.
        """

    # --- faces
    def put_faces(self, collection_id: str, faces: list[FaceRecord]) -> list[FaceRecord]:
        """Insert the faces not already stored (by face_id) and return them; face_count moves
        with them in the same atomic write.

        Raises CollectionNotFound. Faces already stored are left untouched and not counted twice.
        """

    def get_faces(self, collection_id: str, face_ids: list[str]) -> dict[str, FaceRecord]:
        """The stored faces among face_ids (missing ids are simply absent; no collection check)."""

    def list_faces(
        self,
        collection_id: str,
        max_results: int,
        next_token: str | None = None,
        user_id: str | None = None,
        face_ids: list[str] | None = None,
    ) -> tuple[list[FaceRecord], str | None]:
        """Faces in face_id order, optionally only those of user_id and/or among face_ids.

        Raises CollectionNotFound.
        """

    def delete_faces(self, collection_id: str, face_ids: list[str]) -> list[str]:
        """Delete faces and return the ids actually deleted (face_count moves with them).

        Faces associated with a user are NOT deleted (Rekognition reports them as
        ASSOCIATED_TO_AN_EXISTING_USER): disassociate first. Raises CollectionNotFound.
        """

    # --- users
    def put_user(self, collection_id: str, rec: UserRecord) -> None:
        """Create a user with no faces (rec.face_ids must be empty); user_count moves with it.

        Raises UserExists or CollectionNotFound.
        """

    def get_user(self, collection_id: str, user_id: str) -> UserRecord | None: ...

    def delete_user(self, collection_id: str, user_id: str, client_request_token: str | None = None) -> bool:
        """Disassociate the user's faces, then delete it; False if it did not exist.

        The deletion leaves a tombstone with client_request_token (see deleted_user_token), in the
        same atomic write, so a retried DeleteUser can be told from a request for a missing user.
        """

    def deleted_user_token(self, collection_id: str, user_id: str) -> str | None:
        """The ClientRequestToken of the delete_user call that last deleted user_id, if any.

        Tombstones outlive a later put_user of the same id; delete_collection removes them.
        """

    def get_users(self, collection_id: str, user_ids: list[str]) -> dict[str, UserRecord]:
        """The stored users among user_ids (missing ids are simply absent; no collection check)."""

    def list_users(
        self, collection_id: str, max_results: int, next_token: str | None = None
    ) -> tuple[list[UserRecord], str | None]:
        """Users in user_id order. Raises CollectionNotFound."""

    def set_face_user(
        self,
        collection_id: str,
        face_id: str,
        user_id: str | None,
        expected_user_id: str | None,
        max_faces: int | None = None,
    ) -> None:
        """Atomically move face_id from expected_user_id to user_id (None = no user).

        Keeps FaceRecord.user_id and UserRecord.face_ids in step; every user whose membership
        changes gets version + 1 and status UPDATING in the same write (its vector is now stale
        until set_user_vector). Raises FaceNotFound, UserNotFound (user_id does not exist),
        FaceUserConflict (face's user != expected) or UserFaceLimit (user_id already has
        max_faces faces).
        """

    def set_user_vector(self, collection_id: str, user_id: str, vector_id: str | None, version: int) -> bool:
        """Commit vector_id as the user's vector if its membership is still at `version`.

        Status becomes ACTIVE (CREATED if the user has no faces). False, and nothing written,
        when the membership moved on meanwhile: the caller rebuilds from the new membership.
        Raises UserNotFound.
        """

    # --- shard maps (facebank/search/shards.py)
    def get_shard_map(self, collection_id: str, kind: str) -> tuple[str | None, int]:
        """The stored shard map of the collection's `kind` segments ("faces" or "users") as
        (JSON document, version); (None, 0) when none is stored."""

    def put_shard_map(self, collection_id: str, kind: str, body: str, version: int) -> bool:
        """Store body as version + 1 if the stored version is still `version` (0: none stored);
        False, and nothing written, otherwise. delete_collection removes the maps with the rest."""


@runtime_checkable
class RequestLedger(Protocol):
    """Requests made with a ClientRequestToken, and their answers, so a retried request gets the
    first answer and a token reused with other parameters is told apart.

    Entries live in a scope (today a collection id) and die with it: deleting the collection
    drops its entries. They also expire: the embedded ledger drops entries older than a claim's
    ``since``, DynamoDB's TTL removes them a day after they were written.
    """

    def claim(self, scope: str, key: str, digest: str, since: float) -> tuple[str, str | None]:
        """Claim key for a request with this digest unless an entry made no earlier than
        ``since`` stands; return the standing (digest, response JSON or None while unanswered)."""

    def answer(self, scope: str, key: str, response: str) -> str:
        """Record the answer of a claimed request unless one is recorded; return the standing one."""

    def release(self, scope: str, key: str) -> None:
        """Drop an unanswered claim (its request failed), so the key is free again."""


@dataclass(frozen=True)
class IngestRecord:
    """What the ingest ledger remembers of one S3 object (see facebank.aws.ingest)."""

    sequencer: str  # of the last S3 event applied, padded so that sequencers compare as strings
    face_ids: frozenset[str] = frozenset()  # the faces the object's content was indexed into
    collection_id: str = ""
    external_image_id: str = ""
    updated: int = 0  # epoch seconds
    expires: int | None = None  # epoch seconds; removal tombstones only: then it may be forgotten


@runtime_checkable
class IngestLedger(Protocol):
    def get(self, object_key: str) -> IngestRecord | None:
        """The record of object_key ("<bucket>/<key>"), read consistently; None if there is none."""

    def put_if(self, object_key: str, expected: str | None, record: IngestRecord) -> bool:
        """Replace the record if the stored sequencer is still ``expected`` (None: no record yet);
        False, and nothing written, if another writer got there first."""


@runtime_checkable
class VectorStore(Protocol):
    def write_segment(self, collection_id: str, name: str, face_ids: list[str], vectors: np.ndarray) -> None:
        """Store an immutable segment atomically (readers see all of it or nothing).

        Raises SegmentExists if the name was already written. Use segments.new_segment_name().
        """

    def list_segments(self, collection_id: str) -> list[str]:
        """Names of complete segments, sorted (names sort in creation order)."""

    def read_segment(self, collection_id: str, name: str) -> tuple[list[str], np.ndarray]:
        """(face_ids, float32 [n, d]). Raises SegmentNotFound or CorruptSegment."""

    def delete_segment(self, collection_id: str, name: str) -> None:
        """Idempotent."""

    def delete_collection(self, collection_id: str) -> None:
        """Delete every segment of the collection (its user-vector segments too). Idempotent."""

    def user_vectors(self) -> VectorStore:
        """The same store's namespace for user-vector segments (see facebank.search.users).

        Kept under each collection's own directory/prefix, so delete_collection above removes
        them with the face segments, and invisible to this store's list_segments.
        """


# --- stored-video jobs (StartFaceDetection / StartFaceSearch ...; see facebank.operations.video_jobs)

JOB_STATUSES = ("IN_PROGRESS", "SUCCEEDED", "FAILED")


@dataclass
class JobRecord:
    job_id: str
    api: str  # "StartFaceDetection" | "StartFaceSearch" (more APIs reuse the same jobs)
    status: str  # IN_PROGRESS | SUCCEEDED | FAILED
    video: dict  # the request's Video (its S3Object is echoed in Get*)
    params: dict  # operation parameters: FaceAttributes, CollectionId, FaceMatchThreshold, pack...
    created: float  # epoch seconds
    job_tag: str | None = None
    notification_channel: dict | None = None
    status_message: str | None = None
    video_metadata: dict | None = None
    segments_total: int = 0  # set when the video is planned into segments (1 embedded)
    segments_done: frozenset[int] = frozenset()
    result_count: int = 0  # items written in the result pages
    updated: float = 0.0


@runtime_checkable
class JobStore(Protocol):
    """Video jobs and the deployment-wide limit on jobs IN_PROGRESS."""

    def create_job(self, rec: JobRecord, max_active: int) -> None:
        """Store a new IN_PROGRESS job unless max_active jobs are IN_PROGRESS (raises JobLimit),
        atomically: concurrent creates never exceed the limit. Raises JobExists for a taken id."""

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def plan_job(self, job_id: str, video_metadata: dict, segments_total: int) -> None:
        """Record the probed metadata and the number of segments (only while IN_PROGRESS; a
        finished or missing job is left as it is)."""

    def segment_done(self, job_id: str, segment: int) -> tuple[int, int]:
        """Mark one segment analysed (idempotent: a retried segment counts once); return
        (segments done, segments total)."""

    def finish_job(self, job_id: str, status: str, status_message: str | None, result_count: int) -> bool:
        """IN_PROGRESS -> SUCCEEDED/FAILED, freeing its slot in the same write; False (nothing
        written) if the job is already finished or does not exist."""

    def active_jobs(self) -> list[JobRecord]:
        """The jobs IN_PROGRESS (embedded: resumed or failed when the server starts)."""


@runtime_checkable
class JobResults(Protocol):
    """Blobs of a job: result pages and (AWS) per-segment partial results."""

    def put(self, job_id: str, name: str, data: bytes) -> None:
        """Write (or replace) the blob atomically: a reader sees the old bytes or the new."""

    def get(self, job_id: str, name: str) -> bytes:
        """Raises ResultNotFound."""

    def delete_job(self, job_id: str) -> None:
        """Every blob of the job. Idempotent."""


# --- the celebrity gallery (facebank celebrities import; RecognizeCelebrities, GetCelebrityInfo)

KNOWN_GENDERS = ("Male", "Female", "Nonbinary", "Unlisted")  # botocore's KnownGenderType
MAX_URLS = 255  # botocore's Urls: at most 255 entries


@dataclass(frozen=True)
class CelebrityRecord:
    celebrity_id: str
    name: str
    urls: tuple[str, ...]
    known_gender: str | None  # one of KNOWN_GENDERS, or None when the operator gave none
    pack: str  # the model pack the vector was computed with; other packs never compare it
    face_model_version: str
    vector: bytes  # float32 little-endian unit vector (the re-normalised mean of the photos' faces)
    photos: int  # photos whose face went into the vector
    updated: float = field(default_factory=time.time)

    def unit_vector(self) -> np.ndarray:
        import numpy as np

        return np.frombuffer(self.vector, dtype="<f4")


class CelebrityGallery(Protocol):
    """Contract (tests/storage/test_storage_celebrities.py, both adapters):

    * ``put_celebrity`` inserts or replaces a record whole, atomically with a generation bump; a
      record whose Id belongs to another name raises CelebrityIdConflict and changes nothing.
    * ``delete_celebrity`` returns whether a record was removed (bumping the generation only then).
    * ``generation`` is a number that changes after every successful put or delete, seen by every
      process; ``list_celebrities`` returns every record, ordered by Id.
    """

    def put_celebrity(self, rec: CelebrityRecord) -> None: ...
    def get_celebrity(self, celebrity_id: str) -> CelebrityRecord | None: ...
    def delete_celebrity(self, celebrity_id: str) -> bool: ...
    def list_celebrities(self) -> list[CelebrityRecord]: ...
    def generation(self) -> int: ...
    def close(self) -> None: ...


# --- stream processors (issue 26: CreateStreamProcessor ... and the runtimes that run them)

# Rekognition's StreamProcessorStatus values; a processor moves
# STOPPED -> STARTING -> RUNNING -> STOPPING -> STOPPED, or to FAILED (with a status message).
STREAM_STATUSES = ("STOPPED", "STARTING", "RUNNING", "FAILED", "STOPPING", "UPDATING")


@dataclass
class StreamProcessorRecord:
    """One stream processor, as CreateStreamProcessor / UpdateStreamProcessor left it, plus the
    state of its current run. ``session`` grows by one at every StartStreamProcessor: a runtime
    works for one session and stops as soon as the record's session is another (a lease)."""

    name: str
    arn: str
    status: str  # one of STREAM_STATUSES
    input_arn: str  # Input.KinesisVideoStream.Arn
    output_arn: str  # Output.KinesisDataStream.Arn
    role_arn: str
    collection_id: str  # Settings.FaceSearch.CollectionId
    face_match_threshold: float  # Settings.FaceSearch.FaceMatchThreshold (default 80)
    created: float  # epoch seconds
    updated: float  # LastUpdateTimestamp
    status_message: str | None = None
    notification_sns_arn: str | None = None  # NotificationChannel.SNSTopicArn
    kms_key_id: str | None = None
    data_sharing_opt_in: bool = False  # DataSharingPreference.OptIn
    tags: dict[str, str] = field(default_factory=dict)
    session: int = 0
    start_selector: dict | None = None  # StartStreamProcessor's StartSelector of the current session
    stop_selector: dict | None = None  # its StopSelector


@runtime_checkable
class StreamProcessorStore(Protocol):
    """Stream processors and their runs' checkpoints. Every state change is a conditional write on
    the current status (and session), so concurrent Start/Stop/Delete calls and runtimes never
    interleave: exactly one of two racing callers wins, the other gets False/None."""

    def create(self, rec: StreamProcessorRecord, max_processors: int) -> None:
        """Store a new processor. Raises StreamProcessorExists for a taken name, StreamProcessorLimit
        when max_processors exist already (atomically)."""

    def get(self, name: str) -> StreamProcessorRecord | None: ...

    def list(self, limit: int, token: str | None = None) -> tuple[list[StreamProcessorRecord], str | None]:
        """Processors in name order, at most ``limit``; an opaque token for the rest
        (InvalidPaginationToken for a malformed one)."""

    def transition(
        self,
        name: str,
        expect: tuple[str, ...],
        status: str,
        message: str | None = None,
        *,
        session: int | None = None,
        new_session: bool = False,
        changes: dict | None = None,
    ) -> StreamProcessorRecord | None:
        """Move to ``status`` (with ``message``; None clears it) only if the current status is one
        of ``expect`` (and the session is ``session`` when given); ``new_session`` adds one to the
        session in the same write; ``changes`` sets other fields of the record (UpdateStreamProcessor,
        the selectors of a Start, tags) in the same write. Returns the new record, or None (nothing
        written) when the processor is missing or the condition failed."""

    def delete(self, name: str, expect: tuple[str, ...]) -> bool:
        """Delete the processor and its checkpoint if its status is one of ``expect``."""

    def put_checkpoint(self, name: str, session: int, data: dict) -> bool:
        """Replace the run's checkpoint (JSON-serialisable: last fragment done, tracker state) only
        while the processor's session is ``session``; False when another session owns it now."""

    def get_checkpoint(self, name: str) -> dict | None:
        """The current session's checkpoint: None until it puts one (a transition with
        ``new_session`` clears the previous session's; deleting the processor deletes it)."""
