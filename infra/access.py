"""What each function may touch: the least-privilege table the stack turns into IAM policies.

Derived from the storage adapters' calls (``facebank/storage/dynamodb.py``, ``s3.py``) per
operation; ``tests/test_aws_handlers.py`` records the AWS calls every operation really makes
against moto and checks each one is allowed by the synthesised policy of its function, and
``tests/test_infra.py`` checks the policies grant nothing beyond this table.

IAM notes. TransactWriteItems has no IAM action of its own: each item needs PutItem, UpdateItem or
DeleteItem on its table. S3 DeleteObjects needs s3:DeleteObject; ListObjectsV2 needs
s3:ListBucket (granted only for the ``vectors/`` prefix).

An operation registered in ``facebank.operations.OPERATIONS`` but missing here stops synthesis
with a message naming it: a new operation's permissions are a decision, not a default.
"""

from __future__ import annotations

from dataclasses import dataclass

GET, BATCH_GET, QUERY, SCAN = "GetItem", "BatchGetItem", "Query", "Scan"
PUT, UPDATE, DELETE, BATCH_WRITE = "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"
READ_ACTIONS = {GET, BATCH_GET, QUERY, SCAN}

LIST, GET_OBJECT, PUT_OBJECT, DELETE_OBJECT = "ListBucket", "GetObject", "PutObject", "DeleteObject"


@dataclass(frozen=True)
class Access:
    """DynamoDB actions per table, S3 actions on the embeddings bucket's ``vectors/`` prefix,
    whether callers' S3Object images are read, and whether the function needs the face models."""

    collections: frozenset[str] = frozenset()
    faces: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    vectors: frozenset[str] = frozenset()
    images: bool = False
    models: bool = True  # loads the pack (detect/embed, or the pack's FaceModelVersion)
    heavy: bool = False  # decodes images or scores vectors: gets `memorySize`, others `lightMemorySize`

    @property
    def storage(self) -> bool:
        return bool(self.collections or self.faces or self.users or self.vectors)

    @property
    def read_only(self) -> bool:
        tables = self.collections | self.faces | self.users
        return tables <= READ_ACTIONS and self.vectors <= {LIST, GET_OBJECT}

    def tables(self) -> dict[str, frozenset[str]]:
        return {t: a for t, a in (("collections", self.collections), ("faces", self.faces), ("users", self.users)) if a}

    def __or__(self, other: Access) -> Access:
        return Access(
            self.collections | other.collections,
            self.faces | other.faces,
            self.users | other.users,
            self.vectors | other.vectors,
            self.images or other.images,
            self.models or other.models,
            self.heavy or other.heavy,
        )


def _a(collections=(), faces=(), users=(), vectors=(), *, images=False, heavy=False) -> Access:
    return Access(frozenset(collections), frozenset(faces), frozenset(users), frozenset(vectors), images, True, heavy)


# Deleting a collection (and re-creating one whose delete was interrupted) purges its faces and users.
_PURGE = {"faces": {QUERY, BATCH_WRITE}, "users": {QUERY, BATCH_WRITE}, "vectors": {LIST, DELETE_OBJECT}}
_SEARCH = {"collections": {GET}, "faces": {BATCH_GET}, "vectors": {LIST, GET_OBJECT}}
# User search reads the user's faces' vectors (face segments) and the user-vector segments
# (vectors/<collection>/users/), then the hits' users. Searches never write: the user index's
# opportunistic compaction is denied here (logged, search unaffected); the scheduled compaction
# function does that work.
_SEARCH_USERS = {"collections": {GET}, "faces": {BATCH_GET}, "users": {GET, BATCH_GET}, "vectors": {LIST, GET_OBJECT}}
# Associate/DisassociateFaces move faces between users (transactions on faces and users), then
# rebuild the user's vector: read its faces' vectors, write one user segment (deleted again if a
# concurrent change wins the commit). Put/Update/DeleteItem on users also serve the request
# ledger (ClientRequestToken: claim, answer, release; facebank/operations/users.by_token).
_LEDGER = {GET, PUT, UPDATE, DELETE}
_MEMBERSHIP = {
    "collections": {GET},
    "faces": {GET, BATCH_GET, UPDATE},
    "users": {UPDATE} | _LEDGER,
    "vectors": {LIST, GET_OBJECT, PUT_OBJECT, DELETE_OBJECT},
}

OPERATION_ACCESS: dict[str, Access] = {
    # images only: no table, no bucket of ours
    "DetectFaces": _a(images=True, heavy=True),
    "CompareFaces": _a(images=True, heavy=True),
    # collections
    "CreateCollection": _a(collections={GET, PUT, DELETE}, **_PURGE),
    "DescribeCollection": _a(collections={GET}),
    "ListCollections": _a(collections={SCAN}),
    "DeleteCollection": _a(collections={GET, UPDATE, DELETE}, **_PURGE),
    "TagResource": _a(collections={GET, UPDATE}),
    "UntagResource": _a(collections={GET, UPDATE}),
    "ListTagsForResource": _a(collections={GET}),
    # faces
    "IndexFaces": _a(
        collections={GET, UPDATE}, faces={PUT}, vectors={PUT_OBJECT, DELETE_OBJECT}, images=True, heavy=True
    ),
    "ListFaces": _a(collections={GET}, faces={QUERY, BATCH_GET}, users={GET}),
    "DeleteFaces": _a(collections={GET, UPDATE}, faces={DELETE, BATCH_GET}),
    # search: read-only
    "SearchFaces": _a(**_SEARCH, heavy=True),
    "SearchFacesByImage": _a(**_SEARCH, images=True, heavy=True),
    # users
    "CreateUser": _a(collections={GET, UPDATE}, users=_LEDGER),
    # DeleteUser detaches the user's faces, then deletes the user and writes its tombstone (for
    # ClientRequestToken idempotency) in one transaction.
    "DeleteUser": _a(collections={GET, UPDATE}, users=_LEDGER, faces={UPDATE}),
    "ListUsers": _a(collections={GET}, users={QUERY}),
    "AssociateFaces": _a(**_MEMBERSHIP),
    "DisassociateFaces": _a(**_MEMBERSHIP),
    "SearchUsers": _a(**_SEARCH_USERS, heavy=True),
    "SearchUsersByImage": _a(**_SEARCH_USERS, images=True, heavy=True),
}

# The S3-event ingest function runs IndexFaces and DeleteFaces through the registry (its ledger
# says which faces an object holds); it reads images from the ingest bucket only.
INGEST_OPERATIONS = ("IndexFaces", "DeleteFaces")
LEDGER_ACTIONS = frozenset({GET, PUT})

# Compaction lists collections, checks which faces (and users' current vectors) still exist, and
# rewrites face and user-vector segments.
COMPACTION_ACCESS = Access(
    collections=frozenset({SCAN}),
    faces=frozenset({BATCH_GET}),
    users=frozenset({BATCH_GET}),
    vectors=frozenset({LIST, GET_OBJECT, PUT_OBJECT, DELETE_OBJECT}),
    models=False,
    heavy=True,
)


def ingest_access() -> Access:
    out = Access()
    for op in INGEST_OPERATIONS:
        out = out | OPERATION_ACCESS[op]
    return out


def access_for(operation: str) -> Access:
    try:
        return OPERATION_ACCESS[operation]
    except KeyError:
        raise KeyError(
            f"operation {operation} has no entry in infra/access.py OPERATION_ACCESS: decide which tables "
            "and bucket actions its function needs (least privilege) and add it"
        ) from None


# --- stored-video person tracking (issue 15): a job without a collection, so exactly what the
# face-detection jobs need (Start: HeadObject on the video, the ledger, the job item and counter,
# the video queue; Get: the job item and its result pages). The rows of the face jobs come with
# the AWS video pipeline (infra/video.py); until it is merged there is nothing to copy, and
# synthesis names these operations as missing, as it does the face jobs.
for _persons, _faces in (("StartPersonTracking", "StartFaceDetection"), ("GetPersonTracking", "GetFaceDetection")):
    if _faces in OPERATION_ACCESS:
        OPERATION_ACCESS[_persons] = OPERATION_ACCESS[_faces]
