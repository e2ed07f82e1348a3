"""Storage-layer errors.

Plain Python exceptions so the adapters stay free of protocol concerns; the operations
layer maps them to Rekognition errors (e.g. CollectionNotFound -> ResourceNotFoundException).
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error raised on purpose by facebank.storage."""


class CollectionExists(StorageError):
    def __init__(self, collection_id: str):
        super().__init__(f"collection {collection_id!r} already exists")
        self.collection_id = collection_id


class CollectionNotFound(StorageError):
    def __init__(self, collection_id: str):
        super().__init__(f"collection {collection_id!r} not found")
        self.collection_id = collection_id


class FaceNotFound(StorageError):
    def __init__(self, face_id: str):
        super().__init__(f"face {face_id!r} not found")
        self.face_id = face_id


class UserExists(StorageError):
    def __init__(self, user_id: str):
        super().__init__(f"user {user_id!r} already exists")
        self.user_id = user_id


class UserNotFound(StorageError):
    def __init__(self, user_id: str):
        super().__init__(f"user {user_id!r} not found")
        self.user_id = user_id


class FaceUserConflict(StorageError):
    """set_face_user's condition failed: the face belongs to ``current_user_id`` (None = nobody)."""

    def __init__(self, face_id: str, current_user_id: str | None):
        super().__init__(f"face {face_id!r} is associated with {current_user_id!r}")
        self.face_id = face_id
        self.current_user_id = current_user_id


class UserFaceLimit(StorageError):
    """set_face_user would give a user more than its max_faces faces."""

    def __init__(self, user_id: str, max_faces: int):
        super().__init__(f"user {user_id!r} already has {max_faces} faces")
        self.user_id = user_id
        self.max_faces = max_faces


class SegmentExists(StorageError):
    """Segments are immutable: a name can be written once."""


class SegmentNotFound(StorageError):
    pass


class CorruptSegment(StorageError):
    """A segment's bytes failed validation (bad magic, size or checksum)."""


class InvalidPaginationToken(StorageError, ValueError):
    pass


class StorageBusy(StorageError):
    """Retries against contention (DynamoDB transaction conflicts) were exhausted."""


class UnsupportedSchemaVersion(StorageError):
    """An embedded database written at a schema version this facebank does not read."""

    def __init__(self, path: object, version: int, supported: int):
        super().__init__(
            f"{path} has schema version {version}; this facebank reads version {supported} only "
            "(there is no migration: start from a new data directory)"
        )
        self.version = version


class JobLimit(StorageError):
    """create_job would take the jobs IN_PROGRESS past the deployment's limit."""

    def __init__(self, max_active: int):
        super().__init__(f"{max_active} video jobs are already in progress")
        self.max_active = max_active


class JobExists(StorageError):
    def __init__(self, job_id: str):
        super().__init__(f"job {job_id!r} already exists")
        self.job_id = job_id


class ResultNotFound(StorageError):
    def __init__(self, job_id: str, name: str):
        super().__init__(f"job {job_id!r} has no result {name!r}")
        self.job_id = job_id
        self.name = name


class ShardThrottled(StorageError):
    """A shard's search was throttled (its function's concurrency) through every retry."""


class ShardFailed(StorageError):
    """A shard's search failed or answered nothing usable through every retry: the search fails
    rather than answer from the other shards only."""


class CelebrityIdConflict(StorageError):
    def __init__(self, celebrity_id: str, name: str, existing: str):
        super().__init__(f"celebrity Id {celebrity_id} of {name!r} is already taken by {existing!r}")
        self.celebrity_id, self.name, self.existing = celebrity_id, name, existing


class StreamProcessorExists(StorageError):
    """A stream processor of that name exists already."""


class StreamProcessorLimit(StorageError):
    """The deployment holds the most stream processors it allows."""
