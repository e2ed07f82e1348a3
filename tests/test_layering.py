"""The layering of ARCHITECTURE.md, checked on the code: which modules a cold start loads, which
layer imports which, and that only facebank.settings reads the environment."""

from __future__ import annotations

import ast
import graphlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "facebank"
INFRA = ROOT / "infra"

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
            "facebank.stream_runner",
        ],
    ),
    ("protocol", ["facebank.protocol", "facebank.validation", "facebank.sigv4"]),
    ("operations", ["facebank.operations"]),
    ("search", ["facebank.search"]),
    ("engine+storage", ["facebank.engine", "facebank.storage", "facebank.models", "facebank.convert"]),
    ("base", ["facebank.errors", "facebank.settings", "facebank"]),
]


def layer_of(module: str) -> int:
    best, rank = -1, len(LAYERS)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    return rank


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
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


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never executed: not part of the graph)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports when it runs (at the top or inside a function,
    since a deferred import still closes a circle; ``TYPE_CHECKING`` imports left out)."""
    modules = {module_name(path, package.parent): path for path in sorted(package.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        skipped = _type_checking_only(tree)
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                # the longest module of the package the name is, or is an attribute of
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                # A module's own packages are initialised before it runs, whatever it imports from
                # them (a package that imports its modules to register them is not a circle).
                if name and name != module and not module.startswith(name + "."):
                    targets.add(name)
        graph[module] = targets
    return graph


def circle_in(package: Path) -> list[str]:
    try:
        graphlib.TopologicalSorter(import_graph(package)).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


def test_no_import_circle_in_the_package():
    assert circle_in(PACKAGE) == []


def test_no_import_circle_in_infra():
    assert circle_in(INFRA) == []


def test_the_circle_check_sees_a_deferred_circle(tmp_path):
    pkg = tmp_path / "facebank"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from facebank.sub.b import f\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g\n")
    assert sorted(set(circle_in(pkg))) == ["facebank.a", "facebank.sub.b"]


def private_imports(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                found += [f"{module_name(path)} imports {node.module}.{name}" for name in private]
    return found


def test_no_module_imports_a_private_name_of_another():
    assert private_imports(PACKAGE) + private_imports(INFRA) == []


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


def test_serving_never_imports_a_converter():
    # Converters (facebank.convert) run at fetch time only: models reaches them through plain
    # imports, and nothing that serves a request (engine, storage, search, operations) imports one.
    importers = []
    for path in sources():
        module = module_name(path)
        if module.startswith(("facebank.convert", "facebank.models", "facebank.cli")):
            continue
        importers += [
            f"{module} imports {n}" for n in imported(ast.parse(path.read_text())) if n.startswith("facebank.convert")
        ]
    assert importers == []


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
    # Powertools' own service/namespace variables are read by aws.observability, as Powertools documents.
    assert [r for r in readers if not r.startswith("facebank.aws.observability:")] == []


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
