"""The flags and help words that come from the registered targets' declarations (targets/declaration.py):
`up`'s options of each target, `--target`'s choices, and what a verb does on a particular target."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Optional, TextIO

import typer

from ..targets import registry
from ..targets.declaration import Option


def _owners() -> dict[str, tuple[Option, list[str]]]:
    """Each option by CLI parameter, with the targets that declare it (the default target's first)."""
    out: dict[str, tuple[Option, list[str]]] = {}
    for decl in registry.declarations():
        for opt in decl.options:
            first, names = out.setdefault(opt.param_name, (opt, []))
            assert (first.flag, first.kind, first.default) == (opt.flag, opt.kind, opt.default), \
                f"{opt.flag}: {names[0]} and {decl.name} declare it differently"
            names.append(decl.name)
    return out


def _parameter(opt: Option, owners: list[str]) -> inspect.Parameter:
    decls = [f"{opt.flag}/{opt.negative}" if opt.negative else opt.flag]
    bounds = {k: v for k, v in (("min", opt.min), ("max", opt.max)) if v is not None}
    info = typer.Option(opt.default, *decls, help=f"\\[{', '.join(owners)}] {opt.help}", **bounds)
    annotation = opt.kind if opt.default is not None else Optional[opt.kind]  # noqa: UP045 - typer reads it
    return inspect.Parameter(opt.param_name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=info,
                             annotation=annotation)


def signature(fn: Callable[..., Any], before: str) -> inspect.Signature:
    """`fn`'s signature with its `**options` replaced by every target's options: the default target's just
    before the parameter `before` (`--target`), the others' right after it."""
    own = [p for p in inspect.signature(fn).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    at = next(i for i, p in enumerate(own) if p.name == before)
    first, rest = [], []
    for opt, owners in _owners().values():
        (first if owners[0] == registry.DEFAULT else rest).append(_parameter(opt, owners))
    return inspect.Signature([*own[:at], *first, own[at], *rest, *own[at + 1:]])


def given(values: dict[str, Any], stdin: TextIO) -> dict[str, Any]:
    """The options given (a value other than the default), keyed by field; a `from_stdin` flag reads its
    value as one line of stdin."""
    out: dict[str, Any] = {}
    for opt, _ in _owners().values():
        value = values.get(opt.param_name)
        if value is None or value == opt.default:
            continue
        out[opt.field] = stdin.readline().rstrip("\n") if opt.from_stdin else value
    return out


def notes(what: str, sep: str = "; ") -> str:
    """'NAME: what it does' for each target that declares what `what` (restart, down, dry_run) does there;
    joined by `sep`."""
    return sep.join(f"{d.name}: {getattr(d, what)}" for d in registry.declarations() if getattr(d, what))


def _show_help() -> str:
    """`show --as`'s choices: the spec, command and script everywhere, then each target's own formats."""
    owners: dict[str, list[str]] = {}
    for d in registry.declarations():
        for fmt in d.show_formats:
            owners.setdefault(fmt, []).append(d.name)
    own = [f"{fmt} ({', '.join(names)})" for fmt, names in owners.items() if fmt not in ("command", "script")]
    return f"spec (effective parameters), command, script, or {', '.join(own)}." if own else \
        "spec (effective parameters), command or script."


TARGET_HELP = registry.choices([f"{d.name} ({d.summary})" for d in registry.declarations()])
DRY_RUN_NOTES = f" ({notes('dry_run')})" if notes("dry_run") else ""
SHOW_HELP = _show_help()
