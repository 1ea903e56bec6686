"""No import loop in ivr/: no module, imported first, can reach itself through the imports
that run at import time (those at a module's top level, outside `if TYPE_CHECKING:`).

A module's own packages do not count (they are always being imported already when it
runs); a package's `__init__` importing its submodules does. Late imports inside functions
run later, so they do not count either."""

from __future__ import annotations

import ast
from pathlib import Path

import ivr

ROOT = Path(ivr.__file__).parent


def modules(root: Path) -> dict[str, Path]:
    """Every module and package under `root` (a package directory) by dotted name."""
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _run_at_import(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, ast.If):
            test = node.test
            if getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING":
                yield from _run_at_import(node.orelse)
                continue
            yield from _run_at_import(node.body)
            yield from _run_at_import(node.orelse)
        elif isinstance(node, ast.Try):
            for part in (node.body, *[h.body for h in node.handlers], node.orelse,
                         node.finalbody):
                yield from _run_at_import(part)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def imports(name: str, mods: dict[str, Path], top: str) -> set[str]:
    """The modules of `mods` that importing `name` imports at once."""

    def with_packages(target: str) -> list[str]:
        parts = target.split(".")
        return [p for i in range(1, len(parts) + 1) if (p := ".".join(parts[:i])) in mods]

    path = mods[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _run_at_import(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.update(with_packages(alias.name))
            continue
        if node.level:
            base = package.split(".")[:len(package.split(".")) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source.split(".")[0] != top:
            continue
        out.update(with_packages(source))
        for alias in node.names:
            out.update(with_packages(f"{source}.{alias.name}"))
    return {m for m in out if m != name and not name.startswith(m + ".")}


def loops(root: Path) -> list[list[str]]:
    """The groups of modules under `root` that import one another in a circle."""
    mods = modules(root)
    return circles({m: imports(m, mods, root.name) for m in mods})


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan's algorithm)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = [stack.pop()]
            while group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return found


def test_the_detector_sees_a_loop_through_a_package(tmp_path):
    pkg = tmp_path / "app"
    (pkg / "views").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "views" / "__init__.py").write_text("from . import page\n")
    (pkg / "views" / "page.py").write_text("from app import i18n\n")
    (pkg / "i18n.py").write_text("from typing import TYPE_CHECKING\n"
                                 "if TYPE_CHECKING:\n    from app import late\n"
                                 "from .views.page import x\n")
    (pkg / "late.py").write_text("def f():\n    from app import i18n\n")
    assert loops(pkg) == [["app.i18n", "app.views", "app.views.page"]]


def test_no_import_loop_in_ivr():
    assert loops(ROOT) == []
