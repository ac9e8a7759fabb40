"""`llmnest up / ls / status / logs / show / restart / redeploy / scale / down`: parse, call the lifecycle, print."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

import typer
import yaml
from rich.status import Status
from rich.table import Table

from .. import lifecycle
from ..humanize import duration
from ..spec import parse_sets
from ..spec_builder import UpRequest
from ..targets import Context, registry
from ..targets.base import DEFAULT_TIMEOUT
from . import render, target_options
from .target_options import DRY_RUN_NOTES, TARGET_HELP
from .invocation import program
from .output import console, err, handle_errors, print_json, say

MODEL_HELP = "Catalog name (see `llmnest models`) or a local model directory. Default: the embedded demo model."
SET_HELP = ("KEY=VALUE: a spec field (max_model_len, gpu_memory_utilization, enforce_eager, ...), env.NAME, or any "
            "engine flag; KEY= removes that flag or variable.")
NAME_HELP = "Deployment (default: the only one)."


class PhaseView:
    """Startup phases on stderr: a spinner with the phase, elapsed time and the latest log line."""

    def __init__(self) -> None:
        self.status = Status("resolving", console=err)
        self.t0 = time.monotonic()
        self.phase = ""

    def __enter__(self) -> PhaseView:
        self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.status.stop()

    def __call__(self, phase: str, line: str) -> None:
        if phase != self.phase:
            err.print(f"[dim]{time.monotonic() - self.t0:6.1f}s[/dim] {phase}")
            self.phase = phase
        last = line.strip()[-100:]
        self.status.update(f"{phase} [dim]({time.monotonic() - self.t0:.0f}s) {last}[/dim]")


def _context(view: PhaseView | None = None, **options: Any) -> Context:
    return Context(say=say, on_phase=view or (lambda _p, _l: None),
                   confirm=lambda q: typer.confirm(q, err=True), **options)


def _print_ready(created: Any, json_out: bool) -> None:
    info = lifecycle.summary(created.deployment, created.api_key, created.extra)
    if json_out:
        print_json({**info, "seconds_to_ready": round(created.seconds, 1)})
        return
    console.print(f"[bold green]{render.ready_line(info, created.seconds)}[/bold green]")
    console.print(render.extra_text(created.extra), markup=False)
    console.print(render.endpoint_text(info, program()), markup=False)


@handle_errors
def up(
    model: Optional[str] = typer.Argument(None, help=MODEL_HELP),
    name: Optional[str] = typer.Option(None, "--name", help="Deployment name (default: from the model)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="vllm or sglang (sglang needs an NVIDIA GPU)."),
    runtime: Optional[str] = typer.Option(None, "--runtime",
                                          help="process (a supervised local process) or docker (a container; without a GPU, "
                                               "`make image` builds llmnest/vllm-cpu:local: --set image=llmnest/vllm-cpu:local)."),
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind. Default 127.0.0.1 (private)."),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="Port of the OpenAI-compatible API."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="API key to require (default: generated; behind the gateway, its key `default`)."),
    no_api_key: bool = typer.Option(False, "--no-api-key", help="Serve without a key (loopback only unless --insecure)."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow --no-api-key on a non-loopback address."),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len", min=1, help="Served context length."),
    sets: list[str] = typer.Option([], "--set", help=SET_HELP),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout", min=1, help="Seconds to wait for a first answer."),
    force: bool = typer.Option(False, "--force", help="Start even when the memory plan says it does not fit."),
    weights: Optional[str] = typer.Option(None, "--weights",
                                          help="Folder with MODEL's weights fetched by hand (keeps the catalog's "
                                               "defaults: served name, context, reasoning parser)."),
    target: str = typer.Option(registry.DEFAULT, "--target", help=f"{TARGET_HELP}."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before creating paid resources."),
    dry_run: bool = typer.Option(False, "--dry-run", help=f"Print what would be created{DRY_RUN_NOTES} and create "
                                                          "nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    **given: Any,  # every target's options (target_options): the signature below declares them
) -> None:
    """Deploy MODEL and wait until it answers a real chat request; print endpoint, key and examples."""
    req = UpRequest(
        model=model or "", name=name, engine=engine, runtime=runtime, host=host, port=port, api_key=api_key,
        no_api_key=no_api_key, insecure=insecure, max_model_len=max_model_len, sets=parse_sets(sets),
        weights=weights, target=target, options=target_options.given(given, sys.stdin),
    )
    if dry_run:
        result = lifecycle.dry_run(req, _context(dry_run=True))
        if json_out:
            print_json(result)
        else:
            console.print(lifecycle.dry_run_text(req, result), markup=False, highlight=False)
        return
    with PhaseView() as view:
        created = lifecycle.up(req, _context(view, timeout=timeout, force=force, yes=yes))
    _print_ready(created, json_out)


up.__signature__ = target_options.signature(up, before="target")  # type: ignore[attr-defined]


@handle_errors
def ls(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List deployments."""
    rows = lifecycle.rows()
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no deployments; start one with `llmnest up`")
        return
    table = Table("name", "model", "engine", "where", "status", "endpoint", "uptime", "restarts")
    for r in rows:
        table.add_row(r["name"], r["model"], r["engine"], r["where"], r["status"], r["base_url"],
                      duration(r["uptime_s"]), str(r["restarts"]))
    console.print(table)


@handle_errors
def status(
    name: Optional[str] = typer.Argument(None, help=NAME_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """State, process or container (or stack), endpoint, uptime, restarts, last error, planned vs actual KV cache."""
    info = lifecycle.status(name)
    if json_out:
        print_json(info)
        return
    console.print(render.status_text(info), markup=False, highlight=False)


@handle_errors
def logs(
    name: Optional[str] = typer.Argument(None, help=NAME_HELP),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines (Ctrl-C to stop)."),
    lines: int = typer.Option(100, "--tail", "-n", min=0, help="How many of the last lines to print."),
    replica: int = typer.Option(0, "--replica", min=0, help="Which engine replica's log (`status` lists them)."),
    gateway: bool = typer.Option(False, "--gateway", help="The log of the gateway in front of the deployment instead."),
) -> None:
    """Print the engine's log (replica 0 unless --replica), or the gateway's."""
    try:
        for line in lifecycle.logs(name, lines, follow_, replica, gateway):
            print(line, flush=True)
    except KeyboardInterrupt:
        pass


@handle_errors
def show(
    name: Optional[str] = typer.Argument(None, help=NAME_HELP),
    as_: str = typer.Option("spec", "--as", help=target_options.SHOW_HELP),
    json_out: bool = typer.Option(False, "--json", help="With --as spec: print JSON instead of YAML."),
) -> None:
    """The exact parameters and the exact command or script the deployment runs."""
    text = lifecycle.show(name, as_)
    if as_ == "spec" and json_out:
        print_json(yaml.safe_load(text))
    else:
        print(text)


@handle_errors
def restart(
    name: Optional[str] = typer.Argument(None, help=NAME_HELP),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout", min=1, help="Seconds to wait for an answer."),
) -> None:
    """Start the deployment again with the same spec; waits until it answers (the help adds what each target does)."""
    t0 = time.monotonic()
    with PhaseView() as view:
        dep = lifecycle.restart(name, _context(view, timeout=timeout))
    console.print(f"[bold green]✓[/bold green] {dep.name} answers again ({time.monotonic() - t0:.0f} s)")


@handle_errors
def redeploy(
    name: Optional[str] = typer.Argument(None, help=NAME_HELP),
    sets: list[str] = typer.Option([], "--set", help=SET_HELP),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout", min=1, help="Seconds to wait for an answer."),
    force: bool = typer.Option(False, "--force", help="Redeploy even when the memory plan says it does not fit."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Change parameters and redeploy: same name, same API key. Behind the gateway with room for one more engine,
    the old engine serves until the new one answers (a failed new spec leaves it serving); else a new spec that
    does not answer puts the old one back. Prints which it chose and why."""
    with PhaseView() as view:
        created = lifecycle.redeploy(name, parse_sets(sets), _context(view, timeout=timeout, force=force))
    _print_ready(created, json_out)


@handle_errors
def scale(
    name: str = typer.Argument(..., help="Deployment."),
    replicas: int = typer.Argument(..., help="Engine replicas wanted (1 or more)."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout", min=1, help="Seconds to wait for the replicas."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Change the engine replicas in place, where the deployment's target can, the running ones untouched (more
    only where there is room for them: free GPUs, or on CPUs a core each and free memory); waits until they serve."""
    with PhaseView() as view:
        line = lifecycle.scale(name, replicas, _context(view, timeout=timeout))
    if json_out:
        print_json({"name": name, "replicas": replicas, "result": line})
    else:
        console.print(f"[bold green]✓[/bold green] {line}")


@handle_errors
def down(
    name: Optional[str] = typer.Argument(None, help=NAME_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before deleting cloud resources."),
    delete_weights: bool = typer.Option(False, "--delete-weights",
                                        help="Delete the weights the deployment keeps of its own too (a volume where "
                                             "its target keeps one; refused elsewhere). Kept by default, for the next up."),
) -> None:
    """Stop the deployment and remove it (the help adds what each target removes)."""
    console.print(lifecycle.down(name, _context(yes=yes, delete_weights=delete_weights)))


# What restart and down do on a target that declares its own words for it.
HELP = {"restart": "Start the deployment again with the same spec; waits until it answers (behind the gateway with "
                   "room for one more engine, the old one serves until the new one answers"
                   f"{'; ' if target_options.notes('restart') else ''}{target_options.notes('restart')}).",
        "down": "Stop the deployment and remove it (the engine log stays for reading"
                f"{'; ' if target_options.notes('down') else ''}{target_options.notes('down')})."}


def register(app: typer.Typer) -> None:
    for fn in (up, ls, status, logs, show, restart, redeploy, scale, down):
        # `scale NAME -1` reaches the lifecycle, which refuses it in one line, instead of click's "no such option"
        settings = {"ignore_unknown_options": True} if fn is scale else {}
        app.command(fn.__name__, help=HELP.get(fn.__name__), context_settings=settings)(fn)
