#!/usr/bin/env python3
"""Build the two Lambda layer directories the CDK stack deploys.

    python layers/build.py models [--pack open] [--mirror DIR] --out layers/build/models
    python layers/build.py deps --arch arm64 --out layers/build/deps
    python layers/build.py video --arch arm64 --out layers/build/video

``models``: fetches the pack's model files and the person detector (``PERSON_DETECTOR``, the same for
every pack: the video worker runs it for StartPersonTracking) sha256-verified from the model cache
(``FACEBANK_MODEL_DIR``, default ``~/.cache/facebank/models``), which takes what it lacks from
``--mirror`` (``FACEBANK_MODEL_MIRROR``) or upstream, and copies them to ``<out>/models/<manifest path>``; the
layer is mounted at ``/opt`` so the functions find them under ``FACEBANK_MODEL_DIR=/opt/models``.

``deps``: ``pip install --target <out>/python`` of the runtime dependencies as manylinux wheels for
the Lambda Python 3.12 runtime and the chosen architecture, at the versions in constraints.txt
(which also pins their dependencies). No Docker needed: only binary wheels are accepted.

``video``: the same for the stored-video worker (facebank/aws/video.py), which also imports PyAV
(``av``, FFmpeg inside its wheel): only what it imports, minus files nothing loads at run time
(``VIDEO_PRUNE``), so the worker's code + this layer + the model layer fit Lambda's 250 MB.

``cdk synth`` runs these itself (infra/layers.py, cached under layers/build/); run them by hand only
for a prebuilt layer (context ``modelLayerDir`` / ``depsLayerDir``). Each command prints the
unzipped size; the stack refuses to synthesise above Lambda's 250 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"  # exact versions; pyproject.toml has ranges
MARKER = "facebank-layer.json"  # read by infra/stack.py
PYTHON_VERSION = "3.12"
PLATFORMS = {"arm64": "manylinux_2_28_aarch64", "x86_64": "manylinux_2_28_x86_64"}
# What the functions import at run time (boto3/botocore come with the Lambda runtime). No onnx: it
# only converts models (dlib's ResNet, YuNet's dynamic input) in the fetch step, and the model layer
# carries the converted files. Powertools' Tracer needs the X-Ray SDK (and wrapt).
DEPENDENCIES = ["numpy", "onnxruntime", "pillow", "regex", "aws-lambda-powertools", "wrapt"]
# Installed without their dependencies: aws-xray-sdk requires botocore, which the runtime already
# has; pulling a second copy into the layer would add ~25 MB and shadow the runtime's.
NO_DEPS = ["aws-xray-sdk"]
LIMIT = 250 * 1024 * 1024
# The video worker's imports: the engine's (numpy, onnxruntime, Pillow), PyAV for decoding, and the
# Lambda runtime's (Powertools, its Tracer's wrapt + X-Ray SDK; regex for facebank.validation,
# which facebank.aws.runtime loads through the protocol).
VIDEO_DEPENDENCIES = ["numpy", "onnxruntime", "pillow", "av", "regex", "aws-lambda-powertools", "wrapt"]
# Files of those packages that nothing imports or loads at run time, removed from the video layer
# (globs under python/). onnxruntime's libonnxruntime.so is its C API library for native callers:
# the Python extension links the runtime statically and never loads it (checked: readelf NEEDED,
# and inference without it). transformers/quantization/tools are offline model-editing tools.
VIDEO_PRUNE = [
    "onnxruntime/capi/libonnxruntime.so*",
    "onnxruntime/transformers",
    "onnxruntime/quantization",
    "onnxruntime/tools",
    "numpy/f2py",
    "**/tests",
    "**/*.pyi",
    "bin",
]


def tree_size(path: Path) -> int:
    return sum(os.stat(os.path.join(d, f)).st_size for d, _, files in os.walk(path) for f in files)


def report(out: Path) -> None:
    size = tree_size(out)
    print(f"{out}: {size / 1e6:.1f} MB unzipped ({size / LIMIT:.0%} of Lambda's 250 MB limit for function + layers)")


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def pins(constraints: Path = CONSTRAINTS) -> dict[str, str]:
    """Exact versions from the constraints file (``name==version`` lines), by normalised name."""
    result = {}
    for line in constraints.read_text().splitlines():
        spec = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in spec:
            name, version = spec.split("==", 1)
            result[_normalise(name.split("[")[0].strip())] = version.strip()
    return result


def requirements(names: list[str] = DEPENDENCIES) -> list[str]:
    pinned = pins()
    missing = [name for name in names if _normalise(name) not in pinned]
    if missing:
        sys.exit(f"build.py: {', '.join(missing)} not pinned in {CONSTRAINTS.name}; add the exact version")
    return [f"{name}=={pinned[_normalise(name)]}" for name in names]


def _fresh(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


def build_models(pack_name: str | None, mirror: str | None, out: Path) -> None:
    """The pack's files from the verified model cache (FACEBANK_MODEL_DIR, default
    ~/.cache/facebank/models: what `facebank models fetch` or `facebank serve` left there), fetching
    what it lacks from the mirror (FACEBANK_MODEL_MIRROR) or upstream into that cache."""
    from facebank import models
    from facebank.engine.packs import model_layer_files, pack
    from facebank.settings import Settings

    pack_name = pack(pack_name).name
    files = model_layer_files(pack_name)
    cache = Settings.from_env().resolved_model_dir
    try:
        models.fetch(files, model_dir=cache, mirror=mirror)
        sources = {name: models.resolve(name, cache) for name in files}  # verified again: size + sha256
    except models.ModelError as exc:
        reason = str(exc).split(". Offline?")[0]  # its hint names serve's --mirror, which cdk cannot take
        sys.exit(
            f"build.py: {reason}.\nbuild.py: offline, set FACEBANK_MODEL_MIRROR=DIR (a directory holding the model "
            f"files) or put verified copies in the model cache FACEBANK_MODEL_DIR ({cache}), e.g. with "
            f"`facebank models fetch --pack {pack_name}`, then run cdk synth again"
        )
    _fresh(out)
    for name, source in sources.items():
        dest = out / "models" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    (out / MARKER).write_text(json.dumps({"kind": "models", "pack": pack_name, "files": files}, indent=1) + "\n")
    report(out)


def prune(root: Path, patterns: list[str]) -> int:
    """Remove the files and directories matching the globs under root; returns the bytes removed."""
    removed = 0
    for pattern in patterns:
        for path in sorted(root.glob(pattern), key=lambda p: len(p.parts)):
            if not path.exists() and not path.is_symlink():
                continue  # inside a directory removed before
            if path.is_dir() and not path.is_symlink():
                removed += tree_size(path)
                shutil.rmtree(path)
            else:
                removed += path.lstat().st_size
                path.unlink()
    return removed


def build_deps(arch: str, out: Path, kind: str = "deps") -> None:
    names = VIDEO_DEPENDENCIES if kind == "video" else DEPENDENCIES
    reqs, no_deps = requirements(names), requirements(NO_DEPS)
    _fresh(out)
    base = [
        sys.executable, "-m", "pip", "install",
        "--target", str(out / "python"),
        "--platform", PLATFORMS[arch],
        "--implementation", "cp",
        "--python-version", PYTHON_VERSION,
        "--only-binary=:all:",
        "--constraint", str(CONSTRAINTS),  # pins the dependencies' dependencies too
        "--no-compile",
        "--disable-pip-version-check",
        "--no-warn-conflicts",
    ]  # fmt: skip
    for cmd in (base + reqs, base + ["--no-deps", "--upgrade"] + no_deps):
        print("+", " ".join(cmd), flush=True)
        if subprocess.run(cmd, check=False).returncode != 0:
            shutil.rmtree(out, ignore_errors=True)
            sys.exit("build.py: pip install failed (see above); the dependency layer was not built")
    marker: dict = {"kind": kind, "arch": arch, "python": PYTHON_VERSION, "requirements": reqs + no_deps}
    if kind == "video":
        marker["pruned"] = VIDEO_PRUNE
        marker["pruned_bytes"] = prune(out / "python", VIDEO_PRUNE)
    (out / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
    report(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("models", help="model layer: verified model files of a pack, and the person detector")
    m.add_argument("--pack", default=None, help="model pack (default: facebank's default pack)")
    m.add_argument(
        "--mirror",
        default=os.environ.get("FACEBANK_MODEL_MIRROR") or None,
        help="directory holding the model files, for offline builds (default: FACEBANK_MODEL_MIRROR)",
    )
    m.add_argument("--out", type=Path, default=ROOT / "layers" / "build" / "models")
    d = sub.add_parser("deps", help="dependency layer: manylinux wheels for Lambda Python 3.12")
    d.add_argument("--arch", choices=sorted(PLATFORMS), default="arm64")
    d.add_argument("--out", type=Path, default=ROOT / "layers" / "build" / "deps")
    v = sub.add_parser("video", help="video worker's dependency layer: the deps layer's plus PyAV, pruned")
    v.add_argument("--arch", choices=sorted(PLATFORMS), default="arm64")
    v.add_argument("--out", type=Path, default=ROOT / "layers" / "build" / "video")
    args = parser.parse_args(argv)
    if args.command == "models":
        build_models(args.pack, args.mirror, args.out.resolve())
    else:
        build_deps(args.arch, args.out.resolve(), kind=args.command)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
