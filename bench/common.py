"""Shared helpers for bench scripts: where the shared data lives and how it is labelled."""

from __future__ import annotations

import csv
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("FACEBANK_SHARED", ROOT.parent / "shared"))


def load_engine(pack: str | None = None):
    """The process-wide FaceEngine of ``pack`` (None: the default) under the environment's settings
    (FACEBANK_MODEL_DIR, FACEBANK_ORT_THREADS), its model files fetched first (FACEBANK_MODEL_MIRROR)."""
    from facebank import models
    from facebank.engine import get_engine
    from facebank.engine.packs import pack as find_pack
    from facebank.settings import Settings

    settings = Settings.from_env()
    models.fetch(find_pack(pack).files, model_dir=settings.resolved_model_dir, mirror=settings.model_mirror)
    return get_engine(pack, settings.resolved_model_dir, settings.ort_threads)


def dev_images() -> list[tuple[Path, str]]:
    """(path, identity) for every labelled image in faces/dev."""
    faces = shared_dir() / "faces"
    with open(faces / "MANIFEST.tsv") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["path"].startswith("dev/")]
    return [(faces / r["path"], r["identity"]) for r in rows]


def identity_bootstrap(genuine: list, strangers: list, stats, draws: int = 2000, seed: int = 0):
    """90% percentile intervals, shape (2, k), of ``stats(genuine, strangers)`` (a k-tuple) when the
    identities are drawn again with replacement, each drawn identity keeping all of its probes.
    Items of both lists start with the probe's identity. Probes of one person are not independent,
    so resampling people, not probes, is what tells how a figure would move on other people."""
    import numpy as np

    by_name: dict[str, tuple[list, list]] = {}
    for item in genuine:
        by_name.setdefault(item[0], ([], []))[0].append(item)
    for item in strangers:
        by_name.setdefault(item[0], ([], []))[1].append(item)
    names = sorted(by_name)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        pick = rng.choice(len(names), len(names))
        g = [x for i in pick for x in by_name[names[i]][0]]
        s = [x for i in pick for x in by_name[names[i]][1]]
        if g and s:
            out.append(stats(g, s))
    return np.percentile(np.array(out), [5, 95], axis=0)
