"""What `make up` alone installs is enough for every README command.

The suite runs in an environment that also has the test extras; these tests make sure that cannot
hide a missing install step: product code imports only what `make up` installs (declared, not
arriving by chance through another package), and the README's commands run with the test-only
packages made unimportable.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO, cli_env

SRC = REPO / "src" / "llmnest"
ENGINE_EXTRAS = {"cpu", "gpu", "sglang"}  # the engines are checked by the lifecycle (`find_spec`), not imported


def make_up_extras() -> set[str]:
    """The extras `make up` installs, read from the Makefile (EXTRAS) plus the engine extra."""
    found = re.search(r"^EXTRAS := (.+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert found, "the Makefile names the extras `make up` installs in EXTRAS"
    return {e.strip() for e in found.group(1).split(",")} | ENGINE_EXTRAS


def declared(extras: set[str]) -> set[str]:
    """Distributions llmnest declares for a plain install plus `extras` (normalized names)."""
    names = set()
    for line in requires("llmnest") or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
            names.add(_norm(req.name))
    return names


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """An import inside `try: ... except ImportError` is optional by design (uvloop)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in {"ImportError", "ModuleNotFoundError"} for h in node.handlers
        ):
            return True
    return False


def third_party_imports() -> dict[str, list[str]]:
    """Top-level modules product code imports (not stdlib, not llmnest) -> where."""
    found: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in {"llmnest", "__future__"} or _guarded(node, parents):
                    continue
                found.setdefault(top, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_product_code_imports_only_what_make_up_declares():
    allowed = declared(make_up_extras())
    providers = packages_distributions()
    imports = third_party_imports()
    assert {"typer", "httpx", "alibabacloud_credentials"} <= set(imports)  # the scan sees real imports
    missing = {module: where for module, where in imports.items()
               if not {_norm(d) for d in providers.get(module, [module])} & allowed}
    assert not missing, f"imported but not declared in a `make up` extra: {missing}"


def test_test_extras_hold_only_test_tools():
    test_only = declared({"test"}) - declared(make_up_extras())
    assert test_only, "the test extra exists"
    providers = packages_distributions()
    imported_dists = {_norm(d) for m in third_party_imports() for d in providers.get(m, [m])}
    assert not test_only & imported_dists


BLOCKING_RUNNER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (a test-only package)", name=name)
sys.meta_path.insert(0, Block())
sys.argv = ["llmnest", *sys.argv[2:]]
from llmnest.cli.main import run
run()
"""


def blocked_test_modules() -> list[str]:
    dists = {_norm(d) for d in declared({"test"}) - declared(make_up_extras())}
    return sorted(m for m, ds in packages_distributions().items() if {_norm(d) for d in ds} & dists)


def readme_commands() -> list[list[str]]:
    """The README's `llmnest ...` example lines that need no deployment, GPU, network or account."""
    text = (REPO / "README.md").read_text()
    blocks = [b.replace("\\\n", " ") for b in re.findall(r"```bash\n(.*?)```", text, re.DOTALL)]
    lines = [part.strip() for b in blocks for line in b.splitlines() for part in line.split("#")[0].split(";")]
    commands = [shlex.split(line) for line in lines if line.startswith("llmnest ")]
    runnable = [c for c in commands if c[1] in {"models", "plan", "ls"} or "--dry-run" in c]
    assert any("--dry-run" in c for c in runnable) and any(c[1] == "plan" for c in runnable)
    return runnable


@pytest.mark.parametrize("command", readme_commands(), ids=" ".join)
def test_readme_command_runs_without_the_test_extras(command: list[str], tmp_path: Path):
    blocked = blocked_test_modules()
    assert "pytest" in blocked
    env = {k: v for k, v in cli_env(tmp_path / "home").items() if not k.startswith("ALIBABA_CLOUD")}
    done = subprocess.run([sys.executable, "-c", BLOCKING_RUNNER, ",".join(blocked), *command[1:]],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and done.stdout.strip()


def test_every_command_has_complete_help(tmp_path: Path):
    env = cli_env(tmp_path / "home")
    top = subprocess.run([sys.executable, "-m", "llmnest", "--help"], env=env, capture_output=True, text=True)
    names = re.findall(r"^│ (\w+)\s", top.stdout, re.MULTILINE)
    assert {"up", "status", "logs", "down", "plan", "bench"} <= set(names)
    for name in names:
        done = subprocess.run([sys.executable, "-m", "llmnest", name, "--help"], env=env, capture_output=True, text=True)
        assert done.returncode == 0 and "Usage:" in done.stdout, (name, done.stderr)


def test_a_missing_optional_package_is_one_line_naming_the_extra(tmp_path: Path):
    env = cli_env(tmp_path / "home")
    command = ["up", "Qwen/QwQ-32B", "--target", "aliyun", "--region", "cn-hangzhou", "--dry-run", "--json"]
    done = subprocess.run([sys.executable, "-c", BLOCKING_RUNNER, "alibabacloud_credentials", *command],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: this needs the Python package 'alibabacloud_credentials', which is not installed: "
        "pip install 'llmnest[aliyun]' (`make up` installs everything llmnest uses)"]
    ok = subprocess.run([sys.executable, "-c", BLOCKING_RUNNER, "pytest", *command], env=env, capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0 and json.loads(ok.stdout)["template"]["Resources"], ok.stderr
