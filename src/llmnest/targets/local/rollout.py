"""Changing what runs without losing the deployment: `restart` and `redeploy` on this machine.

Behind the gateway, where the machine has room, a surge replica of the new spec starts next to each old one
and takes over once the gateway routes to it; with several replicas and no room, the replicas are replaced
one at a time (drained out of the gateway's rotation first); else every engine is stopped and the new spec
started. A new spec that fails is rolled back: the old spec, its keys and its plan are put back and answer
before `redeploy` returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ... import state
from ...build import new_api_key
from ...catalog import find_model
from ...errors import LlmnestError
from ...home import gateway_log_path, write_secret
from ...spec import DeploymentSpec
from . import gateway as local_gateway, preflight, surge as local_surge, units, units_store
from ..base import Context


def restart(dep: state.Deployment, ctx: Context) -> None:
    """Every replica again; behind the gateway, a surge replica first where the machine has room, else with
    several replicas one at a time (it keeps answering), else stopped and started."""
    choice = local_surge.choose(dep.spec, dep.spec, find_model(dep.spec.model), len(dep.replicas))
    if dep.spec.gateway:
        ctx.say(choice.line)
    if choice.surge or (dep.spec.gateway and len(dep.replicas) > 1):
        for unit in dep.replicas:
            (_surge if choice.surge else _replace_unit)(dep, unit, ctx)
        return
    units.stop_all(dep)
    units.start_all(dep.name, ctx)


def _replace_unit(dep: state.Deployment, unit: units_store.Unit, ctx: Context) -> None:
    """Out of the gateway's rotation first (on its word), then stopped once what it was answering is done,
    then started and waited for."""
    ctx.say(f"replacing replica {unit.index} of {dep.name}")
    unit = units_store.get(unit.id)  # its supervisor now, which an earlier attempt may have replaced
    _drain(dep, unit, ctx)
    units.stop_unit(dep, unit)
    units.start_unit(unit)
    units.wait_ready(dep.name, ctx, only=unit)


def _drain(dep: state.Deployment, unit: units_store.Unit, ctx: Context) -> None:
    units_store.update(unit.id, status="draining")
    local_surge.drain(dep.spec, unit, lambda line: ctx.on_phase("draining", line))


def _surge(dep: state.Deployment, unit: units_store.Unit, ctx: Context) -> None:
    """A replica of the deployment's spec (as stored now) in the free slot, waited for until the gateway
    routes to it, then `unit` drained and stopped. A surge replica that fails is stopped and forgotten,
    `unit` untouched."""
    index = local_surge.free_index(state.get(dep.name).replicas, dep.spec.replicas)
    ctx.say(f"starting replica {index} of {dep.name} next to replica {unit.index}")
    fresh = units_store.put(units_store.Unit(units_store.replica_id(dep.name, index), "engine", dep.name, index,
                                             "127.0.0.1", local_gateway.free_port()))
    try:
        units.start_unit(fresh)
        units.wait_ready(dep.name, ctx, only=fresh)
        if not local_surge.wait_rotation(state.get(dep.name).spec, fresh.id, True,
                                         lambda line: ctx.on_phase("starting gateway", line)):
            raise LlmnestError(f"the gateway on port {dep.spec.port} did not route to replica {index} in time; "
                               f"see {gateway_log_path(dep.spec.port)}")
    except BaseException:
        units.stop_unit(dep, units_store.get(fresh.id), units.INTERRUPT_GRACE)
        units_store.delete(fresh.id)
        raise
    _drain(dep, units_store.get(unit.id), ctx)
    units.stop_unit(dep, units_store.get(unit.id))
    units_store.delete(unit.id)


def redeploy(dep: state.Deployment, new: DeploymentSpec, ctx: Context) -> str:
    """The new spec. Behind the gateway, where the machine has room, one surge replica at a time next to the
    old ones (a failure leaves them serving, the spec unchanged); with several replicas and no room,
    replaced one at a time; else stopped and started. Without a surge, a failure puts the old spec back."""
    model = find_model(new.model)
    preflight.check_can_start(new, ctx, replacing=dep.spec)
    planned = preflight.check_plan(new, model, ctx.force, ctx)
    old = dep.spec
    choice = local_surge.choose(old, new, model, len(dep.replicas))
    ctx.say(choice.line)
    rolling = old.gateway and new.replicas == old.replicas > 1 and (old.host, old.port, old.gateway) == (
        new.host, new.port, new.gateway)
    if choice.surge or rolling:
        state.update(dep.name, spec=new, info={**planned, "kv_cache_tokens_actual": None})
        for done, unit in enumerate(dep.replicas):
            try:
                (_surge if choice.surge else _replace_unit)(dep, unit, ctx)
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
                    (_surge if choice.surge else _replace_unit)(state.get(dep.name), replica, ctx)
                raise
        return choice.line
    saved = _key_files(dep.name)
    try:
        _switch(dep, new, planned, ctx)
    except LlmnestError as exc:
        _put_back(dep, new, saved, ctx)
        raise LlmnestError(f"the new spec failed: {exc.message}; {dep.name} is back on its previous spec "
                           "and answers", detail=exc.detail) from exc
    return choice.line


def _key_files(name: str) -> dict[Path, str | None]:
    """The deployment's key files as they are (None: absent), to put back after a failed redeploy."""
    paths = (state.key_path(name), units_store.engine_key_path(name))
    return {p: p.read_text() if p.is_file() else None for p in paths}


def _switch(dep: state.Deployment, new: DeploymentSpec, planned: dict[str, Any], ctx: Context) -> None:
    """Every engine of the old spec stopped, then the new spec started and waited for."""
    old = dep.spec
    joining = new.gateway and not old.gateway
    key = local_gateway.joining_key(state.api_key(dep.name), dep.name, new.served_model_name) if joining else None
    units.stop_all(dep)
    units_store.delete_replicas(dep.name)
    state.update(dep.name, spec=new, info={**planned, "kv_cache_tokens_actual": None})
    if old.gateway and not new.gateway:
        units_store.engine_key_path(dep.name).unlink(missing_ok=True)
    if key is not None:
        write_secret(state.key_path(dep.name), key)
        write_secret(units_store.engine_key_path(dep.name), new_api_key())
    if old.gateway and ((old.port, old.host) != (new.port, new.host) or not new.gateway):
        local_gateway.release(old.port, leaving=dep.name)
    units.start_all(dep.name, ctx)


def _put_back(dep: state.Deployment, new: DeploymentSpec, keys: dict[Path, str | None], ctx: Context) -> None:
    """After a new spec failed to answer: its engines stopped, the old spec, keys and plan back, started
    and waited for (so the deployment answers again before redeploy returns)."""
    ctx.say(f"the new spec of {dep.name} failed; putting the previous spec back")
    ctx.on_phase("putting the previous spec back", "")
    units.stop_all(state.get(dep.name), units.INTERRUPT_GRACE)
    units_store.delete_replicas(dep.name)
    for path, text in keys.items():
        if text is None:
            path.unlink(missing_ok=True)
        else:
            write_secret(path, text)
    state.update(dep.name, spec=dep.spec, info=dep.info.model_dump(exclude={"kind"}))
    if new.gateway and ((new.port, new.host) != (dep.spec.port, dep.spec.host) or not dep.spec.gateway):
        local_gateway.release(new.port, leaving=dep.name)
    units.start_all(dep.name, ctx)
