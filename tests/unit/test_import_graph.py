"""llmnest's modules import each other without cycles, counting imports inside functions too (a cycle
hidden that way still ties two modules into one), and imports by name: the targets registry's
packages, named by strings and each registered target's `target` module, which `targets.get` loads."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
REGISTRY = "llmnest.targets.registry"


def modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package's __init__)."""
    out = {}
    for file in SRC.rglob("*.py"):
        parts = list(file.relative_to(SRC).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (file, package)
    return out


def imported(name: str, package: bool, node: ast.Import | ast.ImportFrom, known: dict) -> list[str]:
    """The llmnest modules an import statement names (`from . import x` is module x when x is one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "llmnest"]
    base = node.module or ""
    if node.level:
        parts = name.split(".") if package else name.split(".")[:-1]
        base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
    if base.split(".")[0] != "llmnest":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, (file, package) in known.items():
        edges = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(name, package, node, known):
                    while target not in known and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target in known and target != name:
                        edges.add(target)
            elif name == REGISTRY and isinstance(node, ast.Constant) and node.value in known:
                edges.add(node.value)  # the registry imports its packages by name
        graph[name] = edges
    graph["llmnest.targets"] |= {f"{package}.target" for package in graph[REGISTRY]
                                 if f"{package}.target" in known}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of two or more modules that reach each other (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            if group:
                found.append(sorted([v, *group]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions_and_relative_ones() -> None:
    graph = import_graph()
    assert "llmnest.targets" in graph["llmnest.targets.upstream_provider"]  # `from . import get`
    assert "llmnest.targets.local" in graph["llmnest.targets.registry"]  # a package named in PACKAGES
    assert "llmnest.targets.local.target" in graph["llmnest.targets"]  # loaded by targets.get()


def test_no_import_cycle_in_src() -> None:
    assert cycles(import_graph()) == []
