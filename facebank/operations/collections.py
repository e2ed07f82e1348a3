"""Collections and their faces: Create/Describe/List/DeleteCollection, IndexFaces, ListFaces,
DeleteFaces, SearchFaces, SearchFacesByImage.

Metadata is the truth for whether a face exists; vectors are written first (VectorIndex.add_faces)
so a crash never leaves a face that cannot be searched. Ids are deterministic, so a retried
IndexFaces (or the same image indexed again with the same ExternalImageId) stores nothing new.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable

from facebank.errors import (
    InvalidParameterException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
)
from facebank.operations import Context, Request, Response, operation
from facebank.operations.images import image_bytes, load_image
from facebank.operations.quality import passes_quality, quality_reasons
from facebank.storage import CollectionExists, CollectionRecord, FaceRecord
from facebank.storage.segments import segment_time

DEFAULT_PAGE = 1000  # ListCollections / ListFaces page size when MaxResults is absent (as Rekognition)
MAX_INDEXED_PER_IMAGE = 100  # IndexFaces indexes at most the 100 largest faces of an image
SEARCH_DEFAULT_MAX = 4096

# Namespace of facebank's deterministic ids (a fixed random UUID; never change it: ids depend on it).
_ID_NAMESPACE = uuid.UUID("5d9b3a3e-5c1c-4f4e-9a51-2f1e7a0c6b11")


def not_found(collection_id: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"The collection id: {collection_id} does not exist")


def get_collection(ctx: Context, collection_id: str, *, check_pack: bool = False) -> CollectionRecord:
    """The collection's record; with check_pack, refuse to mix its embeddings with this engine's
    (another pack, or a version of this one whose vectors live in another space: Pack.compatible)."""
    rec = ctx.metadata.get_collection(collection_id)
    if rec is None:
        raise not_found(collection_id)
    if check_pack and rec.pack == ctx.model_pack.name and not ctx.model_pack.searches(rec.face_model_version):
        raise InvalidParameterException(
            f"Collection {collection_id} holds faces of FaceModelVersion {rec.face_model_version}, whose vectors "
            f"this server's model pack '{rec.pack}' ({ctx.model_pack.face_model_version}) cannot compare with "
            "its own: index the faces into a new collection"
        )
    if check_pack and rec.pack != ctx.model_pack.name:
        raise InvalidParameterException(
            f"Collection {collection_id} holds faces of model pack '{rec.pack}' ({rec.face_model_version}); "
            f"this deployment runs pack '{ctx.model_pack.name}'. Their embeddings cannot be compared: "
            f"serve with --pack {rec.pack}, or index the faces into a new collection"
        )
    return rec


def page_size(request: Request) -> int:
    # MaxResults 0 is allowed by the model; Rekognition treats it like an absent value.
    return request.get("MaxResults") or DEFAULT_PAGE


def face_json(face: FaceRecord) -> dict:
    """Rekognition's Face structure."""
    out = {
        "FaceId": face.face_id,
        "BoundingBox": face.bounding_box,
        "ImageId": face.image_id,
        "Confidence": face.confidence,
        "IndexFacesModelVersion": face.index_faces_model_version,
    }
    if face.external_image_id is not None:
        out["ExternalImageId"] = face.external_image_id
    if face.user_id is not None:
        out["UserId"] = face.user_id
    return out


# --- collections


def _drop_leftover_vectors(ctx: Context, collection_id: str, before: float) -> None:
    """Vectors a crashed DeleteCollection of the same id left behind must not join the new
    collection. Only segments written before this request found the id free are dropped: a
    concurrent CreateCollection of the same id may win, and its IndexFaces write newer ones."""
    for store in (ctx.index.vectors, ctx.index.vectors.user_vectors()):
        for name in store.list_segments(collection_id):
            written = segment_time(name)
            if written is None or written < before:
                store.delete_segment(collection_id, name)
    ctx.index.forget(collection_id)


@operation("CreateCollection")
def create_collection(request: Request, ctx: Context) -> Response:
    collection_id = request["CollectionId"]
    pack = ctx.model_pack
    rec = CollectionRecord(
        collection_id=collection_id,
        arn=ctx.collection_arn(collection_id),
        face_model_version=pack.face_model_version,
        pack=pack.name,
        created=time.time(),
        tags=dict(request.get("Tags") or {}),
    )
    if len(rec.tags) > MAX_TAGS:
        raise ServiceQuotaExceededException(f"A collection can have at most {MAX_TAGS} tags")
    started = time.time()
    if ctx.metadata.get_collection(collection_id) is not None:
        raise ResourceAlreadyExistsException(f"The collection id: {collection_id} already exists")
    _drop_leftover_vectors(ctx, collection_id, started)
    try:
        ctx.metadata.create_collection(rec)
    except CollectionExists:  # a concurrent CreateCollection won
        raise ResourceAlreadyExistsException(f"The collection id: {collection_id} already exists") from None
    return {"StatusCode": 200, "CollectionArn": rec.arn, "FaceModelVersion": rec.face_model_version}


@operation("DescribeCollection")
def describe_collection(request: Request, ctx: Context) -> Response:
    rec = get_collection(ctx, request["CollectionId"])
    return {
        "FaceCount": rec.face_count,
        "FaceModelVersion": rec.face_model_version,
        "CollectionARN": rec.arn,
        "CreationTimestamp": rec.created,
        "UserCount": rec.user_count,
    }


@operation("ListCollections")
def list_collections(request: Request, ctx: Context) -> Response:
    records, token = ctx.metadata.list_collections(page_size(request), request.get("NextToken"))
    out: Response = {
        "CollectionIds": [r.collection_id for r in records],
        "FaceModelVersions": [r.face_model_version for r in records],
    }
    if token:
        out["NextToken"] = token
    return out


@operation("DeleteCollection")
def delete_collection(request: Request, ctx: Context) -> Response:
    collection_id = request["CollectionId"]
    if not ctx.metadata.delete_collection(collection_id):
        raise not_found(collection_id)
    # Metadata goes first: from here the collection does not exist, so its vectors are unreachable
    # even if deleting them is interrupted; CreateCollection of the same id clears leftovers.
    ctx.index.vectors.delete_collection(collection_id)
    ctx.index.forget(collection_id)
    return {"StatusCode": 200}


# --- tags (Rekognition tags collections and stream processors)

MAX_TAGS = 50  # Rekognition's limit of tags per resource

# Other taggable resources, by the marker in their ARN (":streamprocessor/": registered by
# facebank.operations.stream_processors): (tag(ctx, arn, put, remove_keys), list_tags(ctx, arn)).
TagWriter = Callable[[Context, str, dict[str, str], list[str]], None]
TagReader = Callable[[Context, str], dict[str, str]]
TAGGABLE: dict[str, tuple[TagWriter, TagReader]] = {}


def _other_resource(arn: str) -> tuple[TagWriter, TagReader] | None:
    return next((handlers for marker, handlers in TAGGABLE.items() if marker in arn), None)


def _collection_of(arn: str, ctx: Context) -> str:
    prefix, _, collection_id = arn.partition(":collection/")
    if not collection_id or not prefix.startswith("arn:"):
        raise InvalidParameterException(f"{arn} is not a collection or stream processor ARN")
    rec = ctx.metadata.get_collection(collection_id)
    if rec is None or rec.arn != arn:
        raise ResourceNotFoundException(f"The resource {arn} does not exist")
    return collection_id


@operation("TagResource")
def tag_resource(request: Request, ctx: Context) -> Response:
    put = request["Tags"]
    if other := _other_resource(request["ResourceArn"]):
        other[0](ctx, request["ResourceArn"], put, [])
        return {}
    collection_id = _collection_of(request["ResourceArn"], ctx)
    current = get_collection(ctx, collection_id).tags
    if len(current.keys() | put.keys()) > MAX_TAGS:
        raise ServiceQuotaExceededException(f"A resource can have at most {MAX_TAGS} tags")
    ctx.metadata.update_tags(collection_id, put, [])
    return {}


@operation("UntagResource")
def untag_resource(request: Request, ctx: Context) -> Response:
    if other := _other_resource(request["ResourceArn"]):
        other[0](ctx, request["ResourceArn"], {}, request["TagKeys"])
        return {}
    ctx.metadata.update_tags(_collection_of(request["ResourceArn"], ctx), {}, request["TagKeys"])
    return {}


@operation("ListTagsForResource")
def list_tags_for_resource(request: Request, ctx: Context) -> Response:
    if other := _other_resource(request["ResourceArn"]):
        return {"Tags": other[1](ctx, request["ResourceArn"])}
    return {"Tags": get_collection(ctx, _collection_of(request["ResourceArn"], ctx)).tags}


# --- faces


def _ids(collection_id: str, image: bytes, external_image_id: str | None) -> tuple[str, uuid.UUID]:
    digest = hashlib.sha256(image).hexdigest()
    image_id = uuid.uuid5(_ID_NAMESPACE, f"{collection_id}\0{digest}\0{external_image_id or ''}")
    return str(image_id), image_id


def _rank_for_max_faces(faces: list) -> list:
    """IndexFaces' MaxFaces order: lowest quality dropped first, then the smallest boxes."""
    return sorted(faces, key=lambda f: (not passes_quality(f, "AUTO"), -f.prominence))


@operation("IndexFaces")
def index_faces(request: Request, ctx: Context) -> Response:
    collection_id = request["CollectionId"]
    collection = get_collection(ctx, collection_id, check_pack=True)
    attributes = request.get("DetectionAttributes") or ["DEFAULT"]
    level = request.get("QualityFilter", "AUTO")
    max_faces = min(request.get("MaxFaces", MAX_INDEXED_PER_IMAGE), MAX_INDEXED_PER_IMAGE)
    external_image_id = request.get("ExternalImageId")

    data = image_bytes(request["Image"], ctx)
    from facebank.engine.image import decode  # numpy and Pillow load with the first image

    rgb = decode(data)
    engine = ctx.engine
    detected = engine.detect(rgb, attributes=attributes)  # largest first; ranks give stable FaceIds
    image_id, image_ns = _ids(collection_id, data, external_image_id)
    face_ids = {id(f): str(uuid.uuid5(image_ns, str(rank))) for rank, f in enumerate(detected)}

    unindexed, candidates = [], []
    for face in detected:
        reasons = quality_reasons(face, level)
        if reasons:
            unindexed.append({"Reasons": reasons, "FaceDetail": face.detail()})
        else:
            candidates.append(face)
    ranked = _rank_for_max_faces(candidates)
    chosen, excess = ranked[:max_faces], ranked[max_faces:]
    unindexed += [{"Reasons": ["EXCEEDS_MAX_FACES"], "FaceDetail": f.detail()} for f in excess]
    chosen.sort(key=lambda f: -f.prominence)

    if chosen and collection.face_count + len(chosen) > ctx.settings.max_faces_per_collection:
        raise ServiceQuotaExceededException(
            f"Collection {collection_id} would exceed {ctx.settings.max_faces_per_collection} faces"
        )
    now = time.time()
    records = [
        FaceRecord(
            face_id=face_ids[id(f)],
            image_id=image_id,
            external_image_id=external_image_id,
            bounding_box=f.bounding_box(),
            confidence=f.confidence,
            index_faces_model_version=collection.face_model_version,
            user_id=None,
            segment="",
            created=now,
        )
        for f in chosen
    ]
    if records:
        import numpy as np

        vectors = np.stack([engine.embed(rgb, f) for f in chosen]).astype(np.float32)
        ctx.index.add_faces(collection_id, records, vectors)
    return {
        "FaceRecords": [{"Face": face_json(r), "FaceDetail": f.detail()} for r, f in zip(records, chosen, strict=True)],
        "FaceModelVersion": collection.face_model_version,
        "UnindexedFaces": unindexed,
    }


@operation("ListFaces")
def list_faces(request: Request, ctx: Context) -> Response:
    collection = get_collection(ctx, request["CollectionId"])
    faces, token = ctx.metadata.list_faces(
        collection.collection_id,
        page_size(request),
        request.get("NextToken"),
        user_id=request.get("UserId"),
        face_ids=request.get("FaceIds"),
    )
    out: Response = {"Faces": [face_json(f) for f in faces], "FaceModelVersion": collection.face_model_version}
    if token:
        out["NextToken"] = token
    return out


@operation("DeleteFaces")
def delete_faces(request: Request, ctx: Context) -> Response:
    collection_id = request["CollectionId"]
    get_collection(ctx, collection_id)
    wanted = list(dict.fromkeys(request["FaceIds"]))
    deleted = set(ctx.metadata.delete_faces(collection_id, wanted))
    remaining = [f for f in wanted if f not in deleted]
    still_there = ctx.metadata.get_faces(collection_id, remaining) if remaining else {}
    unsuccessful = []
    for face_id in remaining:
        rec = still_there.get(face_id)
        if rec is not None and rec.user_id is not None:
            unsuccessful.append(
                {"FaceId": face_id, "UserId": rec.user_id, "Reasons": ["ASSOCIATED_TO_AN_EXISTING_USER"]}
            )
        else:
            unsuccessful.append({"FaceId": face_id, "Reasons": ["FACE_NOT_FOUND"]})
    return {
        "DeletedFaces": [f for f in wanted if f in deleted],
        "UnsuccessfulFaceDeletions": unsuccessful,
    }


# --- search


def cosine_floor(ctx: Context, threshold: float) -> float:
    return ctx.model_pack.calibration.cosine_floor(threshold)


def face_matches(ctx: Context, hits: list[tuple[FaceRecord, float]], threshold: float) -> list[dict]:
    calibration = ctx.model_pack.calibration
    out = []
    for rec, cosine in hits:
        similarity = calibration.similarity(cosine)
        if similarity >= threshold:  # the floor is bisected; this keeps the boundary exact
            out.append({"Similarity": similarity, "Face": face_json(rec)})
    return out


@operation("SearchFaces")
def search_faces(request: Request, ctx: Context) -> Response:
    collection = get_collection(ctx, request["CollectionId"], check_pack=True)
    face_id = request["FaceId"]
    threshold = request.get("FaceMatchThreshold", 80.0)
    if not ctx.metadata.get_faces(collection.collection_id, [face_id]):
        raise InvalidParameterException(f"FaceId {face_id} does not exist in collection {collection.collection_id}")
    hits = ctx.index.search_records_by_face_id(
        collection.collection_id,
        face_id,
        request.get("MaxFaces", SEARCH_DEFAULT_MAX),
        cosine_floor(ctx, threshold),
    )
    return {
        "SearchedFaceId": face_id,
        "FaceMatches": face_matches(ctx, hits, threshold),
        "FaceModelVersion": collection.face_model_version,
    }


@operation("SearchFacesByImage")
def search_faces_by_image(request: Request, ctx: Context) -> Response:
    collection = get_collection(ctx, request["CollectionId"], check_pack=True)
    threshold = request.get("FaceMatchThreshold", 80.0)
    level = request.get("QualityFilter", "NONE")
    rgb = load_image(request["Image"], ctx)
    engine = ctx.engine
    faces = engine.detect(rgb, max_faces=1)
    if not faces:
        raise InvalidParameterException("There are no faces in the image. Should be at least 1.")
    face = faces[0]  # the largest
    if not passes_quality(face, level):
        raise InvalidParameterException(
            f"The largest face in the image does not meet the {level} quality bar: "
            + ", ".join(quality_reasons(face, level)[:-1])
        )
    hits = ctx.index.search_records(
        collection.collection_id,
        engine.embed(rgb, face),
        request.get("MaxFaces", SEARCH_DEFAULT_MAX),
        cosine_floor(ctx, threshold),
    )
    return {
        "SearchedFaceBoundingBox": face.bounding_box(),
        "SearchedFaceConfidence": face.confidence,
        "FaceMatches": face_matches(ctx, hits, threshold),
        "FaceModelVersion": collection.face_model_version,
    }
