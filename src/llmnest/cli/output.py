"""Printing for the CLI: rich consoles, JSON output, and turning errors into one clear line."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import BadInput, ExitCode, LlmnestError
from ..targets import registry

console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)
log = logging.getLogger("llmnest")

F = TypeVar("F", bound=Callable[..., Any])

# The extra of llmnest that brings a module (`make up` installs them all); prefixes of module names. A target's
# SDKs come with the extra its declaration names.
EXTRA_OF_MODULE = {**{prefix: d.extra for d in registry.declarations() if d.extra for prefix in d.sdk_modules},
                   "aiohttp": "bench", "numpy": "bench",
                   "matplotlib": "bench", "tokenizers": "bench", "modelscope": "hub", "huggingface_hub": "hub",
                   "gguf": "demo", "accelerate": "demo", "transformers": "demo", "torch": "demo"}


def missing_dependency(exc: ModuleNotFoundError) -> BadInput:
    """A missing optional package as one line naming what to install."""
    module = (exc.name or "").split(".")[0]
    extra = next((e for prefix, e in EXTRA_OF_MODULE.items() if module.startswith(prefix)), None)
    how = f"pip install 'llmnest[{extra}]'" if extra else f"pip install {module}"
    return BadInput(f"this needs the Python package {module!r}, which is not installed: {how} "
                    "(`make up` installs everything llmnest uses)")


def print_json(obj: Any) -> None:
    """One JSON document on stdout (plain, so pipes and jq get it unchanged)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def say(message: str) -> None:
    """A progress line on stderr, so stdout stays clean for --json."""
    err.print(f"[dim]•[/dim] {message}")


def fail(exc: LlmnestError) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {escape(exc.message)}")
    if exc.detail:
        err.print(exc.detail, markup=False)
    return typer.Exit(exc.exit_code)


def handle_errors(fn: F) -> F:
    """Run a command; an LlmnestError becomes one line and its exit code, Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LlmnestError as exc:
            log.debug("command failed", exc_info=True)
            raise fail(exc) from None
        except ModuleNotFoundError as exc:
            if (exc.name or "").startswith("llmnest"):
                raise  # our own module missing is a bug, not an install step
            log.debug("missing module", exc_info=True)
            raise fail(missing_dependency(exc)) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(ExitCode.INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]
