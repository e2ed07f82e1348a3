"""engine.tracker: one Index per person while visible, re-entry by embedding, segments joined."""

from __future__ import annotations

import numpy as np
import pytest

from facebank.engine.tracker import LinkRule, Tracker, TrackSummary, box_iou, join_segments

RULE = LinkRule(max_gap_ms=1000, min_iou=0.3, link_cosine=0.2, reid_cosine=0.8)


_PEOPLE = np.linalg.qr(np.random.default_rng(0).standard_normal((64, 64)))[0]  # orthonormal columns


def person(k: int) -> np.ndarray:
    """A unit embedding orthogonal to every other person's (cosine 0: clearly someone else)."""
    return _PEOPLE[:, k]


def noisy(base: np.ndarray, seed: int, noise: float = 0.15) -> np.ndarray:
    v = base + noise * np.random.default_rng(seed).standard_normal(base.size) / np.sqrt(base.size)
    return v / np.linalg.norm(v)


def box(x: float, y: float = 0.3, size: float = 0.2) -> tuple[float, float, float, float]:
    return (x, y, x + size, y + size)


def test_box_iou():
    assert box_iou(np.array(box(0.1)), np.array(box(0.1))) == pytest.approx(1.0)
    assert box_iou(np.array(box(0.1)), np.array(box(0.5))) == 0.0
    assert box_iou(np.array((0, 0, 2, 1)), np.array((1, 0, 3, 1))) == pytest.approx(1 / 3)


def test_two_people_moving_keep_their_indexes():
    tracker = Tracker(RULE)
    a, b = person(1), person(2)
    seen = [
        tracker.update(t * 250, [box(0.1 + 0.01 * t), box(0.6 - 0.01 * t)], [noisy(a, t), noisy(b, 100 + t)])
        for t in range(20)
    ]
    assert all(indexes == [0, 1] for indexes in seen)
    summaries = tracker.summaries()
    assert [(s.index, s.first_ms, s.last_ms, s.count) for s in summaries] == [(0, 0, 4750, 20), (1, 0, 4750, 20)]
    assert np.dot(summaries[0].embedding, a) > 0.95 and np.dot(summaries[1].embedding, b) > 0.95


def test_order_of_detections_does_not_matter():
    tracker = Tracker(RULE)
    a, b = person(1), person(2)
    tracker.update(0, [box(0.1), box(0.6)], [a, b])
    assert tracker.update(250, [box(0.6), box(0.1)], [b, a]) == [1, 0]


def test_embeddings_tell_apart_people_who_swap_places_between_samples():
    tracker = Tracker(RULE)
    a, b = person(1), person(2)
    tracker.update(0, [box(0.3), box(0.35)], [a, b])  # overlapping boxes: IoU alone cannot tell
    assert tracker.update(250, [box(0.35), box(0.3)], [a, b]) == [0, 1]


def test_a_stranger_in_the_same_place_is_a_new_person():
    tracker = Tracker(RULE)
    tracker.update(0, [box(0.3)], [person(1)])
    assert tracker.update(250, [box(0.3)], [person(2)]) == [1]


def test_without_embeddings_overlap_alone_links():
    tracker = Tracker(RULE)
    assert tracker.update(0, [box(0.3)]) == [0]
    assert tracker.update(250, [box(0.32)]) == [0]
    assert tracker.update(500, [box(0.8)]) == [1]  # no overlap, nothing to re-identify with
    assert tracker.update(2000, [box(0.32)]) == [2]  # gap > max_gap: a re-entry is a new person


def test_reentry_keeps_the_index_of_the_same_person_only():
    tracker = Tracker(RULE)
    a, b = person(1), person(2)
    for t in range(4):
        tracker.update(t * 250, [box(0.1)], [noisy(a, t)])
    assert tracker.update(3000, [box(0.7)], [noisy(a, 50)]) == [0]  # back after 2 s elsewhere: same Index
    assert tracker.update(6000, [box(0.1)], [b]) == [1]  # someone else where A was
    summary = tracker.summaries()[0]
    assert (summary.first_ms, summary.last_ms, summary.count) == (0, 3000, 5)


def test_a_fast_move_within_the_gap_is_followed_by_embedding():
    tracker = Tracker(RULE)
    a = person(1)
    tracker.update(0, [box(0.05)], [a])
    assert tracker.update(250, [box(0.7)], [noisy(a, 1)]) == [0]


def _frames(n: int) -> list[tuple[int, list, list]]:
    """A walks across 0-4 s, leaves, comes back at 7 s; B is there from 1 s to 9 s; C appears once."""
    a, b, c = person(1), person(2), person(3)
    frames = []
    for k in range(n):
        t = k * 250
        boxes, embs = [], []
        if t < 4000 or t >= 7000:
            boxes.append(box(0.05 + 0.005 * k))
            embs.append(noisy(a, k))
        if 1000 <= t < 9000:
            boxes.append(box(0.7, 0.5))
            embs.append(noisy(b, 1000 + k))
        if t == 5000:
            boxes.append(box(0.4, 0.1))
            embs.append(c)
        frames.append((t, boxes, embs))
    return frames


def _partition(labels: list[list[int]]) -> list[list[int]]:
    """Which detections share an Index, independent of the numbers used."""
    flat = [label for frame in labels for label in frame]
    groups: dict[int, list[int]] = {}
    for position, label in enumerate(flat):
        groups.setdefault(label, []).append(position)
    return sorted(groups.values())


@pytest.mark.parametrize("cuts", [[2000], [1000, 4500, 7000], [3900, 4100, 6900, 7100]])
def test_segments_joined_give_what_one_pass_gives(cuts):
    frames = _frames(40)
    whole = Tracker(RULE)
    one_pass = [whole.update(t, boxes, embs) for t, boxes, embs in frames]

    bounds = [0, *cuts, 10**9]
    local_labels, summaries = [], []
    for start, end in zip(bounds, bounds[1:], strict=False):
        tracker = Tracker(RULE)
        local_labels.append([tracker.update(t, b, e) for t, b, e in frames if start <= t < end])
        summaries.append(tracker.summaries())
    mappings = join_segments(summaries, RULE)
    joined = [
        [mapping[i] for i in frame] for labels, mapping in zip(local_labels, mappings, strict=True) for frame in labels
    ]
    assert _partition(joined) == _partition(one_pass)
    assert len(set(i for frame in joined for i in frame)) == 3
    # Global indexes are numbered by first appearance, as in one pass.
    assert joined[0] == [0] and joined[4] == [0, 1]


def test_join_without_embeddings_links_only_across_the_boundary():
    first = [TrackSummary(0, 0, 1750, box(0.1), box(0.2), None, 8)]
    second = [
        TrackSummary(0, 2000, 3000, box(0.21), box(0.3), None, 5),  # continues across the boundary
        TrackSummary(1, 3500, 3750, box(0.1), box(0.1), None, 2),  # where A began, 1.75 s later: new
    ]
    assert join_segments([first, second], RULE) == [{0: 0}, {0: 0, 1: 1}]


def test_summaries_survive_json():
    tracker = Tracker(RULE)
    tracker.update(0, [box(0.1)], [person(1)])
    summary = tracker.summaries()[0]
    assert TrackSummary.from_json(summary.to_json()) == summary
