"""Users: CreateUser, DeleteUser, ListUsers, AssociateFaces, DisassociateFaces, SearchUsers,
SearchUsersByImage.

A user groups faces of one person; it is searched through one vector, the re-normalised mean of
its faces' vectors (facebank.search.users: storage, consistency, and why the mean). Membership
lives in the metadata store (FaceRecord.user_id, UserRecord.face_ids); every change bumps the
user's version and marks it UPDATING, and the request that made the change rebuilds the vector
before it answers (then ACTIVE, or CREATED when no face is left). The answer's UserStatus is the
user's status after the call: ACTIVE once this request's change is in the vector; other readers
(ListUsers, SearchUsers) see UPDATING while a change is in flight.
"""

from __future__ import annotations

import functools
import time

from facebank.engine.packs import Calibration
from facebank.errors import (
    ConflictException,
    InvalidParameterException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
)
from facebank.operations import Context, Operation, Request, Response, operation
from facebank.operations.collections import get_collection
from facebank.operations.idempotency import run_once
from facebank.operations.images import load_image
from facebank.operations.quality import quality_reasons
from facebank.storage import (
    FaceNotFound,
    FaceRecord,
    FaceUserConflict,
    UserExists,
    UserFaceLimit,
    UserRecord,
)

MAX_FACES_PER_USER = 100  # Rekognition's quota: faces associated with one user
ASSOCIATE_THRESHOLD = 75.0  # AssociateFaces' UserMatchThreshold default
SEARCH_THRESHOLD = 80.0  # SearchUsers(ByImage) UserMatchThreshold default
MAX_USERS = 500  # MaxUsers / ListUsers MaxResults: the model's maximum, used when absent

# Similarity of a face (or user) to a user vector, per pack: 80 and 99 where a share 1e-3 and 1e-5
# of face-user impostor comparisons match, counted on LFW (bench/calibrate.py: users of three
# photos, the re-normalised mean, against every face of the 5,672 other people; on unseen halves
# of the people 1.0e-3 and 1.1-1.4e-5 pooled, docs/collections.md). A mean vector scores impostors
# higher than a face does (in dlib's space unrelated faces already have cosines ~0.83, and averaging
# lifts them), so users have their own map; it is the celebrities' map too (same templates).
USER_CALIBRATIONS: dict[str, Calibration] = {
    "open": Calibration(at_80=0.9383, at_99=0.9615),
    "fused": Calibration(at_80=0.8000, at_99=0.8441),
    "mobile": Calibration(at_80=0.3586, at_99=0.4904),
}


def user_not_found(collection_id: str, user_id: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"The user id: {user_id} does not exist in collection {collection_id}")


def _get_user(ctx: Context, collection_id: str, user_id: str) -> UserRecord:
    user = ctx.metadata.get_user(collection_id, user_id)
    if user is None:
        raise user_not_found(collection_id, user_id)
    return user


def user_calibration(ctx: Context) -> Calibration:
    pack = ctx.model_pack
    return USER_CALIBRATIONS.get(pack.name, pack.calibration)


def _user_matches(ctx: Context, hits: list[tuple[UserRecord, float]], threshold: float) -> list[dict]:
    calibration = user_calibration(ctx)
    out = []
    for user, cosine in hits:  # best first
        similarity = calibration.similarity(cosine)
        if similarity >= threshold:  # the cosine floor is bisected; this keeps the boundary exact
            out.append({"Similarity": similarity, "User": {"UserId": user.user_id, "UserStatus": user.status}})
    return out


def by_token(fn: Operation) -> Operation:
    """ClientRequestToken for a users operation (``facebank.operations.idempotency``), scoped to the
    collection's request ledger. Requests with the same parameters may both run; the operations
    are idempotent themselves (faces already in the user are ignored, a user created with this
    token is success), so that changes nothing twice."""

    @functools.wraps(fn)
    def wrapped(request: Request, ctx: Context) -> Response:
        token = request.get("ClientRequestToken")
        if token is None:
            return fn(request, ctx)
        payload = {k: v for k, v in request.items() if k != "ClientRequestToken"}
        key = f"{fn.__name__}:{token}"
        return run_once(ctx.ledger, request["CollectionId"], key, payload, lambda _: fn(request, ctx))

    return wrapped


# --- lifecycle


@operation("CreateUser")
@by_token
def create_user(request: Request, ctx: Context) -> Response:
    collection_id, user_id = request["CollectionId"], request["UserId"]
    token = request.get("ClientRequestToken")
    get_collection(ctx, collection_id)

    def existing_is_this_request(existing: UserRecord | None) -> Response:
        # The same token (a retry, or the SDK's auto-filled token resent): success, no change.
        if existing is not None and token is not None and existing.client_request_token == token:
            return {}
        raise ConflictException(f"A user with id {user_id} already exists in collection {collection_id}")

    existing = ctx.metadata.get_user(collection_id, user_id)
    if existing is not None:
        return existing_is_this_request(existing)
    try:
        ctx.metadata.put_user(
            collection_id, UserRecord(user_id, "CREATED", client_request_token=token, created=time.time())
        )
    except UserExists:  # a concurrent CreateUser won; it may have been this very request's retry
        return existing_is_this_request(ctx.metadata.get_user(collection_id, user_id))
    return {}


@operation("DeleteUser")
@by_token
def delete_user(request: Request, ctx: Context) -> Response:
    collection_id, user_id = request["CollectionId"], request["UserId"]
    token = request.get("ClientRequestToken")
    get_collection(ctx, collection_id)
    # A retry of a DeleteUser that already succeeded answers as the first did, and changes
    # nothing, even if the id was created again since.
    if token is not None and ctx.metadata.deleted_user_token(collection_id, user_id) == token:
        return {}
    # Its faces are disassociated in the same storage call; its vector dies with the record
    # (search only counts a user's current vector) and compaction drops it.
    if not ctx.metadata.delete_user(collection_id, user_id, token):
        raise user_not_found(collection_id, user_id)
    return {}


@operation("ListUsers")
def list_users(request: Request, ctx: Context) -> Response:
    collection_id = request["CollectionId"]
    get_collection(ctx, collection_id)
    users, token = ctx.metadata.list_users(
        collection_id, request.get("MaxResults") or MAX_USERS, request.get("NextToken")
    )
    out: Response = {"Users": [{"UserId": u.user_id, "UserStatus": u.status} for u in users]}
    if token:
        out["NextToken"] = token
    return out


# --- membership


def _unsuccessful(face_id: str, user_id: str | None, reason: str, confidence: float | None = None) -> dict:
    out: dict = {"FaceId": face_id}
    if user_id is not None:
        out["UserId"] = user_id
    if confidence is not None:
        out["Confidence"] = confidence
    out["Reasons"] = [reason]
    return out


def _candidates(
    records: dict[str, FaceRecord], wanted: list[str], user_id: str, unsuccessful: list[dict]
) -> list[FaceRecord]:
    """The faces among ``wanted`` that nobody owns yet; the others reported in ``unsuccessful``."""
    candidates = []
    for face_id in wanted:
        rec = records.get(face_id)
        if rec is None:
            unsuccessful.append(_unsuccessful(face_id, user_id, "FACE_NOT_FOUND"))
        elif rec.user_id == user_id:
            continue  # already this user's: ignored, and not reported (as Rekognition)
        elif rec.user_id is not None:
            unsuccessful.append(_unsuccessful(face_id, rec.user_id, "ASSOCIATED_TO_A_DIFFERENT_USER"))
        else:
            candidates.append(rec)
    return candidates


def _matching(
    ctx: Context,
    collection_id: str,
    user: UserRecord,
    candidates: list[FaceRecord],
    threshold: float,
    unsuccessful: list[dict],
) -> list[FaceRecord]:
    """A user that has faces only takes faces that match it (its vector, built from the faces it
    had before this call) at UserMatchThreshold."""
    if not candidates or not user.face_ids:
        return candidates
    current = ctx.user_index.user_vector(collection_id, user)
    vectors = ctx.index.vectors_of(collection_id, candidates)
    calibration = user_calibration(ctx)
    import numpy as np  # vectors are numpy arrays; metadata-only calls never load it

    kept = []
    for rec in candidates:
        v = vectors.get(rec.face_id)
        if v is None:  # metadata without a vector: cannot be matched, so cannot be a member
            unsuccessful.append(_unsuccessful(rec.face_id, user.user_id, "FACE_NOT_FOUND"))
            continue
        similarity = calibration.similarity(float(np.dot(v, current))) if current is not None else 100.0
        if similarity < threshold:
            unsuccessful.append(_unsuccessful(rec.face_id, user.user_id, "LOW_MATCH_CONFIDENCE", similarity))
        else:
            kept.append(rec)
    return kept


def _associate(
    ctx: Context, collection_id: str, user_id: str, candidates: list[FaceRecord], unsuccessful: list[dict]
) -> tuple[list[str], bool]:
    """Move each candidate to the user, conditionally; (associated ids, whether the quota stopped it)."""
    associated: list[str] = []
    for rec in candidates:
        try:
            ctx.metadata.set_face_user(collection_id, rec.face_id, user_id, None, max_faces=MAX_FACES_PER_USER)
            associated.append(rec.face_id)
        except FaceNotFound:  # deleted since we read it
            unsuccessful.append(_unsuccessful(rec.face_id, user_id, "FACE_NOT_FOUND"))
        except FaceUserConflict as e:  # claimed since we read it
            if e.current_user_id != user_id:  # (if by a concurrent call for this user: ignored)
                unsuccessful.append(_unsuccessful(rec.face_id, e.current_user_id, "ASSOCIATED_TO_A_DIFFERENT_USER"))
        except UserFaceLimit:  # concurrent calls filled the user since the check before
            return associated, True
    return associated, False


@operation("AssociateFaces")
@by_token
def associate_faces(request: Request, ctx: Context) -> Response:
    collection_id, user_id = request["CollectionId"], request["UserId"]
    threshold = request.get("UserMatchThreshold", ASSOCIATE_THRESHOLD)
    get_collection(ctx, collection_id, check_pack=True)
    user = _get_user(ctx, collection_id, user_id)
    if len(user.face_ids) >= MAX_FACES_PER_USER:
        raise ServiceQuotaExceededException(
            f"User {user_id} already has {MAX_FACES_PER_USER} faces, the most a user can have"
        )

    wanted = list(dict.fromkeys(request["FaceIds"]))
    unsuccessful: list[dict] = []
    candidates = _candidates(ctx.metadata.get_faces(collection_id, wanted), wanted, user_id, unsuccessful)
    candidates = _matching(ctx, collection_id, user, candidates, threshold, unsuccessful)
    if len(user.face_ids) + len(candidates) > MAX_FACES_PER_USER:
        raise ServiceQuotaExceededException(
            f"User {user_id} has {len(user.face_ids)} faces; {len(candidates)} more would exceed "
            f"{MAX_FACES_PER_USER}, the most a user can have"
        )
    associated, over_quota = _associate(ctx, collection_id, user_id, candidates, unsuccessful)

    if associated or over_quota or user.status == "UPDATING":
        # UPDATING with nothing new: a change whose vector was never committed (a crash, or a
        # request in flight); rebuilding is harmless either way and repairs the former.
        user = ctx.user_index.refresh(collection_id, user_id)
    if over_quota:
        raise ServiceQuotaExceededException(
            f"User {user_id} reached {MAX_FACES_PER_USER} faces; associated {len(associated)} of this request's faces"
        )
    return {
        "AssociatedFaces": [{"FaceId": f} for f in associated],
        "UnsuccessfulFaceAssociations": unsuccessful,
        "UserStatus": user.status,
    }


@operation("DisassociateFaces")
@by_token
def disassociate_faces(request: Request, ctx: Context) -> Response:
    collection_id, user_id = request["CollectionId"], request["UserId"]
    get_collection(ctx, collection_id, check_pack=True)
    users = ctx.user_index
    user = _get_user(ctx, collection_id, user_id)
    wanted = list(dict.fromkeys(request["FaceIds"]))
    records = ctx.metadata.get_faces(collection_id, wanted)
    disassociated: list[str] = []
    unsuccessful: list[dict] = []
    for face_id in wanted:
        rec = records.get(face_id)
        exists, owner = rec is not None, rec.user_id if rec is not None else None
        if owner == user_id:
            try:
                ctx.metadata.set_face_user(collection_id, face_id, None, user_id)
                disassociated.append(face_id)
                continue
            except FaceNotFound:
                exists = False
            except FaceUserConflict as e:
                owner = e.current_user_id
        # As Rekognition: a face already out of the user is ignored (so a retry answers cleanly);
        # a face that is not in the collection, or is in another user, is reported.
        if not exists:
            unsuccessful.append(_unsuccessful(face_id, user_id, "FACE_NOT_FOUND"))
        elif owner is not None and owner != user_id:
            unsuccessful.append(_unsuccessful(face_id, owner, "ASSOCIATED_TO_A_DIFFERENT_USER"))
    if disassociated or user.status == "UPDATING":
        user = users.refresh(collection_id, user_id)
    return {
        "DisassociatedFaces": [{"FaceId": f} for f in disassociated],
        "UnsuccessfulFaceDisassociations": unsuccessful,
        "UserStatus": user.status,
    }


# --- search


@operation("SearchUsers")
def search_users(request: Request, ctx: Context) -> Response:
    collection = get_collection(ctx, request["CollectionId"], check_pack=True)
    collection_id = collection.collection_id
    user_id, face_id = request.get("UserId"), request.get("FaceId")
    if (user_id is None) == (face_id is None):
        raise InvalidParameterException("Provide exactly one of UserId or FaceId")
    threshold = request.get("UserMatchThreshold", SEARCH_THRESHOLD)
    users = ctx.user_index
    out: Response = {}
    if user_id is not None:
        # Other users like this one (the user itself is left out, as SearchFaces leaves out
        # the searched face); a user without faces has no vector and matches nobody.
        query = users.user_vector(collection_id, _get_user(ctx, collection_id, user_id))
        out["SearchedUser"] = {"UserId": user_id}
    else:
        face_id = request["FaceId"]  # exactly one of the two is given (checked above)
        rec = ctx.metadata.get_faces(collection_id, [face_id]).get(face_id)
        if rec is None:
            raise InvalidParameterException(f"FaceId {face_id} does not exist in collection {collection_id}")
        query = ctx.index.vectors_of(collection_id, [rec]).get(face_id)
        out["SearchedFace"] = {"FaceId": face_id}
    hits = []
    if query is not None:
        hits = users.search(
            collection_id,
            query,
            request.get("MaxUsers") or MAX_USERS,
            user_calibration(ctx).cosine_floor(threshold),
            exclude=user_id,
        )
    return {
        "UserMatches": _user_matches(ctx, hits, threshold),
        "FaceModelVersion": collection.face_model_version,
        **out,
    }


@operation("SearchUsersByImage")
def search_users_by_image(request: Request, ctx: Context) -> Response:
    collection = get_collection(ctx, request["CollectionId"], check_pack=True)
    threshold = request.get("UserMatchThreshold", SEARCH_THRESHOLD)
    level = request.get("QualityFilter", "NONE")
    rgb = load_image(request["Image"], ctx)
    engine = ctx.engine
    faces = engine.detect(rgb)  # largest first
    # The largest face that meets the quality bar is searched. Every other face is reported
    # with why not: FACE_NOT_LARGEST when smaller than the searched one, plus its quality
    # reasons at the requested QualityFilter (NONE: none).
    reasons = [quality_reasons(f, level) for f in faces]
    searched = next((i for i, r in enumerate(reasons) if not r), None)
    unsearched = []
    for i, (face, why) in enumerate(zip(faces, reasons, strict=True)):
        if i == searched:
            continue
        why = (["FACE_NOT_LARGEST"] if searched is not None and i > searched else []) + why
        unsearched.append({"FaceDetails": face.detail(), "Reasons": why})
    out: Response = {"UserMatches": [], "FaceModelVersion": collection.face_model_version}
    if searched is not None:
        # No valid face: no SearchedFace and no matches, not an error (as Rekognition documents).
        face = faces[searched]
        out["SearchedFace"] = {"FaceDetail": face.detail()}
        hits = ctx.user_index.search(
            collection.collection_id,
            engine.embed(rgb, face),
            request.get("MaxUsers") or MAX_USERS,
            user_calibration(ctx).cosine_floor(threshold),
        )
        out["UserMatches"] = _user_matches(ctx, hits, threshold)
    out["UnsearchedFaces"] = unsearched
    return out
