from __future__ import annotations

import io

import numpy as np
import pytest
from storage_helpers import unit_vectors

from facebank.storage import (
    CorruptSegment,
    SegmentExists,
    SegmentNotFound,
    new_segment_name,
    segments,
)


def test_segment_roundtrip(stores):
    v = unit_vectors(3, 1)
    stores.vecs.write_segment("c1", "s1", ["a", "b", "c"], v)
    ids, got = stores.vecs.read_segment("c1", "s1")
    assert ids == ["a", "b", "c"]
    assert got.dtype == np.float32 and np.array_equal(got, v)
    assert stores.vecs.list_segments("c1") == ["s1"]
    assert stores.vecs.list_segments("other") == []


def test_segments_are_immutable(stores):
    stores.vecs.write_segment("c1", "s1", ["a"], unit_vectors(1, 1))
    with pytest.raises(SegmentExists):
        stores.vecs.write_segment("c1", "s1", ["b"], unit_vectors(1, 2))
    assert stores.vecs.read_segment("c1", "s1")[0] == ["a"]


def test_list_is_sorted_and_scoped_per_collection(stores):
    names = [new_segment_name() for _ in range(4)]
    assert names == sorted(names)  # creation order
    for name in reversed(names):
        stores.vecs.write_segment("abc", name, ["x"], unit_vectors(1, 3))
    stores.vecs.write_segment("abc.d", "other", ["y"], unit_vectors(1, 4))
    stores.vecs.write_segment("..", "dots", ["z"], unit_vectors(1, 5))  # a legal collection id
    assert stores.vecs.list_segments("abc") == names
    assert stores.vecs.list_segments("abc.d") == ["other"]
    assert stores.vecs.list_segments("..") == ["dots"]
    stores.vecs.delete_collection("abc")
    assert stores.vecs.list_segments("abc") == []
    assert stores.vecs.list_segments("abc.d") == ["other"]
    assert stores.vecs.list_segments("..") == ["dots"]


def test_every_legal_collection_id_has_its_own_segments(stores):
    """The longest ids, ids starting with '.', and ids that differ only in case (one directory
    on a case-insensitive filesystem if the id were the directory name)."""
    ids = ["." + "x" * 254, "y" * 255, "Case", "case"]
    for i, collection_id in enumerate(ids):
        stores.vecs.write_segment(collection_id, f"s{i}", [f"f{i}"], unit_vectors(1, i))
    assert [stores.vecs.list_segments(c) for c in ids] == [[f"s{i}"] for i in range(len(ids))]
    stores.vecs.delete_collection("Case")
    assert stores.vecs.list_segments("Case") == [] and stores.vecs.list_segments("case") == ["s3"]


def test_missing_and_deleted_segments(stores):
    with pytest.raises(SegmentNotFound):
        stores.vecs.read_segment("c1", "nope")
    stores.vecs.write_segment("c1", "s1", ["a"], unit_vectors(1, 1))
    stores.vecs.delete_segment("c1", "s1")
    stores.vecs.delete_segment("c1", "s1")  # idempotent
    stores.vecs.delete_collection("never-existed")
    assert stores.vecs.list_segments("c1") == []
    with pytest.raises(SegmentNotFound):
        stores.vecs.read_segment("c1", "s1")


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "x" * 200, "sp ace"])
def test_bad_segment_names(stores, name):
    with pytest.raises(ValueError):
        stores.vecs.write_segment("c1", name, ["a"], unit_vectors(1, 1))


def test_bad_segment_contents(stores):
    with pytest.raises(ValueError):
        stores.vecs.write_segment("c1", "s", ["a", "b"], unit_vectors(3, 1))
    with pytest.raises(ValueError):
        stores.vecs.write_segment("c1", "s", [], np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError):
        stores.vecs.write_segment("c1", "s", ["a\nb"], unit_vectors(1, 1))
    assert stores.vecs.list_segments("c1") == []


def test_codec_detects_corruption():
    data = segments.encode(["a", "b"], unit_vectors(2, 1, dim=4))
    assert segments.decode(data)[0] == ["a", "b"]
    ids, vectors = segments.read(io.BytesIO(data))  # the file store's reader: the same format
    assert ids == ["a", "b"] and np.array_equal(vectors, segments.decode(data)[1])
    assert vectors.flags.aligned and vectors.flags.writeable and vectors.dtype == np.float32
    for bad in (data[:-1], b"junk" + data[4:], data[:-4] + b"\x00\x00\x80\x7f", b"", data + b"x"):
        with pytest.raises(CorruptSegment):
            segments.decode(bad)
        with pytest.raises(CorruptSegment):
            segments.read(io.BytesIO(bad))
