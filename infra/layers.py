"""The Lambda layers (models, dependencies, the video worker's dependencies), built at synth time
by ``layers/build.py`` through CDK's local bundling.

``cdk synth`` / ``cdk deploy`` (and ``CDK_OUTDIR=DIR python app.py``) build what the stack needs,
without Docker: the dependency layer is pip-installed from manylinux wheels, the model layer is
taken from the verified model cache (``FACEBANK_MODEL_DIR``), which fetches what it lacks from
``FACEBANK_MODEL_MIRROR`` or upstream, sha256-verified.

Each build is cached in ``layers/build/<kind>-<variant>-<key>`` (or under ``FACEBANK_LAYER_CACHE``:
CI may keep it between runs, tests point it at an empty directory), where the key hashes everything
that decides the layer's bytes: constraints.txt and the architecture for the dependency layer, the
model manifest and the pack's file list for the model layer, and layers/build.py for both. The
same key is the CDK asset hash, so an unchanged layer is neither rebuilt nor uploaded again, and a
changed input yields a new layer version.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "layers" / "build.py"
BUILD_CACHE = Path(os.environ.get("FACEBANK_LAYER_CACHE") or ROOT / "layers" / "build")
CONSTRAINTS = ROOT / "constraints.txt"
MODEL_MANIFEST = ROOT / "facebank" / "models" / "manifest.tsv"
LAYER_MARKER = "facebank-layer.json"  # written last by layers/build.py: its presence means complete
# Lambda: function code plus all its layers, unzipped, must fit in 250 MB (262,144,000 bytes).
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
# Function code = facebank/ and functions/ from the repository root, nothing else (no byte code,
# no dotfiles).
CODE_DIRS = ("facebank", "functions")


class LayerError(RuntimeError):
    """A layer directory is missing, for the wrong architecture, too large, or failed to build."""


@dataclass(frozen=True)
class LayerBuild:
    """One ``layers/build.py`` run: what it builds, and the inputs that decide its output."""

    kind: str  # build.py's command: "models", "deps" or "video"
    variant: str  # the pack or the architecture, readable in the cache directory's name
    args: tuple[str, ...]  # build.py arguments besides --out
    inputs: tuple[Path, ...]  # files whose bytes decide the layer's bytes
    identity: str = ""  # what else decides them (the pack's file list)

    @property
    def key(self) -> str:
        digest = hashlib.sha256()
        for part in (self.kind, *self.args, self.identity):
            digest.update(part.encode() + b"\0")
        for path in self.inputs:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()

    @property
    def cache_dir(self) -> Path:
        return BUILD_CACHE / f"{self.kind}-{self.variant}-{self.key[:16]}"

    @property
    def command(self) -> list[str]:
        return [sys.executable, str(BUILD_SCRIPT), self.kind, *self.args]


def model_layer_build(pack_name: str, files: list[str]) -> LayerBuild:
    return LayerBuild(
        "models", pack_name, ("--pack", pack_name), (MODEL_MANIFEST, BUILD_SCRIPT), identity="\n".join(files)
    )


def deps_layer_build(architecture: str) -> LayerBuild:
    return LayerBuild("deps", architecture, ("--arch", architecture), (CONSTRAINTS, BUILD_SCRIPT))


def video_layer_build(architecture: str) -> LayerBuild:
    """The video worker's dependency layer (the deps layer's packages plus PyAV, pruned)."""
    return LayerBuild("video", architecture, ("--arch", architecture), (CONSTRAINTS, BUILD_SCRIPT))


def ensure_built(build: LayerBuild) -> Path:
    """The build's cache directory, running layers/build.py first unless an earlier synth did."""
    cached = build.cache_dir
    if (cached / LAYER_MARKER).is_file():
        return cached
    BUILD_CACHE.mkdir(parents=True, exist_ok=True)
    # Built beside the cache entry and renamed into place, so an interrupted or concurrent build
    # never leaves a half-built entry that a later synth would take as complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{cached.name}-", dir=BUILD_CACHE))
    command = [*build.command, "--out", str(staging)]
    print(f"facebank: building the {build.kind} layer: {' '.join(command)}", file=sys.stderr, flush=True)
    # build.py's output (pip's) goes to stderr: the cdk CLI shows it, stdout stays clean.
    try:
        result = subprocess.run(command, stdout=2, stderr=2, check=False)
        if result.returncode != 0 or not (staging / LAYER_MARKER).is_file():
            hint = (
                "; offline, set FACEBANK_MODEL_MIRROR=DIR (the model files) or fill the verified model cache "
                "FACEBANK_MODEL_DIR (`facebank models fetch`)"
                if build.kind == "models"
                else ""
            )
            raise LayerError(
                f"building the {build.kind} layer failed (exit code {result.returncode}, output above): "
                f"`{' '.join(build.command)} --out DIR`{hint}"
            )
        try:
            staging.rename(cached)
        except OSError:  # a concurrent synth finished the same build first: keep that one
            if not (cached / LAYER_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # left only by a failure or a lost race
    _prune_stale(build)
    return cached


def _prune_stale(build: LayerBuild) -> None:
    """Remove cache entries of the same kind and variant built from older inputs."""
    for entry in BUILD_CACHE.glob(f"{build.kind}-{build.variant}-*"):
        if entry != build.cache_dir and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest)  # the asset is only read (zipped) afterwards: no copy needed
    except OSError:  # another file system, or links not supported
        shutil.copy2(source, dest)


@jsii.implements(cdk.ILocalBundling)
class LocalLayerBundling:
    """CDK local bundling (no Docker) of one layer: the cached build, linked into CDK's output."""

    def __init__(self, build: LayerBuild) -> None:
        self.build = build
        self.failure: LayerError | None = None  # CDK wraps exceptions raised here; kept to re-raise

    def try_bundle(self, output_dir: str, options: cdk.BundlingOptions) -> bool:  # options: CDK's, unused
        try:
            built = ensure_built(self.build)
            shutil.copytree(built, output_dir, copy_function=_link_or_copy, dirs_exist_ok=True)
        except (LayerError, OSError) as exc:
            self.failure = exc if isinstance(exc, LayerError) else LayerError(f"{self.build.kind} layer: {exc}")
            raise self.failure from exc
        return True


def bundled_layer_code(build: LayerBuild, runtime: lambda_.Runtime) -> tuple[lambda_.Code, LocalLayerBundling]:
    """Layer code that CDK bundles locally with ``build``; the bundling object reports failures."""
    bundling = LocalLayerBundling(build)
    code = lambda_.Code.from_asset(
        str(BUILD_SCRIPT.parent),  # not read: the custom hash replaces fingerprinting the source
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        asset_hash=build.key,
        # The image is required by the API but unused: local bundling always succeeds or raises. The
        # cast: jsii calls try_bundle(output_dir, options) positionally, unlike its stub's keywords.
        bundling=cdk.BundlingOptions(image=runtime.bundling_image, local=cast(cdk.ILocalBundling, bundling)),
    )
    return code, bundling


# --- sizes and prebuilt directories


def tree_size(path: Path, skip=("__pycache__",), skip_suffixes=(".pyc",)) -> int:
    """Apparent (unzipped) size of a directory tree in bytes; sparse files count at full size."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            if not name.endswith(skip_suffixes):
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total


def code_size() -> int:
    return sum(tree_size(ROOT / d) for d in CODE_DIRS)


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def check_size(parts: dict[str, int], limit: int = LAMBDA_UNZIPPED_LIMIT) -> None:
    total = sum(parts.values())
    if total > limit:
        detail = ", ".join(f"{name} {mb(size)}" for name, size in parts.items())
        raise LayerError(
            f"function code plus layers is {mb(total)} unzipped ({detail}), over Lambda's "
            f"{mb(limit)} (250 MiB) limit: use a smaller model pack or trim the dependency layer"
        )


def _temporary(prefix: str) -> Path:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    return base


def staged_code() -> Path:
    """facebank/ and functions/ copied to a temporary directory: the function code asset. Pointing
    the asset at the repository root with exclude globs would make CDK walk every file below it
    (layers/build alone holds thousands), which dominated synthesis time."""
    base = _temporary("facebank-code-")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for d in CODE_DIRS:
        shutil.copytree(ROOT / d, base / d, ignore=ignore)
    return base


def placeholder_layer(inner: str) -> Path:
    """A tiny stand-in layer directory (``models`` or ``python`` inside), so the stack synthesises
    (tests, reviews) without building; not deployable."""
    base = _temporary("facebank-placeholder-layer-")
    (base / inner).mkdir()
    (base / inner / "PLACEHOLDER").write_text(
        "placeholder layer (skipLayerBuild): not deployable; synth without it builds the real one\n"
    )
    return base


def _marker(path: Path) -> dict:
    try:
        return json.loads((path / LAYER_MARKER).read_text())
    except (OSError, ValueError):
        return {}


def check_model_layer(path: Path, pack_name: str, files: list[str]) -> None:
    build = f"python layers/build.py models --pack {pack_name} --out {path}"
    if not path.is_dir():
        raise LayerError(f"model layer directory {path} is missing: build it with `{build}`")
    missing = [f for f in files if not (path / "models" / f).is_file()]
    if missing:
        raise LayerError(
            f"model layer {path} lacks {', '.join(missing)} for pack {pack_name!r}: rebuild it with `{build}`"
        )


def check_deps_layer(path: Path, arch: str) -> None:
    build = f"python layers/build.py deps --arch {arch} --out {path}"
    if not (path / "python").is_dir():
        raise LayerError(f"dependency layer directory {path}/python is missing: build it with `{build}`")
    built_for = _marker(path).get("arch")
    if built_for and built_for != arch:
        raise LayerError(
            f"dependency layer {path} was built for {built_for}, the stack is {arch}: rebuild it with `{build}`"
        )
