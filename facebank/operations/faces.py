"""DetectFaces and CompareFaces."""

from __future__ import annotations

from typing import Any

from facebank.errors import InvalidParameterException
from facebank.operations import Context, Request, Response, operation
from facebank.operations.images import load_image
from facebank.operations.quality import passes_quality

MAX_TARGET_FACES = 100  # CompareFaces compares against at most the 100 largest target faces
# botocore's ComparedFace: the DEFAULT members, then Emotions and Smile (measured on target faces).
COMPARED_FACE = ("BoundingBox", "Confidence", "Landmarks", "Pose", "Quality", "Emotions", "Smile")


@operation("DetectFaces")
def detect_faces(request: Request, ctx: Context) -> Response:
    # DEFAULT, ALL and named attributes: what a model here measures is returned, the rest is left
    # out rather than invented (README: "Attributes").
    rgb = load_image(request["Image"], ctx)
    faces = ctx.engine.detect(rgb, attributes=request.get("Attributes", ["DEFAULT"]))
    return {"FaceDetails": [face.detail() for face in faces]}


@operation("CompareFaces")
def compare_faces(request: Request, ctx: Context) -> Response:
    threshold = request.get("SimilarityThreshold", 80.0)
    level = request.get("QualityFilter", "NONE")
    engine = ctx.engine
    source_rgb = load_image(request["SourceImage"], ctx)
    source_faces = [f for f in engine.detect(source_rgb) if passes_quality(f, level)]
    if not source_faces:
        raise InvalidParameterException("There are no faces in the source image that meet the quality bar")
    source = source_faces[0]  # the largest
    target_rgb = load_image(request["TargetImage"], ctx)
    targets = [f for f in engine.detect(target_rgb, MAX_TARGET_FACES) if passes_quality(f, level)]
    if not targets:
        raise InvalidParameterException("There are no faces in the target image that meet the quality bar")
    engine.describe(target_rgb, targets, ["EMOTIONS", "SMILE"], refine=False)
    probe = engine.embed(source_rgb, source)
    matches: list[dict[str, Any]] = []
    unmatched: list[dict[str, Any]] = []
    for face in targets:
        similarity = engine.similarity(probe, engine.embed(target_rgb, face))
        detail = _compare_face(face)
        if similarity >= threshold:
            matches.append({"Similarity": similarity, "Face": detail})
        else:
            unmatched.append(detail)
    matches.sort(key=lambda m: m["Similarity"], reverse=True)
    return {
        "SourceImageFace": {"BoundingBox": source.bounding_box(), "Confidence": source.confidence},
        "FaceMatches": matches,
        "UnmatchedFaces": unmatched,
    }


def _compare_face(face) -> dict:
    detail = face.detail()
    return {k: detail[k] for k in COMPARED_FACE if k in detail}
