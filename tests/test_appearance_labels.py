"""tests/data/appearance_labels.tsv (issue 14): hand labels of Eyeglasses, Sunglasses, Beard, Mustache
and FaceOccluded on faces/dev, the independent check bench/appearance.py scores the heads fitted on LFW
against (tests/test_appearance.py tests the heads); this file checks the labels stay what the
measurement was made on.
"""

from __future__ import annotations

import csv

from support import ROOT, require_faces

LABELS = ROOT / "tests" / "data" / "appearance_labels.tsv"
COLUMNS = ["path", "eyeglasses", "sunglasses", "beard", "mustache", "face_occluded"]


def rows() -> list[dict[str, str]]:
    lines = [line for line in LABELS.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def test_labels_are_binary_or_unsure_and_glasses_are_one_kind():
    labelled = rows()
    assert list(labelled[0]) == COLUMNS
    for row in labelled:
        assert {row[c] for c in COLUMNS[1:]} <= {"0", "1", "-"}, row
        assert not (row["eyeglasses"] == "1" and row["sunglasses"] == "1"), row  # the header's basis


def test_every_dev_photo_is_labelled_once():
    faces = require_faces()
    with open(faces / "MANIFEST.tsv") as f:
        dev = sorted(r["path"] for r in csv.DictReader(f, delimiter="\t") if r["path"].startswith("dev/"))
    assert sorted(row["path"] for row in rows()) == dev
