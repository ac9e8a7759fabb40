"""This machine: the engine as a supervised local process or in a docker container.

A detached supervisor (`python -m llmnest.targets.local.supervisor NAME/0`) starts each engine replica,
records readiness, and restarts it after a crash or a hang; `create` records the deployment, starts the
supervisors and waits on the record. On a failed or interrupted start, the engines are stopped and the
record removed (the log stays, its path in the error), so a retry with the same name works. The verbs
delegate: `preflight` (checks before a start), `units` (the replicas), `rollout` (restart, redeploy,
rollback), `scale` (replicas added or removed), `show` (the commands).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ... import state
from ...spec_builder import UpRequest, build_spec, new_api_key
from ...endpoints import local_endpoints
from ...errors import BadInput
from ...endpoints import Endpoint
from ...gateway.upstreams import Upstream
from ...home import gateway_log_path, log_path, write_secret
from ...host import host_facts
from ...logs import follow as follow_file
from ...logs import tail as tail_of
from ...runtimes import docker, docker_cli, process
from ...spec import DeploymentSpec
from . import DECLARATION, gateway as local_gateway, rollout, scale as local_scale, units, units_store
from . import show as local_show
from .preflight import catalog_entry, check_can_start, check_plan, with_weights
from .records import LocalState
from ..base import Capability, Context, Created, Resolved, Target


def _file_lines(path: Path, tail: int, follow: bool) -> Iterator[str]:
    """A log file's last `tail` lines, then (with follow) new ones as they come."""
    return follow_file(path, tail) if follow else iter(tail_of(path, tail))


class LocalTarget(Target):
    declaration = DECLARATION
    unsupported = {Capability.DRY_RUN: "on this machine nothing is rendered ahead; `llmnest show NAME --as command` "
                                       "prints what a deployment runs"}
    offers = frozenset({Capability.SCALE})

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
        from ...plan.architecture import model_from_dir

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
        state.update(spec.name, target_state=planned)
        try:
            if spec.gateway:
                write_secret(units_store.engine_key_path(spec.name), new_api_key())
            units.start_all(spec.name, ctx)
        except BaseException as exc:
            units.discard(spec.name, ctx, interrupted=isinstance(exc, KeyboardInterrupt))
            raise
        return Created(state.get(spec.name), key, time.monotonic() - t0)

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
        out["replicas"] = [units.replica_status(dep, u) for u in dep.replicas]
        out["ready_replicas"] = dep.ready_replicas
        if dep.spec.gateway:
            gw = units_store.find(units_store.gateway_id(dep.spec.port))
            out["gateway"] = local_gateway.describe(gw) if gw else {"port": dep.spec.port, "status": "missing"}
        return out

    def quick_status(self, dep: state.Deployment) -> dict[str, Any]:
        return self.status(dep)

    def kv_cache(self, dep: state.Deployment) -> tuple[int | None, int | None]:
        info = dep.target_state
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
        key = units_store.engine_key(dep.name)
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
        if dep.spec.runtime == "docker" and docker_cli.inspect(container, missing_ok=True):
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
        return local_show.render(dep, fmt)

    def restart(self, dep: state.Deployment, ctx: Context) -> None:
        rollout.restart(dep, ctx)

    def redeploy(self, dep: state.Deployment, new: DeploymentSpec, ctx: Context) -> str:
        return rollout.redeploy(dep, new, ctx)

    def scale(self, dep: state.Deployment, replicas: int, ctx: Context) -> str:
        return local_scale.scale(dep, replicas, ctx)

    def down(self, dep: state.Deployment, ctx: Context) -> str:
        units.stop_all(dep)
        state.delete(dep.name)
        gateway = dep.spec.gateway and local_gateway.release(dep.spec.port)
        return (f"stopped and removed {dep.name}{' and the gateway on port ' + str(dep.spec.port) if gateway else ''}"
                f" (log kept: {log_path(dep.name)})")
