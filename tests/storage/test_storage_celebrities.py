"""The celebrity gallery's contract (facebank/storage/celebrities.py), on both adapters: SQLite in
tmp_path and DynamoDB on moto (the storage suite's module-scoped mock)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from storage_helpers import run_threads

from facebank.storage.celebrities import (
    CelebrityIdConflict,
    CelebrityIndex,
    CelebrityRecord,
    celebrity_id,
    create_celebrity_table,
    open_aws_gallery,
    open_embedded_gallery,
)

_tables = itertools.count()


@pytest.fixture(params=["embedded", "aws"])
def opener(request, tmp_path):
    """A function opening a new adapter instance over one and the same gallery (as a second
    process would: the CLI beside `facebank serve`, or two Lambda environments)."""
    if request.param == "embedded":
        return lambda: open_embedded_gallery(tmp_path / "data")
    aws = request.getfixturevalue("aws")
    table = f"celebrities-{next(_tables)}"
    create_celebrity_table(aws.dynamodb, table)
    return lambda: open_aws_gallery(table, dynamodb=aws.dynamodb)


def record(name: str, seed: int = 0, **overrides) -> CelebrityRecord:
    vector = np.random.default_rng(seed).normal(size=128).astype("<f4")
    fields = dict(
        celebrity_id=celebrity_id(name),
        name=name,
        urls=("www.example.org/a", "www.example.org/b"),
        known_gender="Female",
        pack="open",
        face_model_version="1.2",
        vector=(vector / np.linalg.norm(vector)).astype("<f4").tobytes(),
        photos=3,
        updated=1700000000.25,
    )
    return CelebrityRecord(**(fields | overrides))


def test_ids_are_deterministic_and_in_rekognitions_pattern():
    assert celebrity_id("Blythe Danner") == celebrity_id("  Blythe Danner ")  # stored names are stripped
    assert celebrity_id("Blythe Danner") != celebrity_id("Gwyneth Paltrow")
    for name in ("Blythe Danner", "Zoë Saldaña", "李娜", "x"):
        assert re.fullmatch(r"[0-9A-Za-z]{8}", celebrity_id(name))
    # NFC: the composed and decomposed spellings of one name are one celebrity
    assert celebrity_id("Zo\u00eb") == celebrity_id("Zoe\u0308")


def test_put_get_list_delete(opener):
    gallery = opener()
    assert gallery.list_celebrities() == []
    start = gallery.generation()
    a, b = record("Blythe Danner"), record("Albert Costa", 1, urls=(), known_gender=None)
    gallery.put_celebrity(a)
    gallery.put_celebrity(b)
    assert gallery.get_celebrity(a.celebrity_id) == a
    assert gallery.get_celebrity(b.celebrity_id) == b  # no Urls and no gender survive as such
    assert gallery.list_celebrities() == sorted([a, b], key=lambda r: r.celebrity_id)
    assert gallery.generation() != start
    assert gallery.get_celebrity("nope0000") is None

    before = gallery.generation()
    assert gallery.delete_celebrity(a.celebrity_id) is True
    assert gallery.generation() != before
    after = gallery.generation()
    assert gallery.delete_celebrity(a.celebrity_id) is False
    assert gallery.generation() == after  # nothing removed, nothing for readers to reload
    assert gallery.list_celebrities() == [b]


def test_reimport_replaces_and_another_name_on_the_same_id_is_refused(opener):
    gallery = opener()
    first = record("Blythe Danner")
    gallery.put_celebrity(first)
    again = record("Blythe Danner", 7, urls=("www.imdb.com/name/nm0000308",), photos=5)
    gallery.put_celebrity(again)
    assert gallery.list_celebrities() == [again]

    generation = gallery.generation()
    impostor = record("Someone Else", 3, celebrity_id=first.celebrity_id)
    with pytest.raises(CelebrityIdConflict) as e:
        gallery.put_celebrity(impostor)
    assert e.value.existing == "Blythe Danner"
    assert gallery.list_celebrities() == [again]
    assert gallery.generation() == generation


def test_concurrent_imports_all_land(opener):
    gallery = opener()
    names = [f"Person {i}" for i in range(8)]
    start = gallery.generation()
    run_threads(len(names), lambda i: opener().put_celebrity(record(names[i], i)))
    assert sorted(r.name for r in gallery.list_celebrities()) == sorted(names)
    assert gallery.generation() == start + len(names)  # every write bumped it once, none lost


def test_index_sees_another_writers_change_on_the_next_call(opener):
    reader = CelebrityIndex(opener(), "open", ("1.2",))
    assert reader.current().records == () and reader.current().matrix is None
    writer = opener()
    writer.put_celebrity(record("Blythe Danner"))
    writer.put_celebrity(record("Old Pack", 2, pack="mobile", face_model_version="3.2"))
    snapshot = reader.current()
    assert [r.name for r in snapshot.records] == ["Blythe Danner"]  # other packs' vectors are never compared
    assert reader.skipped == 1
    assert snapshot.matrix.shape == (1, 128)
    assert reader.current() is snapshot  # unchanged gallery: the cache, no reload
    writer.delete_celebrity(celebrity_id("Blythe Danner"))
    assert reader.current().records == ()
