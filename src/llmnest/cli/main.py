"""`llmnest`: the typer app. Each command group lives in its own module with a register(app)."""

from __future__ import annotations

import importlib
import logging

import typer

from .. import __version__

app = typer.Typer(
    name="llmnest",
    help="Deploy an open LLM behind a secured, benchmarked, OpenAI-compatible endpoint.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

COMMAND_MODULES = ("models_cmd", "deploy_cmd", "bench_cmd", "plan_cmd", "keys_cmd", "usage_cmd", "gateway_cmd", "console_cmd")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmnest {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug detail on stderr."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Deploy, operate and measure LLM endpoints on this machine, on Alibaba Cloud or in a Kubernetes cluster."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


for _module in COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_module}").register(app)
for _command in app.registered_commands:  # the command list shows each first paragraph as one flowing line
    _text = _command.help or (_command.callback.__doc__ if _command.callback else None) or ""
    _command.short_help = _command.short_help or " ".join(_text.strip().split("\n\n")[0].split())


def run() -> None:
    app()
