"""`llmnest up / ls / status / logs / show / restart / redeploy / down`."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Optional

import typer
import yaml
from rich.status import Status
from rich.table import Table

from .. import deploy, state
from ..build import UpRequest
from ..catalog import find_model
from ..errors import BadInput, NotFound
from ..home import log_path
from ..logs import follow, tail
from ..spec import AliyunPlacement, parse_sets
from . import render
from .output import console, err, handle_errors, print_json, say

MODEL_HELP = "Catalog name (see `llmnest models`) or a local model directory. Default: the embedded demo model."
SET_HELP = "KEY=VALUE: a spec field (max_model_len, gpu_memory_utilization, enforce_eager, ...), env.NAME, or any engine flag."


class PhaseView:
    """Startup phases on stderr: a spinner with the phase, elapsed time and the latest log line."""

    def __init__(self, quiet: bool) -> None:
        self.status: Status | None = None if quiet else Status("resolving", console=err)
        self.t0 = time.monotonic()
        self.phase = ""

    def __enter__(self) -> PhaseView:
        if self.status:
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status:
            self.status.stop()

    def __call__(self, phase: str, line: str) -> None:
        if phase != self.phase and self.status:
            err.print(f"[dim]{time.monotonic() - self.t0:6.1f}s[/dim] {phase}")
            self.phase = phase
        if self.status:
            last = line.strip()[-100:]
            self.status.update(f"{phase} [dim]({time.monotonic() - self.t0:.0f}s) {last}[/dim]")


def _print_ready(dep: state.Deployment, key: str | None, seconds: float, json_out: bool) -> None:
    info = render.deployment_summary(dep, key)
    if json_out:
        print_json({**info, "seconds_to_ready": round(seconds, 1)})
    else:
        console.print(f"[bold green]✓[/bold green] {dep.name} answers ({dep.spec.engine}, {dep.spec.runtime}, "
                      f"{seconds:.0f} s)\n")
        console.print(render.endpoint_text(info), markup=False)


@handle_errors
def up(
    model: Optional[str] = typer.Argument(None, help=MODEL_HELP),
    name: Optional[str] = typer.Option(None, "--name", help="Deployment name (default: from the model)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="vllm or sglang (sglang needs an NVIDIA GPU)."),
    runtime: Optional[str] = typer.Option(None, "--runtime",
                                          help="process (supervised local process) or docker (container, GPU hosts)."),
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind. Default 127.0.0.1 (private)."),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="Port of the OpenAI-compatible API."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="API key to require (default: a generated one)."),
    no_api_key: bool = typer.Option(False, "--no-api-key", help="Serve without a key (loopback only unless --insecure)."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow --no-api-key on a non-loopback address."),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len", min=1, help="Served context length."),
    sets: list[str] = typer.Option([], "--set", help=SET_HELP),
    timeout: float = typer.Option(deploy.DEFAULT_TIMEOUT, "--timeout", min=1, help="Seconds to wait for a first answer."),
    force: bool = typer.Option(False, "--force", help="Start even when the memory plan says it does not fit."),
    target: str = typer.Option("local", "--target", help="local (this machine) or aliyun (an ECS GPU instance)."),
    region: Optional[str] = typer.Option(None, "--region", help="[aliyun] Region, e.g. cn-hangzhou."),
    zone: Optional[str] = typer.Option(None, "--zone", help="[aliyun] Zone (default: one that offers the type)."),
    instance_type: Optional[str] = typer.Option(None, "--instance-type", help="[aliyun] ECS type (default: cheapest that fits)."),
    nodes: int = typer.Option(1, "--nodes", min=1, max=2, help="[aliyun] 1, or 2 for the two-instance Ray edition."),
    public: bool = typer.Option(False, "--public/--private", help="[aliyun] Public IP and access, or VPC only."),
    bandwidth: Optional[int] = typer.Option(
        None, "--bandwidth", min=0, max=200,
        help="[aliyun] Public bandwidth cap in Mbps, pay by traffic (default: 100, or 200 when the weights need it; "
             "0: no public IP, needs --vpc-id with a NAT gateway)."),
    allow_cidr: Optional[str] = typer.Option(None, "--allow-cidr", help="[aliyun] CIDR allowed to reach the port and SSH."),
    vpc_id: Optional[str] = typer.Option(None, "--vpc-id", help="[aliyun] Existing VPC (with --vswitch-id)."),
    vswitch_id: Optional[str] = typer.Option(None, "--vswitch-id", help="[aliyun] Existing vSwitch."),
    pay: str = typer.Option("postpaid", "--pay", help="[aliyun] postpaid (pay-as-you-go) or prepaid."),
    period: Optional[int] = typer.Option(None, "--period", min=1, max=9, help="[aliyun] Months, for --pay prepaid."),
    key_pair: Optional[str] = typer.Option(None, "--key-pair", help="[aliyun] SSH key pair name."),
    image_id: Optional[str] = typer.Option(None, "--image-id",
                                           help="[aliyun] GPU image with the NVIDIA driver, docker and container "
                                                "toolkit (default: newest public Ubuntu 22.04, completed by the bootstrap)."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="[aliyun] Read the instance password from stdin."),
    yes: bool = typer.Option(False, "--yes", "-y", help="[aliyun] Do not ask before creating paid resources."),
    dry_run: bool = typer.Option(False, "--dry-run", help="[aliyun] Print template, parameters and preflight only."),
    validate: bool = typer.Option(False, "--validate", help="[aliyun] With --dry-run: have ROS validate the template "
                                                            "and preview the stack (needs credentials, creates nothing)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Deploy MODEL and wait until it answers a real chat request; print endpoint, key and examples."""
    if target not in {"local", "aliyun"}:
        raise BadInput(f"unknown --target {target!r}: use local or aliyun")
    cloud_only = {"--region": region, "--zone": zone, "--instance-type": instance_type, "--nodes": nodes != 1,
                  "--public": public, "--bandwidth": bandwidth, "--allow-cidr": allow_cidr, "--vpc-id": vpc_id,
                  "--vswitch-id": vswitch_id, "--pay": pay != "postpaid", "--period": period, "--key-pair": key_pair,
                  "--image-id": image_id, "--password-stdin": password_stdin, "--dry-run": dry_run,
                  "--validate": validate}
    given = [flag for flag, value in cloud_only.items() if value is not None and value is not False]
    if target == "local" and given:
        raise BadInput(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for --target aliyun: "
                       "add --target aliyun, or drop them to deploy on this machine")
    placement = None
    if target == "aliyun":
        if not region:
            raise BadInput("--target aliyun needs --region (for example --region cn-hangzhou)")
        placement = AliyunPlacement(
            region=region, zone=zone, instance_type=instance_type, nodes=nodes, public=public,
            bandwidth_mbps=bandwidth, allow_cidr=allow_cidr, vpc_id=vpc_id, vswitch_id=vswitch_id,
            pay=pay, period_months=period, key_pair=key_pair, image_id=image_id,
        )
    req = UpRequest(
        model=model or "", name=name, engine=engine, runtime=runtime, host=host, port=port, api_key=api_key,
        no_api_key=no_api_key, insecure=insecure, max_model_len=max_model_len, sets=parse_sets(sets),
        aliyun=placement,
    )
    if placement is not None:
        from ..cloud.aliyun import service

        spec, key, _ = deploy.plan_request(req)
        password = sys.stdin.readline().rstrip("\n") if password_stdin else None
        result = service.deploy(spec, key, password, yes=yes, dry_run=dry_run, say=say,
                                confirm=lambda q: typer.confirm(q, err=True), validate=validate)
        if json_out:
            print_json(result)
        elif dry_run:
            console.print(render.dry_run_text(result), markup=False, highlight=False)
        else:
            console.print(f"[bold green]✓[/bold green] {result['name']} answers ({result['engine']} on "
                          f"{result['nodes']} x {result['instance_type']}, {result['region']}/{result['zone']})\n")
            console.print(render.endpoint_text(result), markup=False)
        return
    with PhaseView(quiet=False) as view:
        started = deploy.up(req, say, view, timeout=timeout, force=force)
    _print_ready(state.get(started.spec.name), started.api_key, started.seconds, json_out)


@handle_errors
def ls(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List deployments."""
    rows = [render.status_row(d) for d in state.all_deployments()]
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no deployments; start one with `llmnest up`")
        return
    table = Table("name", "model", "engine", "where", "status", "endpoint", "uptime", "restarts")
    for r in rows:
        table.add_row(r["name"], r["model"], r["engine"], r["where"], r["status"], r["base_url"],
                      render.duration(r["uptime_s"]), str(r["restarts"]))
    console.print(table)


@handle_errors
def status(
    name: Optional[str] = typer.Argument(None, help="Deployment (default: the only one)."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """State, process or container, endpoint, uptime, restarts, last error, planned vs actual KV cache."""
    dep = state.get(state.resolve_name(name))
    extra: dict[str, object] = {}
    if dep.spec.target == "aliyun":
        from ..cloud.aliyun import service

        extra["cloud"] = service.status(dep)  # also records the stack's status
        dep = state.get(dep.name)
    elif dep.spec.runtime == "docker":
        from ..runtimes import docker

        extra["container_state"] = docker.inspect(dep.name)  # docker restarts it: its count is the truth
    info = {**render.status_detail(dep), **extra}
    if json_out:
        print_json(info)
        return
    console.print(render.status_text(info), markup=False, highlight=False)


@handle_errors
def logs(
    name: Optional[str] = typer.Argument(None, help="Deployment (default: the only one)."),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines (Ctrl-C to stop)."),
    lines: int = typer.Option(100, "--tail", "-n", min=0, help="How many of the last lines to print."),
) -> None:
    """Print the engine's log."""
    dep = state.get(state.resolve_name(name))
    if dep.spec.target == "aliyun":
        from ..cloud.aliyun import service

        if follow_:
            raise BadInput(f"--follow is for deployments on this machine: {dep.name}'s log is fetched through "
                           f"Cloud Assistant; run `llmnest logs {dep.name} --tail N` again for newer lines")
        for line in service.logs(dep, lines):
            print(line)
        return
    if dep.spec.runtime == "docker":
        from ..runtimes import docker

        raise typer.Exit(subprocess.call(docker.logs_argv(dep.name, follow_, lines)))
    path = log_path(dep.name)
    try:
        for line in (follow(path, lines) if follow_ else tail(path, lines)):
            print(line, flush=True)
    except KeyboardInterrupt:
        pass


@handle_errors
def show(
    name: Optional[str] = typer.Argument(None, help="Deployment (default: the only one)."),
    as_: str = typer.Option("spec", "--as", help="spec (effective parameters), command, script, or ros (aliyun)."),
    json_out: bool = typer.Option(False, "--json", help="With --as spec: print JSON instead of YAML."),
) -> None:
    """The exact parameters and the exact command or script the deployment runs."""
    if as_ in {"ros", "script"} and name and name not in state.names() and find_model(name):
        raise NotFound(f"no deployment named {name!r} yet: `llmnest up {name} --target aliyun --region REGION "
                       "--dry-run` prints the template and script it would run, creating nothing")
    dep = state.get(state.resolve_name(name))
    text = render.show(dep, as_)
    if as_ == "spec" and json_out:
        print_json(yaml.safe_load(text))
    else:
        print(text)


@handle_errors
def restart(
    name: Optional[str] = typer.Argument(None, help="Deployment (default: the only one)."),
    timeout: float = typer.Option(deploy.DEFAULT_TIMEOUT, "--timeout", min=1, help="Seconds to wait for an answer."),
) -> None:
    """Stop and start the deployment with the same spec; waits until it answers (aliyun: the bootstrap again)."""
    target = state.resolve_name(name)
    t0 = time.monotonic()
    dep = state.get(target)
    if dep.spec.target == "aliyun":
        from ..cloud.aliyun import service

        service.redeploy(dep, dep.spec, say)  # the bootstrap again, same spec: a fresh engine container
    else:
        with PhaseView(quiet=False) as view:
            deploy.restart(target, view, timeout)
    console.print(f"[bold green]✓[/bold green] {target} answers again ({time.monotonic() - t0:.0f} s)")


@handle_errors
def redeploy(
    name: Optional[str] = typer.Argument(None, help="Deployment (default: the only one)."),
    sets: list[str] = typer.Option([], "--set", help=SET_HELP),
    timeout: float = typer.Option(deploy.DEFAULT_TIMEOUT, "--timeout", min=1, help="Seconds to wait for an answer."),
    force: bool = typer.Option(False, "--force", help="Redeploy even when the memory plan says it does not fit."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Change parameters and redeploy: same name, same API key; the old engine stops only once the new spec is valid."""
    if not sets:
        raise BadInput("nothing to change: pass --set KEY=VALUE (for example --set max_model_len=2048)")
    target = state.resolve_name(name)
    dep = state.get(target)
    if dep.spec.target == "aliyun":
        from ..cloud.aliyun import service
        from ..spec import apply_sets

        if force:
            raise BadInput("--force is for deployments on this machine: on the cloud the instance type must fit")
        t0 = time.monotonic()
        service.redeploy(dep, apply_sets(dep.spec, parse_sets(sets)), say)
        _print_ready(state.get(target), state.api_key(target), time.monotonic() - t0, json_out)
        return
    with PhaseView(quiet=False) as view:
        started = deploy.redeploy(target, parse_sets(sets), view, timeout, force)
    _print_ready(state.get(target), started.api_key, started.seconds, json_out)


@handle_errors
def down(
    name: Optional[str] = typer.Argument(None, help="Deployment (default: the only one)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="[aliyun] Delete the stack without asking."),
) -> None:
    """Stop the deployment and remove it (the engine log stays for reading)."""
    target = state.resolve_name(name)
    dep = state.get(target)
    if dep.spec.target == "aliyun":
        from ..cloud.aliyun import service

        service.down(dep, say, lambda q: yes or typer.confirm(q, err=True))
        return
    deploy.down(target)
    console.print(f"stopped and removed {target} (log kept: {log_path(target)})")


def register(app: typer.Typer) -> None:
    for fn in (up, ls, status, logs, show, restart, redeploy, down):
        app.command(fn.__name__)(fn)
