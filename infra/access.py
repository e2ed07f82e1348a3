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

from dataclasses import dataclass, fields
from typing import Any

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
    # Stored-video jobs (infra/video.py): the jobs table, S3 actions on the embeddings bucket's
    # ``jobs/`` prefix (result pages, per-segment partials), and sqs:SendMessage on the video queue.
    jobs: frozenset[str] = frozenset()
    results: frozenset[str] = frozenset()
    video_queue: bool = False
    celebrities: frozenset[str] = frozenset()  # the celebrity gallery table (infra/celebrities.py)
    shards: bool = False  # fans out to the shard-search function: lambda:InvokeFunction on it (infra/shards.py)
    # Stream processors (issue 26): the streams table, and lambda:InvokeFunction on the stream
    # consumer function (StartStreamProcessor hands the processor to it; infra/streams.py).
    streams: frozenset[str] = frozenset()
    stream_consumer: bool = False

    @property
    def storage(self) -> bool:
        stores = (self.collections, self.faces, self.users, self.vectors, self.jobs, self.results, self.streams)
        return any(stores)

    @property
    def read_only(self) -> bool:
        tables = self.collections | self.faces | self.users | self.jobs | self.celebrities | self.streams
        objects = self.vectors | self.results
        invokes = self.video_queue or self.stream_consumer
        return tables <= READ_ACTIONS and objects <= {LIST, GET_OBJECT} and not invokes

    def tables(self) -> dict[str, frozenset[str]]:
        named = (("collections", self.collections), ("faces", self.faces), ("users", self.users), ("jobs", self.jobs))
        return {t: a for t, a in (*named, ("celebrities", self.celebrities), ("streams", self.streams)) if a}

    def __or__(self, other: Access) -> Access:
        # Field by field, by name: a positional call breaks silently when a field is inserted.
        merged: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            merged[f.name] = (mine or theirs) if isinstance(mine, bool) else (mine | theirs)
        return Access(**merged)


def _a(collections=(), faces=(), users=(), vectors=(), *, images=False, heavy=False, shards=False) -> Access:
    # By keyword: Access gains fields (jobs, results, ... before shards) as branches add them.
    return Access(
        collections=frozenset(collections),
        faces=frozenset(faces),
        users=frozenset(users),
        vectors=frozenset(vectors),
        images=images,
        heavy=heavy,
        shards=shards,
    )


# Deleting a collection (and re-creating one whose delete was interrupted) purges its faces and users.
_PURGE = {"faces": {QUERY, BATCH_WRITE}, "users": {QUERY, BATCH_WRITE}, "vectors": {LIST, DELETE_OBJECT}}
# Searches read the collection's shard map (a users-table item, facebank/search/shards.py), list
# the segments, fan out to the shard function, then read the merged candidates' metadata.
_SEARCH = {"collections": {GET}, "faces": {BATCH_GET}, "users": {GET}, "vectors": {LIST, GET_OBJECT}}
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
    "SearchFaces": _a(**_SEARCH, heavy=True, shards=True),
    "SearchFacesByImage": _a(**_SEARCH, images=True, heavy=True, shards=True),
    # users
    "CreateUser": _a(collections={GET, UPDATE}, users=_LEDGER),
    # DeleteUser detaches the user's faces, then deletes the user and writes its tombstone (for
    # ClientRequestToken idempotency) in one transaction.
    "DeleteUser": _a(collections={GET, UPDATE}, users=_LEDGER, faces={UPDATE}),
    "ListUsers": _a(collections={GET}, users={QUERY}),
    # They read the user's faces' vectors from the shard functions (a light function must not load
    # a shard-sized segment itself).
    "AssociateFaces": _a(**_MEMBERSHIP, shards=True),
    "DisassociateFaces": _a(**_MEMBERSHIP, shards=True),
    "SearchUsers": _a(**_SEARCH_USERS, heavy=True, shards=True),
    "SearchUsersByImage": _a(**_SEARCH_USERS, images=True, heavy=True, shards=True),
    # celebrities: read the gallery (the generation item on every call, a Scan when it moved);
    # the gallery is written only by `facebank celebrities import --aws`, with the operator's rights.
    "RecognizeCelebrities": Access(celebrities=frozenset({GET, SCAN}), images=True, heavy=True),
    "GetCelebrityInfo": Access(celebrities=frozenset({GET}), models=False),
}

# The S3-event ingest function runs IndexFaces and DeleteFaces through the registry (its ledger
# says which faces an object holds); it reads images from the ingest bucket only.
INGEST_OPERATIONS = ("IndexFaces", "DeleteFaces")
LEDGER_ACTIONS = frozenset({GET, PUT})

# Compaction lists collections, checks which faces (and users' current vectors) still exist,
# rewrites face and user-vector segments, and re-assigns segments to shards (the shard maps are
# users-table items: read, then a conditional put).
COMPACTION_ACCESS = Access(
    collections=frozenset({SCAN}),
    faces=frozenset({BATCH_GET}),
    users=frozenset({BATCH_GET, GET, PUT}),
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


# --- stored-video jobs (issue 13; infra/video.py)
# Start*: HeadObject on the caller's video (s3:GetObject on the allowed image buckets), the request
# ledger (users table, scope "video-jobs"), the job item and the in-progress counter in one
# transaction (Put + Update), then the plan message to the video queue; a job whose message cannot
# be sent is finished FAILED (Update). StartFaceSearch also checks the collection. No model files:
# Start* never decodes the video (the worker probes it), so no PyAV and no model layer.
_START_VIDEO = {"users": _LEDGER, "jobs": {PUT, UPDATE}}
_GET_VIDEO = {"jobs": {GET}, "results": {GET_OBJECT}}


def _video(collections=(), users=(), jobs=(), results=(), *, images=False, video_queue=False) -> Access:
    return Access(
        collections=frozenset(collections),
        users=frozenset(users),
        jobs=frozenset(jobs),
        results=frozenset(results),
        images=images,
        models=False,
        video_queue=video_queue,
    )


OPERATION_ACCESS |= {
    "StartFaceDetection": _video(**_START_VIDEO, images=True, video_queue=True),
    "StartFaceSearch": _video(collections={GET}, **_START_VIDEO, images=True, video_queue=True),
    "GetFaceDetection": _video(**_GET_VIDEO),
    "GetFaceSearch": _video(**_GET_VIDEO),
    # celebrity jobs: as StartFaceDetection / GetFaceDetection; the worker reads the gallery
    "StartCelebrityRecognition": _video(**_START_VIDEO, images=True, video_queue=True),
    "GetCelebrityRecognition": _video(**_GET_VIDEO),
}

# The video worker (facebank/aws/video.py): reads the video (ranged GETs on the allowed image
# buckets), the job, writes per-segment partials and result pages under jobs/, marks segments
# done / finishes the job (Update), searches the collection for StartFaceSearch (read-only, as
# SearchFacesByImage: the collection must still exist, then its segments and faces' records), and
# fans out segment and assemble messages on the video queue. Publishing the completion message
# (sns:Publish on the configured topics) is granted in infra/video.py. Its searches go through the
# collection's shard map (a users-table item) and the shard functions, as SearchFacesByImage's do.
VIDEO_WORKER_ACCESS = Access(
    collections=frozenset({GET}),
    faces=frozenset({BATCH_GET}),
    users=frozenset({GET}),
    vectors=frozenset({LIST, GET_OBJECT}),
    images=True,
    heavy=True,
    jobs=frozenset({GET, UPDATE}),
    results=frozenset({GET_OBJECT, PUT_OBJECT}),
    video_queue=True,
    # StartCelebrityRecognition: the gallery, read once per segment (generation GetItem, then a Scan)
    celebrities=frozenset({GET, SCAN}),
    shards=True,
)
# --- stored-video person tracking (issue 15): a job without a collection, so exactly what the
# face-detection jobs need (Start: HeadObject on the video, the ledger, the job item and counter,
# the video queue; Get: the job item and its result pages). The worker runs MoveNet with the
# grants above; its model file ships in the model layer (layers/build.py models).
for _persons, _faces in (("StartPersonTracking", "StartFaceDetection"), ("GetPersonTracking", "GetFaceDetection")):
    OPERATION_ACCESS[_persons] = OPERATION_ACCESS[_faces]

# --- stream processors (issue 26; facebank/operations/stream_processors.py, their own nested
# stack "StreamProcessors"). The streams table (facebank/storage/dynamodb_streams.py): Create is a
# transaction (Put of the processor + Update of the "#count" item), Delete likewise (Delete +
# Update); transitions read the item (GetItem) and write it conditionally (UpdateItem); listing
# Scans. Create and Start read the collection (it must exist and be of this pack); no model files
# (the pack's description only). Start hands the processor to the stream consumer function: an
# asynchronous lambda:InvokeFunction on it (Platform.stream_consumer, set by infra/streams.py).
# TagResource & co. reach a processor through its ARN (facebank/operations/collections.TAGGABLE).
STREAM_OPERATIONS = frozenset(
    {
        "CreateStreamProcessor",
        "DescribeStreamProcessor",
        "ListStreamProcessors",
        "StartStreamProcessor",
        "StopStreamProcessor",
        "DeleteStreamProcessor",
        "UpdateStreamProcessor",
    }
)


def _streams(streams=(), collections=(), *, stream_consumer=False) -> Access:
    return Access(
        collections=frozenset(collections),
        streams=frozenset(streams),
        models=False,
        stream_consumer=stream_consumer,
    )


OPERATION_ACCESS |= {
    "CreateStreamProcessor": _streams({PUT, UPDATE}, {GET}),
    "DescribeStreamProcessor": _streams({GET}),
    "ListStreamProcessors": _streams({SCAN}),
    "StartStreamProcessor": _streams({GET, UPDATE}, {GET}, stream_consumer=True),
    "StopStreamProcessor": _streams({GET, UPDATE}),
    "DeleteStreamProcessor": _streams({GET, DELETE, UPDATE}),
    "UpdateStreamProcessor": _streams({GET, UPDATE}),
}
for _tagging, _actions in (
    ("TagResource", {GET, UPDATE}),
    ("UntagResource", {GET, UPDATE}),
    ("ListTagsForResource", {GET}),
):
    OPERATION_ACCESS[_tagging] = OPERATION_ACCESS[_tagging] | Access(streams=frozenset(_actions))

# The stream consumer (infra/streams.py, facebank/aws/streams.py): the processor's record and its
# checkpoint (GetItem, UpdateItem on the streams table), and the searches of StartFaceSearch's
# video worker (the collection, its shard map, segments, faces; the shard functions). Its
# Kinesis Video, Kinesis and self-invoke grants are added in infra/streams.py.
STREAM_CONSUMER_ACCESS = Access(
    collections=frozenset({GET}),
    faces=frozenset({BATCH_GET}),
    users=frozenset({GET}),
    vectors=frozenset({LIST, GET_OBJECT}),
    heavy=True,
    shards=True,
    streams=frozenset({GET, UPDATE}),
)
