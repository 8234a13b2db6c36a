"""The package's shape: imports point one way, front ends stay thin, the public surface is known.

Every import counts — at module level and inside functions alike (a lazy import is still a
dependency); only ``if TYPE_CHECKING:`` blocks are left out, since they never run.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import amigo_magic

PACKAGE = Path(amigo_magic.__file__).resolve().parent
ROOT = PACKAGE.parent

# What a front end may import: the session layer, the renderer, and the pure core it shows.
FRONT_ENDS = {
    "magics",
    "magic_settings",
    "panel",
    "extension",
    "verbs",
    "panel_view",
    "cells",
    "complete",
    "help_text",
    "panel_side",
    "many",
    "many_cells",
    "panel_tools",
    "panel_context",
}
FRONT_END_MAY_IMPORT = FRONT_ENDS | {
    "answer",
    "pacer",
    "session",
    "render",
    "catalog",
    "errors",
    "config",
    "_version",
}
BELOW_THE_SESSION = {
    "store",
    "history",
    "export",
    "client",
    "backends",
    "runner",
    "protocol",
    "sse",
    "pictures",
    "routing",
}
MAX_FRONT_END_LINES = 450
MAX_MODULE_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)  # "" is the package itself


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's own modules that ``name`` imports (anywhere but TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    here = name.split(".") if name else []
    base = here if is_package else here[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "amigo_magic" or alias.name.startswith("amigo_magic."):
                    found.add(alias.name.removeprefix("amigo_magic").lstrip("."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join([*anchor, *(node.module.split(".") if node.module else [])])
            elif node.module and (node.module + ".").startswith("amigo_magic."):
                module = node.module.removeprefix("amigo_magic").lstrip(".")
            else:
                module = None
            if module is not None:
                for alias in node.names:
                    sub = f"{module}.{alias.name}" if module else alias.name
                    found.add(sub if sub in known else module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return {m for m in found if m in known}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_import_graph_has_no_circle() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import circles (every import counts, also inside functions): " + "; ".join(
        " <-> ".join(c or "amigo_magic" for c in cycle) for cycle in cycles
    )


def test_the_cycle_finder_finds_a_circle() -> None:
    # The check above is only as good as this: a circle through three modules is found.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_import_reader_sees_lazy_imports_and_skips_type_checking(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import errors\n"
        "if TYPE_CHECKING:\n    from .store import X\n"
        "def f():\n    from .client import HTTPClient\n    from .backends.amigo import A\n"
    )
    module = PACKAGE / "magics.py"
    fake = tmp_path / "magics.py"
    fake.write_text(source)
    known = set(_modules())
    assert _imports("magics", fake, known) == {"errors", "client", "backends.amigo"}
    assert module.exists()


def test_front_ends_import_nothing_below_the_session() -> None:
    graph = _graph()
    wrong = {
        f"{front} imports {target}"
        for front in FRONT_ENDS & set(graph)
        for target in graph[front]
        if target.split(".")[0] not in FRONT_END_MAY_IMPORT
        or target.split(".")[0] in BELOW_THE_SESSION
    }
    assert not wrong, sorted(wrong)


def test_modules_stay_small() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    too_big = {
        name: lines
        for name, lines in sizes.items()
        if lines > (MAX_FRONT_END_LINES if name in FRONT_ENDS else MAX_MODULE_LINES)
    }
    assert not too_big, too_big


@pytest.mark.parametrize("name", sorted(n for n in _modules() if n))
def test_every_name_in_all_exists(name: str) -> None:
    module = importlib.import_module(f"amigo_magic.{name}")
    names = getattr(module, "__all__", None)
    assert names is not None, f"amigo_magic.{name} has no __all__"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"amigo_magic.{name}.__all__ names what it lacks: {missing}"
    assert len(names) == len(set(names)), f"amigo_magic.{name}.__all__ repeats a name"


def test_the_public_surface_is_what_the_readme_documents() -> None:
    names = set(amigo_magic.__all__)
    for name in names:
        assert getattr(amigo_magic, name) is not None
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", section))
    undocumented = sorted(names - documented)
    assert not undocumented, (
        f"public names the README's Python API section does not name: {undocumented}"
    )
