"""The engine replicas of a deployment on this machine, each a unit under a detached supervisor
(`python -m llmnest.targets.local.supervisor NAME/0`): started, waited for until they answer (and the
gateway in front routes to them), stopped, and described for `status`."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ... import state
from ...errors import LlmnestError
from ...home import gateway_log_path, log_path, supervisor_log_path
from ...logs import last_attempt
from ...logs import tail as tail_of
from ...runtimes import docker, docker_cli, process
from ...spec import DeploymentSpec
from . import gateway as local_gateway, supervised, surge as local_surge, units_store
from ..base import Context

INTERRUPT_GRACE = 2.0  # an engine that never answered has nothing to drain


def replica_units(spec: DeploymentSpec) -> list[units_store.Unit]:
    """The engine replicas of `spec`: on loopback ports of their own behind the gateway, else on its host:port."""
    if not spec.gateway:
        return [units_store.Unit(units_store.replica_id(spec.name, 0), "engine", spec.name, 0, spec.host, spec.port)]
    return [units_store.Unit(units_store.replica_id(spec.name, i), "engine", spec.name, i, "127.0.0.1",
                             local_gateway.free_port()) for i in range(spec.replicas)]


def start_all(name: str, ctx: Context) -> None:
    """Start every replica (and the gateway in front) and wait until the deployment answers."""
    ctx.on_phase("starting engine", "")
    spec = state.get(name).spec
    for unit in replica_units(spec):
        start_unit(units_store.put(unit))
    if spec.gateway:
        local_gateway.ensure(spec.host, spec.port)
    wait_ready(name, ctx)


def start_unit(unit: units_store.Unit) -> None:
    units_store.update(unit.id, status="starting", pid=None, ready_at=None, last_error=None, stage=None)
    assert unit.deployment is not None
    log = supervisor_log_path(unit.deployment, unit.index)
    units_store.update(unit.id, supervisor_pid=supervised.start_supervisor(unit.id, log))


def discard(name: str, ctx: Context, interrupted: bool) -> None:
    """Stop what a failed or interrupted start made, all at once (nothing answered yet, nothing to
    drain), and forget the deployment."""
    dep = state.get(name)
    if interrupted:
        ctx.say(f"interrupted: stopping {name} ({what_runs(dep)}) and removing its record; "
                f"the log stays at {log_path(name)}")
    try:
        with ThreadPoolExecutor() as pool:
            stops = [pool.submit(stop_unit, dep, u, INTERRUPT_GRACE) for u in dep.replicas]
            if dep.spec.gateway:
                stops.append(pool.submit(local_gateway.release, dep.spec.port, INTERRUPT_GRACE, leaving=name))
            for stop in stops:
                stop.result()
    finally:
        state.delete(name)


def what_runs(dep: state.Deployment) -> str:
    if dep.spec.runtime == "docker":
        return "container " + ", ".join(docker.container_name(dep.name, u.index) for u in dep.replicas)
    return "; ".join(f"supervisor pid {u.supervisor_pid}" + (f", engine pid {u.pid}" if u.pid else "")
                     for u in dep.replicas)


def recent_lines(dep: state.Deployment, n: int = 200, replica: int = 0) -> list[str]:
    container = docker.container_name(dep.name, replica)
    if dep.spec.runtime == "docker" and docker_cli.inspect(container, missing_ok=True):
        return docker_cli.log_lines(container, n)
    return last_attempt(log_path(dep.name, replica), n)


def wait_ready(name: str, ctx: Context, only: units_store.Unit | None = None) -> state.Deployment:
    """Poll the record until the replicas' supervisors (or `only` that one) report 'ready', then until the
    gateway answers; a failed start or a timeout raises with the log tail."""
    deadline = time.monotonic() + ctx.timeout
    while True:
        dep = state.get(name)
        units = [u for u in dep.replicas if only is None or u.id == only.id]
        if all(u.status == "ready" for u in units):
            break
        bad = next((u for u in units if u.status == "failed" or not process.pid_alive(u.supervisor_pid)), None)
        lines = recent_lines(dep, replica=(bad or units[0]).index)
        logfile = log_path(name, (bad or units[0]).index)
        if bad is not None and bad.status == "failed":
            raise LlmnestError(f"{bad.last_error} (log: {logfile})", detail="\n".join(lines[-20:]))
        if bad is not None:
            raise LlmnestError(f"the supervisor of {bad.id!r} exited unexpectedly (log: {logfile})",
                               detail="\n".join(tail_of(supervisor_log_path(name, bad.index), 20)))
        if time.monotonic() > deadline:
            raise LlmnestError(
                f"{name!r} did not answer within {ctx.timeout:.0f} s; it was stopped (log: {logfile}). "
                "Raise --timeout for large models",
                detail="\n".join(lines[-20:]),
            )
        loading = [u for u in units if u.status != "ready"]
        stage = loading[0].stage if loading else None
        phase = {"up": "warming up (server answers, model not yet)"}.get(stage or "", "loading model")
        if len(units) > 1:
            phase += f" ({sum(u.status == 'ready' for u in units)}/{len(units)} replicas ready)"
        ctx.on_phase(phase if loading[0].status != "starting" else "starting engine", lines[-1] if lines else "")
        time.sleep(0.5)
    if dep.spec.gateway:
        key = state.api_key(name)
        assert key is not None, "a deployment behind the gateway has a key"
        if local_gateway.key_usable(key):
            local_gateway.wait_answers(dep, key, ctx)
        else:  # its key was revoked (e.g. `default` on the Keys page): the gateway's own view of the replicas
            _wait_routed(dep, ctx)
    return dep


def _wait_routed(dep: state.Deployment, ctx: Context) -> None:
    """Until the gateway reports a healthy replica of the deployment's model on its /metrics (read from
    loopback, no key needed): for a deployment whose own key can no longer be used to ask it."""
    deadline = time.monotonic() + max(ctx.timeout, 60)
    while True:
        families = local_surge.gateway_metrics(dep.spec, "llmnest_replica_up") or []
        if any(s.value == 1 and s.labels.get("model") == dep.spec.served_model_name
               for f in families for s in f.samples):
            return
        if time.monotonic() > deadline:
            raise LlmnestError(f"the engines answer but the gateway on port {dep.spec.port} does not route to them; "
                               f"see {gateway_log_path(dep.spec.port)}")
        ctx.on_phase("starting gateway", "gateway: waiting for it to see a ready replica")
        time.sleep(0.5)


def stop_all(dep: state.Deployment, grace: float = 30) -> None:
    """Every replica, at the same time."""
    with ThreadPoolExecutor() as pool:
        for stop in [pool.submit(stop_unit, dep, u, grace) for u in dep.replicas]:
            stop.result()


def stop_unit(dep: state.Deployment, unit: units_store.Unit, grace: float = 30) -> None:
    supervised.stop(unit, grace, child_process=dep.spec.runtime == "process")
    if dep.spec.runtime == "docker":  # the supervisor removes it; this covers a supervisor that was gone
        docker_cli.remove(docker.container_name(dep.name, unit.index))


def replica_status(dep: state.Deployment, unit: units_store.Unit) -> dict[str, Any]:
    """One replica as `status` shows it: the supervisor's record, and the container's own state under docker."""
    out: dict[str, Any] = {"replica": unit.index, "status": unit.status, "port": unit.port,
                           "restarts": unit.restarts, "last_error": unit.last_error}
    if dep.spec.runtime == "docker":
        name = docker.container_name(dep.name, unit.index)
        found = docker_cli.inspect(name, missing_ok=True)
        out["container"] = ({"name": name, "state": found.status, "restarts_by_docker": found.restarts,
                             "pid": found.pid or None, "started_at": found.started_at, "error": found.error}
                            if found else {"name": name, "state": "missing"})
    else:
        out.update(pid=unit.pid, supervisor_pid=unit.supervisor_pid)
    return out
