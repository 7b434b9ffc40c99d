"""The house keeps its shape: no class over 300 lines, no function over 80, no import cycle in
``gallery/`` (imports inside functions and under TYPE_CHECKING count too), and ``cli/`` is the only
package that imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 80


def _modules(package: str) -> dict[str, ast.Module]:
    found = {}
    for path in sorted((REPO / package).rglob("*.py")):
        relative = path.relative_to(REPO).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = ast.parse(path.read_text(), filename=str(path))
    return found


def _is_package(name: str) -> bool:
    return (REPO / Path(*name.split(".")) / "__init__.py").is_file()


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``name`` imports."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets.add(base)
            targets |= {f"{base}.{alias.name}" for alias in node.names}
    return {t for t in targets if t in known and t != name}


def test_no_class_or_function_is_too_long() -> None:
    too_long = []
    for package in ("gallery", "cli"):
        for name, tree in _modules(package).items():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > limit:
                        too_long.append(f"{name}.{node.name}: {lines} lines (limit {limit})")
    assert not too_long, too_long


def test_no_import_cycle_in_the_library() -> None:
    modules = _modules("gallery")
    known = set(modules)
    graph = {name: _imports(name, tree, known) for name, tree in modules.items()}
    # A package's __init__ re-exporting its children is not a cycle between stages.
    for name in graph:
        if _is_package(name):
            graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, [" -> ".join(cycle) for cycle in cycles]


def test_the_check_sees_a_cycle_and_a_long_function(tmp_path: Path) -> None:
    """The checks themselves can fail (a cycle and an 81-line function written on purpose)."""
    first = ast.parse("from . import b\n")
    second = ast.parse("from .a import x\n")
    known = {"pkg.a", "pkg.b"}
    assert _imports("pkg.a", first, known) == {"pkg.b"}
    assert _imports("pkg.b", second, known) == {"pkg.a"}
    body = "\n".join(["def f() -> None:", *["    x = 1"] * 80])
    node = ast.parse(body).body[0]
    assert (node.end_lineno or 0) - node.lineno + 1 == 81 > MAX_FUNCTION_LINES


def test_only_the_cli_imports_the_cli() -> None:
    offenders = [
        name
        for name, tree in _modules("gallery").items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        and any(
            (getattr(node, "module", None) or "").startswith("cli") or alias.name.startswith("cli")
            for alias in node.names
        )
    ]
    assert not offenders, offenders


def test_every_module_says_its_job() -> None:
    """Each module of the library and the CLI opens with a docstring whose first line says what it is."""
    missing = [
        name
        for package in ("gallery", "cli")
        for name, tree in _modules(package).items()
        if not (ast.get_docstring(tree) or "").strip().splitlines()
    ]
    assert not missing, missing


def test_the_lazy_public_api_names_each_module_once() -> None:
    """``gallery/__init__.py`` imports its names for type checkers only and resolves them on first
    use from ``_EXPORTS``: both lists must say the same, and every name must resolve."""
    import gallery

    tree = ast.parse((REPO / "gallery" / "__init__.py").read_text())
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module:
                    typed.update({alias.name: statement.module for alias in statement.names})
    assert typed == gallery._EXPORTS
    assert set(gallery.__all__) == {*typed, "__version__"}
    for name in gallery.__all__:
        assert getattr(gallery, name) is not None
