"""Stored-video person tracking: StartPersonTracking / GetPersonTracking (issue 15).

Amazon ended Rekognition People Pathing on 2025-10-31; these are its wire shapes over facebank's
video job framework (``video`` for Start/Get, ``video_jobs`` for the pipeline, which calls
``frame_items`` here for each sampled frame). A person is a whole body, seen from any side, found
by MoveNet MultiPose (``engine.persons``); ``Person.Index`` comes from the same tracker as face
search (``engine.tracker``) on the body boxes, without embeddings: a person keeps an Index while
in view (and across a gap of up to the tracker's ``max_gap_ms``), and someone who leaves and comes
back gets a new one. ``Person.Face`` is the DEFAULT FaceDetail of the face the face detector finds
inside that person's box (the one at the person's head keypoints), when one is visible.

Nothing at import loads numpy or a model: the Start/Get Lambda functions stay small.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from facebank.operations import Context, Request, Response, operation
from facebank.operations.video import get_job, start_job

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

    from facebank.engine import Face, FaceEngine
    from facebank.engine.persons import Person, PersonDetector
    from facebank.engine.tracker import Tracker

PERSONS = "StartPersonTracking"
HEAD = (0, 1, 2, 3, 4)  # MoveNet keypoints: nose, eyes, ears
HEAD_SCORE = 0.3  # a head keypoint counts from this score (MoveNet's own visualisations use 0.3)
FACE_INSIDE = 0.5  # share of a face box that must lie inside the person's box
SCORE = "DetectionScore"  # the detector's score of an item, kept until the result pages are written


@operation("StartPersonTracking")
def start_person_tracking(request: Request, ctx: Context) -> Response:
    return start_job(PERSONS, request, ctx, {})


@operation("GetPersonTracking")
def get_person_tracking(request: Request, ctx: Context) -> Response:
    return get_job(request, ctx, PERSONS, "Persons", request.get("SortBy", "TIMESTAMP"))


@functools.cache
def _detector(model_dir: Path, threads: int) -> PersonDetector:
    from facebank import models
    from facebank.engine.persons import MODEL, PersonDetector

    return PersonDetector(models.resolve(MODEL, model_dir), threads)


def person_detector(ctx: Context) -> PersonDetector:
    """The process's person detector (loaded at the first person-tracking frame)."""
    return _detector(ctx.settings.resolved_model_dir, ctx.settings.ort_threads)


def frame_items(
    timestamp: int, rgb: np.ndarray, detector: PersonDetector, engine: FaceEngine, tracker: Tracker
) -> list[dict[str, Any]]:
    """The PersonDetection items of one sampled frame: each person's Index, box and face."""
    people = detector.detect(rgb)
    if not people:  # no face detection either: most frames of an empty scene cost only the detector
        return []
    faces = engine.detect(rgb, attributes=["DEFAULT"])
    height, width = rgb.shape[:2]
    boxes = [
        (float(x1) / width, float(y1) / height, float(x2) / width, float(y2) / height)
        for x1, y1, x2, y2 in (p.box for p in people)
    ]
    indexes = tracker.update(timestamp, boxes)
    face_of = faces_of_people(people, faces)
    items = []
    for i, (index, (left, top, right, bottom)) in enumerate(zip(indexes, boxes, strict=True)):
        box = {"Width": right - left, "Height": bottom - top, "Left": left, "Top": top}
        person: dict[str, Any] = {"Index": index, "BoundingBox": box}
        if i in face_of:
            person["Face"] = faces[face_of[i]].detail()
        items.append({"Timestamp": timestamp, "Person": person, SCORE: round(people[i].score, 6)})
    return items


def result_orders(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The job's items in each SortBy order, as GetPersonTracking serves them: TIMESTAMP by time,
    then Index; INDEX by Index, each person's items by detection confidence (the API reference:
    "the array elements for each person are sorted by detection confidence"), then time. The
    detector's score, kept in the segment results for this, is not part of the response."""
    by_time = sorted(items, key=lambda i: (i["Timestamp"], i["Person"]["Index"]))
    by_index = sorted(items, key=lambda i: (i["Person"]["Index"], -i.get(SCORE, 0.0), i["Timestamp"]))
    published = [{k: v for k, v in i.items() if k != SCORE} for i in by_time]
    position = {id(i): n for n, i in enumerate(by_time)}
    return {"TIMESTAMP": published, "INDEX": [published[position[id(i)]] for i in by_index]}


def faces_of_people(people: list[Person], faces: list[Face]) -> dict[int, int]:
    """Which face (position in ``faces``) is whose (position in ``people``), one to one.

    A face may belong to a person when at least FACE_INSIDE of its box lies inside the person's
    box. Pairs are taken nearest first: the distance from the face's centre to the mean of the
    person's visible head keypoints (nose, eyes, ears), or to the top of the box's centre line
    when none is visible (a person seen from behind shows no face anyway), in face widths.
    """
    import numpy as np

    pairs = []
    for p_pos, person in enumerate(people):
        head = person.keypoints[list(HEAD)]
        seen = head[head[:, 2] >= HEAD_SCORE]
        x1, y1, x2, y2 = person.box
        anchor = seen[:, :2].mean(axis=0) if len(seen) else np.array([(x1 + x2) / 2, y1])
        for f_pos, face in enumerate(faces):
            fx1, fy1, fx2, fy2 = face.box
            inside = max(0.0, min(x2, fx2) - max(x1, fx1)) * max(0.0, min(y2, fy2) - max(y1, fy1))
            area = max((fx2 - fx1) * (fy2 - fy1), 1e-9)
            if inside / area < FACE_INSIDE:
                continue
            centre = np.array([(fx1 + fx2) / 2, (fy1 + fy2) / 2])
            pairs.append((float(np.linalg.norm(centre - anchor)) / max(fx2 - fx1, 1.0), p_pos, f_pos))
    taken_people: set[int] = set()
    taken_faces: set[int] = set()
    out = {}
    for _, p_pos, f_pos in sorted(pairs):
        if p_pos not in taken_people and f_pos not in taken_faces:
            taken_people.add(p_pos)
            taken_faces.add(f_pos)
            out[p_pos] = f_pos
    return out
