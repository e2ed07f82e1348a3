"""Shared helpers for bench scripts: where the shared data lives and how it is labelled."""

from __future__ import annotations

import csv
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("FACEBANK_SHARED", ROOT.parent / "shared"))


def dev_images() -> list[tuple[Path, str]]:
    """(path, identity) for every labelled image in faces/dev."""
    faces = shared_dir() / "faces"
    with open(faces / "MANIFEST.tsv") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["path"].startswith("dev/")]
    return [(faces / r["path"], r["identity"]) for r in rows]
