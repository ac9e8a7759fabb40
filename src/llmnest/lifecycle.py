"""The deployment lifecycle the CLI (and the console) call: up, ls, status, logs, show, restart, redeploy, scale,
down.

Target-independent: each verb finds the deployment's target (targets.get), checks what it asks of
it against the target's declared capabilities before any side effect, and calls the target's verb.
Returns plain data; never prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import yaml

from . import state, targets
from .spec_builder import UpRequest
from .catalog import find_model
from .errors import BadInput, NotFound
from .endpoints import Endpoint
from .examples import as_dict
from .gateway.admin import GatewayAdmin, LocalAdmin
from .gateway.remote_admin import RemoteAdmin
from .spec import apply_sets
from .targets import Capability, Context, Created, Target, registry


def _require(target: Target, capability: Capability, name: str | None = None) -> None:
    if reason := target.refusal(capability, name or "NAME"):
        where = f"to {name}, which runs on {target.place}" if name else f"with --target {target.name}"
        raise BadInput(f"{capability.value} does not apply {where}: {reason}")


def _check_options(req: UpRequest, target: Target) -> None:
    """Options of another target are refused, naming the target they belong to."""
    foreign = [k for k in req.options if target.declaration.option(k) is None]
    if not foreign:
        return
    flags = {o.field: o.flag for d in registry.declarations() for o in d.options}
    owners = [d.name for d in registry.declarations() if d.option(foreign[0]) is not None]
    listed = ", ".join(flags[k] for k in foreign)
    one = len(foreign) == 1
    raise BadInput(f"{listed} {'is' if one else 'are'} for --target {registry.choices(owners)}: "
                   f"add --target {owners[0]}, or drop {'it' if one else 'them'} to deploy on {target.place}")


def _elsewhere(here: Target) -> Callable[..., str | None]:
    """What the other targets suggest for a model that does not fit `here` (the first that has an answer)."""
    def suggest(model: Any, max_model_len: int, engine: Any) -> str | None:
        hints = (targets.get(n).instance_hint(model, max_model_len, engine) for n in targets.names() if n != here.name)
        return next((h for h in hints if h), None)
    return suggest


def _resolved(req: UpRequest, ctx: Context) -> tuple[Target, targets.Resolved, Context]:
    target = targets.get(req.target)
    _check_options(req, target)
    if ctx.dry_run:
        _require(target, Capability.DRY_RUN)
    if ctx.force:
        _require(target, Capability.FORCE_PLAN)
    return target, target.resolve(req), replace(ctx, elsewhere=_elsewhere(target))


def plan(req: UpRequest) -> dict[str, Any]:
    """What `up` would make of the request, before anything starts: the target's plan (on this machine the
    memory plan; on a cloud the instance types that fit, their price and the dry-run)."""
    target, resolved, ctx = _resolved(req, Context())
    return target.plan(resolved, ctx)


def check(req: UpRequest, ctx: Context) -> targets.Resolved:
    """The request resolved after every check `up` makes before it starts anything; the first refusal raises."""
    target, resolved, ctx = _resolved(req, ctx)
    target.check(resolved, ctx)
    return resolved


def dry_run(req: UpRequest, ctx: Context) -> dict[str, Any]:
    """What `up` would create, rendered and checked; nothing is created."""
    target, resolved, ctx = _resolved(req, ctx)
    return target.render(resolved, ctx)


def dry_run_text(req: UpRequest, result: dict[str, Any]) -> str:
    """A dry-run's result for a person, as its target shows it."""
    return targets.get(req.target).dry_run_text(result)


def up(req: UpRequest, ctx: Context) -> Created:
    """Deploy and wait until the model answers a real chat request."""
    target, resolved, ctx = _resolved(req, ctx)
    return target.create(resolved, ctx)


def _deployment(name: str | None) -> tuple[state.Deployment, Target]:
    dep = state.get(state.resolve_name(name))
    return dep, targets.get(dep.spec.target)


def endpoints(dep: state.Deployment, api_key: str | None) -> list[Endpoint]:
    return targets.get(dep.spec.target).endpoints(dep, api_key)


def price_per_hour(dep: state.Deployment) -> float | None:
    """The hourly price the target knows (a cloud's), else None."""
    return targets.get(dep.spec.target).price_per_hour(dep)


def _uptime(dep: state.Deployment) -> float | None:
    return round(time.time() - dep.ready_at, 1) if dep.status == "ready" and dep.ready_at else None


def kv_cache_comparison(planned: int | None, actual: int | None) -> dict[str, Any]:
    """Planned against the KV cache size the engine logged, with the planner's error in percent."""
    error = round(100 * (planned - actual) / actual, 2) if planned and actual else None
    return {"kv_cache_tokens_planned": planned, "kv_cache_tokens_actual": actual, "kv_cache_plan_error_pct": error}


def summary(dep: state.Deployment, api_key: str | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What `up --json` prints: name, base_url, api_key, model, served name, engine, status, endpoints, log."""
    target = targets.get(dep.spec.target)
    eps = target.endpoints(dep, api_key)
    return {
        "name": dep.name,
        "base_url": eps[0].base_url if eps else None,
        "api_key": api_key,
        "model": dep.spec.model,
        "served_model_name": dep.spec.served_model_name,
        "engine": dep.spec.engine,
        "runtime": dep.spec.runtime,
        "target": dep.spec.target,
        "status": dep.status,
        "where": target.where(dep),
        "gateway": dep.spec.gateway,
        "api_key_name": target.key_name(dep, api_key),
        "api_key_enabled": dep.spec.api_key_enabled,
        "replicas": dep.spec.replicas,
        "endpoints": [as_dict(e) for e in eps],
        "log": target.log_file(dep),
        "follow_logs": target.refusal(Capability.FOLLOW_LOGS) is None,
        **(extra or {}),
    }


def _row(dep: state.Deployment, live: dict[str, Any]) -> dict[str, Any]:
    target = targets.get(dep.spec.target)
    eps = target.endpoints(dep, None)
    return {
        "name": dep.name,
        "model": dep.spec.served_model_name,
        "engine": dep.spec.engine,
        "where": target.short_where(dep),
        "status": live.get("status", dep.status),
        "base_url": eps[0].base_url if eps else "-",
        "uptime_s": _uptime(dep),
        "restarts": dep.restarts,
    }


def rows() -> list[dict[str, Any]]:
    """`ls`: one row per deployment, with what each target knows without a network call."""
    return [_row(dep, targets.get(dep.spec.target).quick_status(dep)) for dep in state.all_deployments()]


def status(name: str | None) -> dict[str, Any]:
    """`status`: the record, what the target reports now, the KV cache planned vs logged."""
    dep, target = _deployment(name)
    live = target.status(dep)
    dep = state.get(dep.name)  # the target may have recorded what it saw
    return {
        **_row(dep, live),
        "runtime": dep.spec.runtime,
        "created_at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(dep.created_at)),
        "last_error": dep.last_error,
        "max_model_len": dep.spec.max_model_len,
        **kv_cache_comparison(*target.kv_cache(dep)),
        **{k: v for k, v in live.items() if k != "status"},
        "log": target.log_file(dep),
    }


def logs(name: str | None, tail: int, follow: bool, replica: int = 0, gateway: bool = False) -> Iterator[str]:
    """An engine replica's log, or the log of the gateway in front of the deployment."""
    dep, target = _deployment(name)
    if follow:
        _require(target, Capability.FOLLOW_LOGS, dep.name)
    if gateway:
        _require(target, Capability.GATEWAY_LOGS, dep.name)
        return target.gateway_logs(dep, tail, follow)
    return target.logs(dep, tail, follow, replica)


def gateway_admin(name: str) -> GatewayAdmin:
    """Keys and usage of the gateway in front of deployment `name`: this machine's, or through its target's
    channel the one next to it."""
    dep, target = _deployment(name)
    channel = target.gateway_channel(dep)
    return LocalAdmin() if channel is None else RemoteAdmin(channel, dep.name)


def show(name: str | None, fmt: str) -> str:
    """`show --as FMT`: the effective spec (YAML), or what the target runs (command, script, template)."""
    formats = list(dict.fromkeys(["spec", *(f for d in registry.declarations() for f in d.show_formats)]))
    if fmt not in formats:
        raise BadInput(f"unknown --as {fmt!r}: use one of {', '.join(formats)}")
    if fmt != "spec" and name and name not in state.names() and find_model(name):
        ahead = [d for d in registry.declarations() if fmt in d.dry_run_shows]
        if ahead:
            flags = " ".join(["--target", ahead[0].name, *(f"{o.flag} {o.field.upper()}" for o in ahead[0].options
                                                           if o.required)])
            raise NotFound(f"no deployment named {name!r} yet: `llmnest up {name} {flags} --dry-run` prints what "
                           f"it would create ({ahead[0].dry_run}), creating nothing")
    dep, target = _deployment(name)
    if fmt == "spec":
        data = dep.spec.model_dump(mode="json")
        data["api_key"] = f"set (in {state.key_path(dep.name)})" if state.api_key(dep.name) else None
        return yaml.safe_dump(data, sort_keys=False).rstrip()
    if fmt not in target.show_formats:
        others = [d.name for d in registry.declarations() if fmt in d.show_formats]
        raise BadInput(f"{dep.name} runs on {target.name}: --as {fmt} exists for --target {' or '.join(others)} "
                       f"deployments; use one of spec, {', '.join(target.show_formats)}")
    return target.show(dep, fmt)


def restart(name: str | None, ctx: Context) -> state.Deployment:
    """Stop and start the same spec, waiting until it answers again."""
    dep, target = _deployment(name)
    target.restart(dep, ctx)
    return state.get(dep.name)


def redeploy(name: str | None, sets: dict[str, str], ctx: Context) -> Created:
    """The same deployment (model, name, key, place) with new parameters; validated before anything stops."""
    if not sets:
        raise BadInput("nothing to change: pass --set KEY=VALUE (for example --set max_model_len=2048)")
    dep, target = _deployment(name)
    if ctx.force:
        _require(target, Capability.FORCE_PLAN, dep.name)
    t0 = time.monotonic()
    how = target.redeploy(dep, apply_sets(dep.spec, sets), replace(ctx, elsewhere=_elsewhere(target)))
    return Created(state.get(dep.name), state.api_key(dep.name), time.monotonic() - t0,
                   {"replaced": how} if how else {})


def scale(name: str | None, replicas: int, ctx: Context) -> str:
    """The deployment's engine replicas changed in place, where its target can; one line saying what changed."""
    dep, target = _deployment(name)
    _require(target, Capability.SCALE, dep.name)
    if replicas < 1:
        raise BadInput(f"{dep.name} needs at least 1 replica, not {replicas}: `llmnest down {dep.name}` removes it")
    return target.scale(dep, replicas, ctx)


def down(name: str | None, ctx: Context) -> str:
    """Remove what the deployment created and forget it; one line saying what went."""
    dep, target = _deployment(name)
    if ctx.delete_weights:
        _require(target, Capability.DELETE_WEIGHTS, dep.name)
    return target.down(dep, ctx)
