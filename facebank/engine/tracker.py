"""Tracks of faces across the sampled frames of a video: one Index per person while visible.

Pure numpy, no model: each sampled frame's detections (boxes as ratios of the frame, and unit
embeddings when the caller has them) are associated with the live tracks by box overlap and
embedding cosine, greedily, best pair first:

- a detection continues a live track (seen no more than ``max_gap_ms`` ago) when their boxes
  overlap (IoU >= ``min_iou``) and, with embeddings, their cosine is at least ``link_cosine``
  (a lenient floor: a turned head looks less like itself, but a different person overlapping the
  same place is still told apart); or, without overlap, when the cosine reaches ``reid_cosine``
  (the person moved fast between two samples);
- a track unseen for more than ``max_gap_ms`` ends;
- re-entry: a detection that continues no live track takes the Index of an ended track whose mean
  embedding it matches at ``reid_cosine`` or better (the collection match threshold's cosine, so
  "same person" means what a search would call a match), otherwise a new Index. Without
  embeddings a re-entry always gets a new Index.

``TrackSummary`` is what a segment hands over for joining (``join_segments``): segments analysed
apart (AWS) are stitched with the same rules applied at the boundary, so one person keeps one
Index across segments.

Why not a library: ``trackers`` on PyPI (SORT/DeepSORT/ByteTrack) depends on the GUI build of
opencv-python, and ByteTrack-style motion models add nothing at a few samples a second, where
faces move far between samples; the whole rule fits here and is tested (tests/test_video_tracker.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_GAP_MS = 1000  # a track survives this long unseen (a few sampled frames missed by the detector)
MIN_IOU = 0.3


@dataclass
class TrackSummary:
    """One track of a segment: enough to join it with the tracks of the next segment."""

    index: int
    first_ms: int
    last_ms: int
    first_box: tuple[float, float, float, float]  # x1, y1, x2, y2 as ratios of the frame
    last_box: tuple[float, float, float, float]
    embedding: list[float] | None  # mean unit embedding (re-normalised), None without embeddings
    count: int = 1

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "first_box": list(self.first_box),
            "last_box": list(self.last_box),
            "embedding": self.embedding,
            "count": self.count,
        }

    @classmethod
    def from_json(cls, data: dict) -> TrackSummary:
        return cls(
            index=int(data["index"]),
            first_ms=int(data["first_ms"]),
            last_ms=int(data["last_ms"]),
            first_box=tuple(data["first_box"]),
            last_box=tuple(data["last_box"]),
            embedding=data.get("embedding"),
            count=int(data.get("count", 1)),
        )


@dataclass
class _Track:
    index: int
    first_ms: int
    last_ms: int
    first_box: np.ndarray
    last_box: np.ndarray
    embedding_sum: np.ndarray | None
    count: int = 1
    embedded_ms: int | None = None  # when the track last had an embedding measured

    def mean_embedding(self) -> np.ndarray | None:
        if self.embedding_sum is None:
            return None
        norm = float(np.linalg.norm(self.embedding_sum))
        return self.embedding_sum / norm if norm > 0 else self.embedding_sum

    def summary(self) -> TrackSummary:
        mean = self.mean_embedding()
        return TrackSummary(
            index=self.index,
            first_ms=self.first_ms,
            last_ms=self.last_ms,
            first_box=_box_tuple(self.first_box),
            last_box=_box_tuple(self.last_box),
            embedding=None if mean is None else [float(v) for v in mean],
            count=self.count,
        )


def _box_tuple(box: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1, y1, x2, y2)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    lt = np.maximum(a[:2], b[:2])
    rb = np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(rb - lt, 0, None)))
    union = float(np.prod(np.clip(a[2:] - a[:2], 0, None)) + np.prod(np.clip(b[2:] - b[:2], 0, None))) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class LinkRule:
    """When a detection (or a segment's track) continues a track: see the module docstring."""

    max_gap_ms: int = MAX_GAP_MS
    min_iou: float = MIN_IOU
    link_cosine: float = -1.0  # with overlap: the embeddings may not disagree more than this
    reid_cosine: float = 2.0  # without overlap, or after the track ended: "the same person" (2: never)

    def affinity(
        self, gap_ms: int, box_a: np.ndarray, box_b: np.ndarray, emb_a: np.ndarray | None, emb_b: np.ndarray | None
    ) -> float | None:
        """How well b continues a (higher is better), or None when it may not. gap_ms < 0: a has ended."""
        cosine = float(np.dot(emb_a, emb_b)) if emb_a is not None and emb_b is not None else None
        if 0 <= gap_ms <= self.max_gap_ms:
            overlap = box_iou(box_a, box_b)
            if overlap >= self.min_iou and (cosine is None or cosine >= self.link_cosine):
                return 1.0 + overlap + (cosine or 0.0)  # live continuations rank before re-identifications
        if cosine is not None and cosine >= self.reid_cosine:
            return cosine
        return None


def _greedy(pairs: list[tuple[float, int, int]]) -> list[tuple[int, int]]:
    """One-to-one matching, best affinity first (ties by order)."""
    used_a: set[int] = set()
    used_b: set[int] = set()
    out = []
    for _, a, b in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
        if a not in used_a and b not in used_b:
            used_a.add(a)
            used_b.add(b)
            out.append((a, b))
    return out


@dataclass
class Tracker:
    """Feed sampled frames in timestamp order with ``update``; read ``summaries()`` at the end."""

    rule: LinkRule = field(default_factory=LinkRule)
    _tracks: list[_Track] = field(default_factory=list)
    _next_index: int = 0  # tracks are numbered in order of appearance, also after prune()

    def update(self, timestamp_ms: int, boxes: list, embeddings: list | None = None) -> list[int]:
        """The track Index of each detection of this frame (boxes x1, y1, x2, y2 as ratios)."""
        boxes_a = [np.asarray(b, dtype=np.float64) for b in boxes]
        embs = [None if e is None else np.asarray(e, dtype=np.float64) for e in (embeddings or [None] * len(boxes))]
        pairs = []
        for t_pos, track in enumerate(self._tracks):
            gap = timestamp_ms - track.last_ms
            live_gap = gap if gap <= self.rule.max_gap_ms else -1
            mean = track.mean_embedding()
            for d_pos, (box, emb) in enumerate(zip(boxes_a, embs, strict=True)):
                score = self.rule.affinity(live_gap, track.last_box, box, mean, emb)
                if score is not None:
                    pairs.append((score, t_pos, d_pos))
        assigned: dict[int, int] = {d: t for t, d in _greedy(pairs)}
        out = []
        for d_pos, (box, emb) in enumerate(zip(boxes_a, embs, strict=True)):
            if d_pos in assigned:
                track = self._tracks[assigned[d_pos]]
                track.last_ms, track.last_box, track.count = timestamp_ms, box, track.count + 1
                if emb is not None:
                    track.embedding_sum = emb.copy() if track.embedding_sum is None else track.embedding_sum + emb
            else:
                track = _Track(
                    self._next_index, timestamp_ms, timestamp_ms, box, box, None if emb is None else emb.copy()
                )
                self._next_index += 1
                self._tracks.append(track)
            if emb is not None:
                track.embedded_ms = timestamp_ms
            out.append(track.index)
        return out

    def certain_continuations(self, timestamp_ms: int, boxes: list, min_iou: float, fresh_ms: int) -> list[int | None]:
        """For each box, the live track it continues beyond doubt, or None: the pair overlap by
        ``min_iou`` or more, neither overlaps anything else by the rule's ``min_iou``, and the track
        had an embedding measured no more than ``fresh_ms`` ago. The caller may skip measuring an
        embedding for such a box (update() then links it by overlap alone)."""
        boxes_a = [np.asarray(b, dtype=np.float64) for b in boxes]
        live = [t for t in self._tracks if 0 <= timestamp_ms - t.last_ms <= self.rule.max_gap_ms]
        overlaps = np.array([[box_iou(t.last_box, b) for b in boxes_a] for t in live]).reshape(len(live), len(boxes_a))
        out: list[int | None] = [None] * len(boxes_a)
        for d_pos in range(len(boxes_a)):
            candidates = np.flatnonzero(overlaps[:, d_pos] >= self.rule.min_iou)
            if len(candidates) != 1:
                continue
            t_pos = int(candidates[0])
            track = live[t_pos]
            if (
                overlaps[t_pos, d_pos] >= min_iou
                and np.count_nonzero(overlaps[t_pos] >= self.rule.min_iou) == 1
                and track.embedded_ms is not None
                and timestamp_ms - track.embedded_ms <= fresh_ms
            ):
                out[d_pos] = track.index
        return out

    def summaries(self) -> list[TrackSummary]:
        return [t.summary() for t in self._tracks]

    def prune(self, before_ms: int) -> None:
        """Forget the tracks last seen before ``before_ms`` (a live stream, which never ends, keeps
        its memory bounded this way; their Indexes are not reused)."""
        self._tracks = [t for t in self._tracks if t.last_ms >= before_ms]

    def to_state(self) -> dict:
        """Everything update() needs, JSON-serialisable (a stream processor's checkpoint)."""
        return {
            "next_index": self._next_index,
            "tracks": [
                {
                    "index": t.index,
                    "first_ms": t.first_ms,
                    "last_ms": t.last_ms,
                    "first_box": [float(v) for v in t.first_box],
                    "last_box": [float(v) for v in t.last_box],
                    "embedding_sum": None if t.embedding_sum is None else [float(v) for v in t.embedding_sum],
                    "count": t.count,
                    "embedded_ms": t.embedded_ms,
                }
                for t in self._tracks
            ],
        }

    @classmethod
    def from_state(cls, rule: LinkRule, state: dict) -> Tracker:
        """The tracker ``to_state`` saved, continuing exactly where it was."""
        tracks = [
            _Track(
                index=int(t["index"]),
                first_ms=int(t["first_ms"]),
                last_ms=int(t["last_ms"]),
                first_box=np.asarray(t["first_box"], dtype=np.float64),
                last_box=np.asarray(t["last_box"], dtype=np.float64),
                embedding_sum=None if t["embedding_sum"] is None else np.asarray(t["embedding_sum"], dtype=np.float64),
                count=int(t["count"]),
                embedded_ms=None if t["embedded_ms"] is None else int(t["embedded_ms"]),
            )
            for t in state.get("tracks", [])
        ]
        return cls(rule, tracks, int(state.get("next_index", len(tracks))))


def join_segments(
    summaries_per_segment: list[list[TrackSummary]], rule: LinkRule | None = None
) -> list[dict[int, int]]:
    """Map each segment's local track indexes to global ones, segments in time order.

    A segment's track continues a global track by the same rule as within a segment, measured
    from the global track's last sighting to the segment track's first (so only tracks crossing
    the boundary continue live; older ones can only be re-identified). Global indexes are numbered
    in order of first appearance.
    """
    rule = rule or LinkRule()
    globals_: list[_Track] = []
    mappings: list[dict[int, int]] = []
    for summaries in summaries_per_segment:
        local = sorted(summaries, key=lambda s: (s.first_ms, s.index))
        pairs = []
        for g_pos, g in enumerate(globals_):
            mean = g.mean_embedding()
            for l_pos, s in enumerate(local):
                gap = s.first_ms - g.last_ms
                emb = None if s.embedding is None else np.asarray(s.embedding, dtype=np.float64)
                live_gap = gap if 0 <= gap <= rule.max_gap_ms else -1
                score = rule.affinity(live_gap, g.last_box, np.asarray(s.first_box), mean, emb)
                if score is not None:
                    pairs.append((score, g_pos, l_pos))
        matched = {l_pos: g_pos for g_pos, l_pos in _greedy(pairs)}
        mapping: dict[int, int] = {}
        for l_pos, s in enumerate(local):
            emb_sum = None if s.embedding is None else np.asarray(s.embedding, dtype=np.float64) * s.count
            if l_pos in matched:
                g = globals_[matched[l_pos]]
                if s.last_ms >= g.last_ms:
                    g.last_ms, g.last_box = s.last_ms, np.asarray(s.last_box)
                g.count += s.count
                if emb_sum is not None:
                    g.embedding_sum = emb_sum if g.embedding_sum is None else g.embedding_sum + emb_sum
            else:
                g = _Track(
                    len(globals_),
                    s.first_ms,
                    s.last_ms,
                    np.asarray(s.first_box),
                    np.asarray(s.last_box),
                    emb_sum,
                    s.count,
                )
                globals_.append(g)
            mapping[s.index] = g.index
        mappings.append(mapping)
    return mappings
