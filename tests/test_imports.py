"""The import graph of hwnas/: no cycles (imports inside functions included), and imports inside functions only for optional dependencies."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the optional dependencies: imported where they are used, so hwnas installs and runs without them
OPTIONAL = {"tensorrt", "executorch", "torchao"}  # torchao: the PT2E quantizer, installed with executorch
#: required, but long to import and used by a few functions only: at module level in hwnas.data scikit-learn and
#: torchvision took ``hwnas --help`` from 2.9 to 6.7 s of CPU time (torchvision loads torch._dynamo); onnx (its
#: checker and graph reads; 0.7 s, ml_dtypes most of it) and matplotlib (the plots; 0.25-0.6 s) were imported by
#: every command (measurements: docs/benchmarks.md)
SLOW_TO_IMPORT = {"sklearn", "torchvision", "onnx", "matplotlib", "onnxruntime.quantization"}  # the last imports onnx


def lazy(module: str) -> bool:
    """Whether ``module`` (dotted) is, or lies in, a package that is imported inside functions only."""
    parts = module.split(".")
    return any(".".join(parts[:n]) in OPTIONAL | SLOW_TO_IMPORT for n in range(1, len(parts) + 1))


def _module_names(package: Path) -> dict[str, Path]:
    names = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The dotted names an import statement loads: ``from m import x`` loads ``m.x`` where that is a module, else ``m``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports, at any depth (module level, functions, ``if`` blocks)."""
    names = _module_names(package)

    def resolve(name: str) -> str | None:
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in names.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in _imported(node, module, path.name == "__init__.py", names):
                    target = resolve(name) if name.split(".")[0] == package.name else None
                    if target is not None and target != module:
                        targets.add(target)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def function_level_imports(package: Path) -> list[tuple[str, int, str]]:
    """(file, line, module) of every import inside a function of ``package`` (``.``: a relative import)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, ast.Import):
                        found += [(str(path.relative_to(package.parent)), node.lineno, a.name) for a in node.names]
                    elif isinstance(node, ast.ImportFrom):
                        found.append(
                            (str(path.relative_to(package.parent)), node.lineno, "." if node.level else node.module or "")
                        )
    return found


def test_hwnas_has_no_import_cycle():
    graph = import_graph(ROOT / "hwnas")
    assert len(graph) > 50 and "hwnas.latency.model" in graph["hwnas.search.loop"] | graph["hwnas.latency"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_inside_functions_are_for_optional_dependencies_only():
    wrong = [
        f"{file}:{line} imports {module}" for file, line, module in function_level_imports(ROOT / "hwnas") if not lazy(module)
    ]
    assert not wrong, "import at module level (only optional dependencies are imported inside functions): " + "; ".join(wrong)


def test_the_cli_starts_without_the_slow_or_optional_imports():
    """Every command imports the CLI; a module-level import of scikit-learn (whole_net's fitters, once) cost it ~0.9 s."""
    code = "import sys, hwnas.cli.main; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    assert {"hwnas", "torch", "onnxruntime"} <= set(loaded)
    assert not [module for module in loaded if lazy(module)], [module for module in loaded if lazy(module)][:5]


@pytest.fixture
def tiny_package(tmp_path: Path) -> Path:
    """pkg.a imports pkg.b at module level; pkg.b imports pkg.a only inside a function (relative import)."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub.c import C\n")
    (package / "sub" / "c.py").write_text("import os\nC = 1\n")
    (package / "a.py").write_text("from pkg.b import f\nfrom pkg.sub import C\n")
    (package / "b.py").write_text("def f():\n    from . import a\n    import tensorrt\n    return a\n")
    return package


def test_the_check_sees_a_cycle_through_an_import_inside_a_function(tiny_package: Path):
    graph = import_graph(tiny_package)
    assert graph["pkg.a"] == {"pkg.b", "pkg.sub"} and graph["pkg.b"] == {"pkg.a"} and graph["pkg.sub"] == {"pkg.sub.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
    assert [(line, top) for _, line, top in function_level_imports(tiny_package)] == [(2, "."), (3, "tensorrt")]
    (tiny_package / "b.py").write_text("def f():\n    return 1\n")
    assert find_cycle(import_graph(tiny_package)) is None
