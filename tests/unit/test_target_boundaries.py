"""A target owns everything about it: no module of llmnest outside targets/ names a target or imports one
target's package; only targets/registry.py maps names to packages.

What "names" means: any string (docstrings and help included) in which a target's name stands as a word,
or an attribute so named (`spec.aliyun`); for the default target, whose name `local` is also an English
word (and the label of the endpoint reachable from here), a string equal to it compared with something or
given as a target (`target == "local"`, `target="local"`, `{"target": "local"}`, a parameter `target`'s
default). Console templates are held to the same words. The targets are the registry's names and every
package under targets/ (a target being written, not registered yet, is one too).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from llmnest.targets import registry
from tests.unit.test_import_graph import import_graph

SRC = Path(__file__).resolve().parents[2] / "src" / "llmnest"
TARGETS = SRC / "targets"


def target_names() -> set[str]:
    packages = {p.name for p in TARGETS.iterdir() if (p / "__init__.py").is_file()}
    return set(registry.names()) | packages


def outside_targets() -> list[Path]:
    return sorted(f for f in SRC.rglob("*.py") if TARGETS not in f.parents)


def _given_as_target(node: ast.Constant, parents: dict[ast.AST, ast.AST]) -> bool:
    parent = parents.get(node)
    if isinstance(parent, ast.Compare):
        return True
    if isinstance(parent, (ast.Tuple, ast.List, ast.Set)) and isinstance(parents.get(parent), ast.Compare):
        return True
    if isinstance(parent, ast.keyword):
        return parent.arg == "target"
    if isinstance(parent, ast.Dict):
        keys = [k.value for k, v in zip(parent.keys, parent.values) if v is node and isinstance(k, ast.Constant)]
        return keys == ["target"]
    if isinstance(parent, ast.arguments):
        args = [*parent.posonlyargs, *parent.args]
        named = dict(zip([a.arg for a in args[len(args) - len(parent.defaults):]], parent.defaults))
        named |= {a.arg: d for a, d in zip(parent.kwonlyargs, parent.kw_defaults) if d is not None}
        return named.get("target") is node
    if isinstance(parent, (ast.Assign, ast.AnnAssign)):
        targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
        return any(isinstance(t, (ast.Name, ast.Attribute)) and (getattr(t, "id", None) or t.attr) == "target"
                   for t in targets)
    return False


def namings(tree: ast.AST, names: set[str], default: str) -> list[tuple[int, str]]:
    """(line, what) for each place the module names a target."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    words = re.compile(rf"(?<![\w.-])({'|'.join(sorted(n for n in names if n != default))})(?![\w-])")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if match := words.search(node.value):
                found.append((node.lineno, f"names {match[1]!r} in {node.value[:60]!r}"))
            elif node.value == default and _given_as_target(node, parents):
                found.append((node.lineno, f"takes {default!r} for a target"))
        elif isinstance(node, ast.Attribute) and node.attr in names - {default}:
            found.append((node.lineno, f"reads .{node.attr}"))
    return found


def test_no_module_outside_targets_names_a_target() -> None:
    names = target_names()
    found = [f"{f.relative_to(SRC)}:{line}: {what}" for f in outside_targets()
             for line, what in namings(ast.parse(f.read_text()), names, registry.DEFAULT)]
    assert found == [], "\n".join(found)


def test_no_console_template_names_a_target() -> None:
    quoted = re.compile(rf"""["']({'|'.join(sorted(target_names()))})["']""")
    bare = re.compile(rf"\b({'|'.join(sorted(target_names() - {registry.DEFAULT}))})\b")
    found = [f"{f.relative_to(SRC)}:{n}: {line.strip()[:80]}" for f in sorted((SRC / "console").rglob("*.html"))
             for n, line in enumerate(f.read_text().splitlines(), 1) if quoted.search(line) or bare.search(line)]
    assert found == [], "\n".join(found)


def test_no_module_outside_targets_imports_a_targets_package() -> None:
    packages = tuple(f"llmnest.targets.{name}" for name in target_names())
    found = [f"{module} imports {dep}" for module, deps in import_graph().items()
             if not module.startswith("llmnest.targets") for dep in sorted(deps)
             if any(dep == p or dep.startswith(p + ".") for p in packages)]
    assert found == [], "\n".join(found)


def test_only_the_registry_maps_names_to_packages() -> None:
    """Inside targets/ too: a module naming another target's package by a string is the registry (a target
    may name its own modules: `python -m llmnest.targets.local.supervisor`)."""
    module_names = re.compile(rf"llmnest\.targets\.({'|'.join(sorted(target_names()))})\b")
    found = []
    for f in sorted(SRC.rglob("*.py")):
        own = f.relative_to(TARGETS).parts[0] if TARGETS in f.parents else None
        strings = [n.value for n in ast.walk(ast.parse(f.read_text()))
                   if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        named = {m[1] for text in strings for m in module_names.finditer(text)} - {own}
        if named and f != TARGETS / "registry.py":
            found.append(f"{f.relative_to(SRC)} names {sorted(named)}")
    assert found == []


def test_the_checks_catch_what_they_are_for() -> None:
    """The rules above, held to code that breaks them (and to code that does not)."""
    names, default = {"local", "aliyun", "kubernetes"}, "local"
    bad = '''
if spec.target == "local": pass
if t in ("aliyun", "x"): pass
build(target="local")
d = {"target": "local"}
def f(target="local"): pass
help = "Print the ROS template (aliyun)."
place = spec.aliyun
msg = f"add --target kubernetes"
'''
    assert sorted(line for line, _ in namings(ast.parse(bad), names, default)) == [2, 3, 4, 5, 6, 7, 8, 9]
    good = '''
label = "local"
Endpoint(url, key, name, "local")
text = "a local model directory, a localhost address, mirrors.aliyun.com"
'''
    assert namings(ast.parse(good), names, default) == []
