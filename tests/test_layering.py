"""The layering of ARCHITECTURE.md, checked on the code: which modules a cold start loads, which
layer imports which, and that only facebank.settings reads the environment."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "facebank"

# Layers from the top down; a module may import its own layer and those listed after it.
LAYERS = [
    (
        "entry",
        [
            "facebank.cli",
            "facebank.server",
            "facebank.maintenance",
            "facebank.aws",
            "facebank.wiring",
            "facebank.api_client",
            "facebank.video_runner",
        ],
    ),
    ("protocol", ["facebank.protocol", "facebank.validation", "facebank.sigv4"]),
    ("operations", ["facebank.operations"]),
    ("engine+storage", ["facebank.engine", "facebank.storage", "facebank.models"]),
    ("base", ["facebank.errors", "facebank.settings", "facebank"]),
]


def layer_of(module: str) -> int:
    best, rank = -1, len(LAYERS)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    return rank


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return [n for n in names if n == "facebank" or n.startswith("facebank.")]


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_import_goes_up():
    upward = []
    for path in sources():
        module = module_name(path)
        if module == "facebank":  # the package's facade: __version__ and a lazy facebank.client()
            continue
        own = layer_of(module)
        for name in imported(ast.parse(path.read_text())):
            if name == "facebank":
                continue
            if layer_of(name) < own:
                upward.append(f"{module} ({LAYERS[own][0]}) imports {name} ({LAYERS[layer_of(name)][0]})")
    assert upward == []


def test_engine_and_storage_do_not_import_each_other():
    crossing = []
    for path in sources():
        module = module_name(path)
        for side, other in (("facebank.engine", "facebank.storage"), ("facebank.storage", "facebank.engine")):
            if module.startswith(side):
                crossing += [
                    f"{module} imports {n}" for n in imported(ast.parse(path.read_text())) if n.startswith(other)
                ]
    assert crossing == []


def test_only_settings_reads_the_environment():
    readers = []
    for path in sources():
        if module_name(path) == "facebank.settings":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("FACEBANK_"):
                # Names in messages ("set FACEBANK_PACK") are fine; reading them is not.
                continue
            if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}:
                readers.append(f"{module_name(path)}:{node.lineno}")
    # Powertools' own service/namespace variables are read by aws.runtime, as Powertools documents.
    assert [r for r in readers if not r.startswith("facebank.aws.runtime:")] == []


def _loaded_after(statements: str, env_extra: dict[str, str] | None = None) -> dict[str, bool]:
    code = (
        "import sys, json\n"
        f"{statements}\n"
        "print(json.dumps({m: m in sys.modules for m in ('onnx', 'onnxruntime', 'boto3', 'numpy')}))"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "AWS_DEFAULT_REGION": "us-east-1", **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_facebank_does_not_import_boto3():
    assert _loaded_after("import facebank")["boto3"] is False


@pytest.mark.parametrize(
    "handler",
    [
        "functions.list_collections",
        "functions.create_user",
        "functions.describe_collection",
        "functions.start_face_search",
        "functions.get_face_detection",
    ],
)
def test_protocol_and_metadata_handlers_load_no_model_runtime(handler):
    loaded = _loaded_after(f"import facebank.protocol\nimport {handler}")
    assert loaded["onnx"] is False and loaded["onnxruntime"] is False
    assert loaded["numpy"] is False  # vectors are not a metadata call's business either


def test_detect_faces_handler_defers_onnxruntime_to_its_first_call():
    # The import of a model function is cheap too: the engine loads when the first request needs it.
    loaded = _loaded_after("import functions.detect_faces")
    assert loaded["onnx"] is False and loaded["onnxruntime"] is False
