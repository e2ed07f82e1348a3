"""RecognizeCelebrities and GetCelebrityInfo over the operator's own gallery, and the import that
builds it (``facebank celebrities import``; facebank.storage.celebrities keeps it).

A celebrity is one vector: the re-normalised mean of the largest face of each of its photos, as a
user is (docs/users.md measured the mean above best-face matching at an equal false-match rate).
A face is recognised when its best celebrity reaches ``MATCH_THRESHOLD`` on the celebrity
calibration (``CELEBRITY_CALIBRATIONS``, fitted by bench/celebrities.py), and each celebrity is
given to at most one face of an image (the face it matches best): one person appears once in a
photo. Every other face is an UnrecognizedFace.

numpy is imported inside the functions: GetCelebrityInfo is a metadata-only function on AWS.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facebank.engine.packs import Calibration
from facebank.errors import RekognitionError, ResourceNotFoundException
from facebank.operations import Context, Request, Response, operation
from facebank.operations.faces import COMPARED_FACE
from facebank.operations.images import load_image
from facebank.storage.celebrities import (
    KNOWN_GENDERS,
    MAX_URLS,
    CelebrityRecord,
    celebrity_id,
    normalised_name,
)

if TYPE_CHECKING:
    import numpy as np

    from facebank.engine.face_engine import Face
    from facebank.storage.celebrities import GallerySnapshot

MAX_FACES = 64  # RecognizeCelebrities looks at the 64 largest faces of an image
# RecognizeCelebrities takes no threshold: a face is a celebrity at MatchConfidence >= 80, where
# the calibration below promises a false-match rate of at most 1e-3 per face-celebrity pair (for
# 90 % of groups of people it never saw), as FaceMatchThreshold and UserMatchThreshold's default 80
# do for faces and users. A stranger is compared with every celebrity of the gallery, so the chance
# that someone outside it is named grows with the gallery: about N x 1e-3 for N celebrities
# (docs/celebrities.md gives the measured rates).
MATCH_THRESHOLD = 80.0
# MatchConfidence of a face against a celebrity's mean vector, per pack: 80 and 99 where a share
# 1e-3 and 1e-5 of face-celebrity impostor comparisons match, counted on LFW (bench/calibrate.py:
# celebrities of three photos against every face of the 5,672 other people; docs/collections.md).
# The same templates as users, so the same map as USER_CALIBRATIONS.
CELEBRITY_CALIBRATIONS: dict[str, Calibration] = {
    "open": Calibration(at_80=0.9383, at_99=0.9615),
    "fused": Calibration(at_80=0.8000, at_99=0.8441),
    "mobile": Calibration(at_80=0.3586, at_99=0.4904),
}
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
INFO_FILE = "info.json"


def celebrity_calibration(ctx: Context) -> Calibration:
    pack = ctx.model_pack
    return CELEBRITY_CALIBRATIONS.get(pack.name, pack.calibration)


def _gender(rec: CelebrityRecord) -> dict[str, Any]:
    return {"KnownGender": {"Type": rec.known_gender}} if rec.known_gender else {}


def celebrity_fields(rec: CelebrityRecord) -> dict[str, Any]:
    """Urls, Name, Id and KnownGender as Celebrity / CelebrityDetail carry them."""
    return {"Urls": list(rec.urls), "Name": rec.name, "Id": rec.celebrity_id, **_gender(rec)}


@dataclass(frozen=True)
class Match:
    face: int  # index into the faces given
    record: CelebrityRecord
    confidence: float


def match_celebrities(vectors: list[np.ndarray], ctx: Context, snapshot: GallerySnapshot | None = None) -> list[Match]:
    """The recognised faces among ``vectors`` (unit vectors of faces of one image or frame): each
    face's celebrity at or above MATCH_THRESHOLD, each celebrity given at most once, to the face
    it matches best. ``snapshot``: the gallery to use (a video segment keeps one); default the
    current one."""
    import numpy as np

    snapshot = snapshot or ctx.celebrity_index.current()
    if snapshot.matrix is None or not vectors:
        return []
    calibration = celebrity_calibration(ctx)
    floor = calibration.cosine_floor(MATCH_THRESHOLD)
    cosines = np.stack(vectors).astype(np.float32) @ snapshot.matrix.T  # faces x celebrities
    candidates = [(float(cosines[f, c]), f, c) for f, c in zip(*np.nonzero(cosines >= floor), strict=True)]
    matches, faces_taken, celebrities_taken = [], set(), set()
    for cosine, face, celebrity in sorted(candidates, reverse=True):
        confidence = calibration.similarity(cosine)
        if confidence < MATCH_THRESHOLD or face in faces_taken or celebrity in celebrities_taken:
            continue
        faces_taken.add(face)
        celebrities_taken.add(celebrity)
        matches.append(Match(int(face), snapshot.records[celebrity], confidence))
    return matches


def _compared_face(face: Face) -> dict:
    detail = face.detail()
    return {k: detail[k] for k in COMPARED_FACE if k in detail}


@operation("RecognizeCelebrities")
def recognize_celebrities(request: Request, ctx: Context) -> Response:
    rgb = load_image(request["Image"], ctx)
    engine = ctx.engine
    faces = engine.detect(rgb, MAX_FACES)
    if not faces:
        return {"CelebrityFaces": [], "UnrecognizedFaces": []}
    engine.describe(rgb, faces, ["EMOTIONS", "SMILE"], refine=False)  # ComparedFace's Emotions and Smile
    matches = {m.face: m for m in match_celebrities([engine.embed(rgb, f) for f in faces], ctx)}
    celebrity_faces, unrecognized = [], []
    for i, face in enumerate(faces):  # largest face first, in both lists
        detail = _compared_face(face)
        if i in matches:
            m = matches[i]
            celebrity_faces.append({**celebrity_fields(m.record), "Face": detail, "MatchConfidence": m.confidence})
        else:
            unrecognized.append(detail)
    return {"CelebrityFaces": celebrity_faces, "UnrecognizedFaces": unrecognized}


def celebrity_not_found(celebrity: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"Celebrity Id {celebrity} does not exist")


@operation("GetCelebrityInfo")
def get_celebrity_info(request: Request, ctx: Context) -> Response:
    rec = ctx.celebrities.get_celebrity(request["Id"])
    if rec is None:
        raise celebrity_not_found(request["Id"])
    return {"Urls": list(rec.urls), "Name": rec.name, **_gender(rec)}


# --- import: building the gallery from DIR/<Name>/ (photos + optional info.json)


class GalleryError(ValueError):
    """A gallery directory or info.json the import cannot take; the message says which and why."""


@dataclass
class CelebritySource:
    name: str
    photos: list[Path]
    urls: tuple[str, ...] = ()
    known_gender: str | None = None


@dataclass
class ImportResult:
    imported: list[CelebrityRecord] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # name -> why
    notes: list[str] = field(default_factory=list)  # photos skipped or with several faces


def read_info(path: Path) -> tuple[tuple[str, ...], str | None]:
    """(Urls, KnownGender) of an info.json; absent file: no Urls, no gender."""
    if not path.is_file():
        return (), None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GalleryError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(info, dict):
        raise GalleryError(f"{path}: must be a JSON object with Urls and/or KnownGender")
    if unknown := sorted(set(info) - {"Urls", "KnownGender"}):
        raise GalleryError(f"{path}: unknown keys {unknown} (allowed: Urls, KnownGender)")
    urls = info.get("Urls", [])
    if not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls):
        raise GalleryError(f"{path}: Urls must be a list of non-empty strings")
    if len(urls) > MAX_URLS:
        raise GalleryError(f"{path}: {len(urls)} Urls, at most {MAX_URLS} are allowed")
    gender = info.get("KnownGender")
    if gender is not None and gender not in KNOWN_GENDERS:
        raise GalleryError(f"{path}: KnownGender must be one of {', '.join(KNOWN_GENDERS)}, not {gender!r}")
    return tuple(urls), gender


def read_gallery_dir(root: Path) -> list[CelebritySource]:
    """Every ``root/<Name>/``, its photos (by name) and info.json; raises GalleryError for a
    directory that is not a gallery or an info.json that is wrong (nothing is imported then)."""
    if not root.is_dir():
        raise GalleryError(f"{root} is not a directory")
    sources = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name = normalised_name(sub.name)
        urls, gender = read_info(sub / INFO_FILE)
        photos = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
        sources.append(CelebritySource(name, photos, urls, gender))
    if not sources:
        raise GalleryError(f"{root} holds no <Name>/ directories")
    ids: dict[str, str] = {}
    for s in sources:
        if (other := ids.setdefault(celebrity_id(s.name), s.name)) != s.name:
            raise GalleryError(f"{other!r} and {s.name!r} have the same celebrity Id; rename one")
    return sources


def enrol(source: CelebritySource, ctx: Context, notes: list[str]) -> CelebrityRecord:
    """The record of one celebrity: the mean of the largest face of each photo that has one."""
    import numpy as np

    from facebank.search.users import mean_vector

    engine = ctx.engine
    vectors = []
    for photo in source.photos:
        try:
            rgb = load_image({"Bytes": photo.read_bytes()}, ctx)
        except (OSError, RekognitionError) as exc:
            notes.append(f"{photo}: skipped ({getattr(exc, 'message', exc)})")
            continue
        faces = engine.detect(rgb)
        if not faces:
            notes.append(f"{photo}: skipped (no face found)")
            continue
        if len(faces) > 1:
            notes.append(f"{photo}: {len(faces)} faces, the largest used")
        vectors.append(engine.embed(rgb, faces[0]))
    if not vectors:
        raise GalleryError(f"no photo of {source.name} has a face ({len(source.photos)} photos)")
    pack = engine.pack
    return CelebrityRecord(
        celebrity_id=celebrity_id(source.name),
        name=source.name,
        urls=source.urls,
        known_gender=source.known_gender,
        pack=pack.name,
        face_model_version=pack.face_model_version,
        vector=mean_vector(np.stack(vectors)).astype("<f4").tobytes(),
        photos=len(vectors),
    )


def import_gallery(
    root: Path, ctx: Context, progress: Callable[[str], None] = lambda _: None, only: Iterable[str] | None = None
) -> ImportResult:
    """Import (insert or replace) every celebrity of ``root`` into ``ctx.celebrities``. Each
    celebrity is written whole in one atomic put; one that cannot be enrolled is reported in
    ``failed`` and the others still go in. Re-importing a name replaces its record under the same Id."""
    from facebank.storage.celebrities import CelebrityIdConflict

    result = ImportResult()
    wanted = set(only) if only is not None else None
    for source in read_gallery_dir(root):
        if wanted is not None and source.name not in wanted:
            continue
        try:
            if not source.photos:
                raise GalleryError(f"{source.name}: no .jpg, .jpeg or .png photo")
            rec = enrol(source, ctx, result.notes)
            ctx.celebrities.put_celebrity(rec)
        except (GalleryError, CelebrityIdConflict) as exc:
            result.failed[source.name] = str(exc)
            progress(f"failed {source.name}: {exc}")
            continue
        result.imported.append(rec)
        progress(f"{rec.celebrity_id} {rec.name} ({rec.photos} of {len(source.photos)} photos)")
    return result


# --- StartCelebrityRecognition / GetCelebrityRecognition: the video job framework's API
# (facebank.operations.video: Start/Get, ledger, pages; video_jobs: the pipeline), with the frame
# analysis and the result orders below.

CELEBRITY_JOBS = "StartCelebrityRecognition"


@operation("StartCelebrityRecognition")
def start_celebrity_recognition(request: Request, ctx: Context) -> Response:
    from facebank.operations.video import start_job

    return start_job(CELEBRITY_JOBS, request, ctx, {})


@operation("GetCelebrityRecognition")
def get_celebrity_recognition(request: Request, ctx: Context) -> Response:
    from facebank.operations.video import get_job

    return get_job(request, ctx, CELEBRITY_JOBS, "Celebrities", request.get("SortBy", "TIMESTAMP"))


def celebrity_frame_items(
    timestamp: int, rgb: np.ndarray, faces: list[Face], ctx: Context, snapshot: GallerySnapshot
) -> list[dict]:
    """The CelebrityRecognition items of one sampled frame: a recognised face's celebrity (Urls,
    Name, Id, KnownGender), Confidence (its MatchConfidence), its BoundingBox and Face (the DEFAULT
    FaceDetail, as GetCelebrityRecognition documents). Unrecognised faces give nothing."""
    if snapshot.matrix is None or not faces:
        return []
    engine = ctx.engine
    matches = match_celebrities([engine.embed(rgb, face) for face in faces], ctx, snapshot)
    items = []
    for m in sorted(matches, key=lambda m: m.face):
        face = faces[m.face]
        celebrity = {
            **celebrity_fields(m.record),
            "Confidence": m.confidence,
            "BoundingBox": face.bounding_box(),
            "Face": face.detail(),
        }
        items.append({"Timestamp": timestamp, "Celebrity": celebrity})
    return items


def celebrity_orders(items: list[dict]) -> dict[str, list[dict]]:
    """The result orders of GetCelebrityRecognition's SortBy: TIMESTAMP (then Id) and ID (then time)."""
    return {
        "TIMESTAMP": sorted(items, key=lambda i: (i["Timestamp"], i["Celebrity"]["Id"])),
        "ID": sorted(items, key=lambda i: (i["Celebrity"]["Id"], i["Timestamp"])),
    }
