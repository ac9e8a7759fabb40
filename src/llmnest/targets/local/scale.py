"""`llmnest scale NAME N` on this machine: engine replicas added or removed behind the gateway while the
running ones serve untouched.

Up: only where the machine holds the new total (`surge.scale_room`), the new replicas start in the free slots
and are waited for until each answers and the gateway routes to it; one that fails (or Ctrl-C) stops and
forgets them all, and the deployment keeps serving on its old count, its spec unchanged. Down: the
highest-index replicas are drained out of the gateway's rotation, stopped and forgotten. The spec records
the new count only once that many replicas serve.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ... import state
from ...catalog import find_model
from ...errors import BadInput, Conflict, LlmnestError
from ...home import gateway_log_path
from ...spec import DeploymentSpec, validated
from . import gateway as local_gateway, preflight, surge as local_surge, units, units_store
from ..base import Context


def replicas_limit() -> int:
    """The most replicas a spec takes (its `replicas` field's bound)."""
    return next(m.le for m in DeploymentSpec.model_fields["replicas"].metadata if getattr(m, "le", None))


def scale(dep: state.Deployment, replicas: int, ctx: Context) -> str:
    """`dep`'s engine replicas to `replicas` (1 or more, checked by the lifecycle); one line saying what changed."""
    now, spec = len(dep.replicas), dep.spec
    if replicas > replicas_limit():
        raise BadInput(f"{dep.name} can have at most {replicas_limit()} replicas, not {replicas}")
    if replicas == now:
        runs = f"{dep.name} already runs {replicas} replica{'s' if replicas > 1 else ''}"
        if spec.replicas == replicas:
            return f"{runs}: nothing changed"
        state.update(dep.name, spec=spec.model_copy(update={"replicas": replicas}))  # a scale cut short earlier
        return f"{runs}; its spec says so now (it said {spec.replicas})"
    if not spec.gateway:
        how = "--set gateway=true" if spec.api_key_enabled else "--set api_key_enabled=true --set gateway=true"
        raise Conflict(f"{dep.name} is served straight from one engine (--no-gateway or --no-api-key): replicas need "
                       f"the gateway in front; `llmnest redeploy {dep.name} {how}` puts it there, then scale")
    scaled = validated({**spec.model_dump(), "replicas": replicas})
    if replicas > now:
        return _grow(dep, scaled, ctx)
    return _shrink(dep, scaled, ctx)


def _grow(dep: state.Deployment, scaled: DeploymentSpec, ctx: Context) -> str:
    """New replicas in the free slots, each waited for until it answers and the gateway routes to it; on a
    failure or Ctrl-C, all of them stopped and forgotten (the running ones never touched)."""
    now, name = len(dep.replicas), dep.name
    room = local_surge.scale_room(dep.spec, find_model(dep.spec.model), now, scaled.replicas)
    if not room.fits:
        fewer = (f"`llmnest scale {name} {room.most}` fits" if room.most > now
                 else "free memory, cores or GPUs (stop another deployment)")
        raise Conflict(f"no room for {scaled.replicas - now} more replica(s) of {name}: {room.reason}; {fewer}")
    preflight.check_can_start(scaled, ctx, replacing=dep.spec)
    held = {u.index for u in dep.replicas}
    slots = [i for i in range(scaled.replicas + now) if i not in held][: scaled.replicas - now]
    ctx.say(f"starting replica{'s' if len(slots) > 1 else ''} {', '.join(map(str, slots))} of {name} next to "
            f"{now} serving ({room.reason})")
    fresh = [units_store.put(units_store.Unit(units_store.replica_id(name, i), "engine", name, i, "127.0.0.1",
                                              local_gateway.free_port())) for i in slots]
    state.update(name, target_state={"scaling_to": scaled.replicas})
    try:
        local_gateway.ensure(dep.spec.host, dep.spec.port)
        for unit in fresh:
            units.start_unit(unit)
        for unit in fresh:
            units.wait_ready(name, ctx, only=unit)
            if not local_surge.wait_rotation(dep.spec, unit.id, True,
                                             lambda line: ctx.on_phase("starting gateway", line)):
                raise LlmnestError(f"the gateway on port {dep.spec.port} did not route to replica {unit.index} in time;"
                                   f" see {gateway_log_path(dep.spec.port)}")
    except BaseException as exc:
        _undo(name, fresh, ctx, interrupted=isinstance(exc, KeyboardInterrupt))
        if isinstance(exc, LlmnestError):
            raise LlmnestError(f"{exc.message}; the new replicas were stopped and {name} kept serving on its {now} "
                               f"replica{'s' if now > 1 else ''} throughout", detail=exc.detail) from exc
        raise
    finally:
        state.update(name, target_state={"scaling_to": None})
    state.update(name, spec=scaled)
    started = ", ".join(map(str, slots))
    return f"{name}: {now} -> {scaled.replicas} replicas (started {started}; the gateway routes to them)"


def _undo(name: str, fresh: list[units_store.Unit], ctx: Context, interrupted: bool) -> None:
    """The new replicas stopped and forgotten; those that answered drained out of the gateway's rotation first
    (not after Ctrl-C: that stops them at once)."""
    dep = state.get(name)
    ids = {u.id for u in fresh}
    started = [u for u in dep.replicas if u.id in ids]
    if interrupted:
        ctx.say(f"interrupted: stopping the new replicas of {name}; the others serve as before")
    else:
        _drain(dep.spec, [u for u in started if u.status == "ready"], ctx)
    _stop(dep, started, units.INTERRUPT_GRACE)


def _shrink(dep: state.Deployment, scaled: DeploymentSpec, ctx: Context) -> str:
    """The highest-index replicas out of the gateway's rotation (on its word) and idle, then stopped and
    forgotten; Ctrl-C while they drain puts them back in rotation."""
    leaving = sorted(dep.replicas, key=lambda u: u.index)[scaled.replicas:]
    ctx.say(f"draining replica{'s' if len(leaving) > 1 else ''} {', '.join(str(u.index) for u in leaving)} of "
            f"{dep.name} out of the gateway's rotation")
    try:
        _drain(dep.spec, leaving, ctx)
    except BaseException:
        for unit in leaving:  # what it was before (its supervisor writes the status it moves on to)
            units_store.update(unit.id, status=unit.status)
        raise
    _stop(dep, leaving)
    state.update(dep.name, spec=scaled)
    return (f"{dep.name}: {len(dep.replicas)} -> {scaled.replicas} replica{'s' if scaled.replicas > 1 else ''} "
            f"(drained and stopped {', '.join(str(u.index) for u in leaving)})")


def _drain(spec: DeploymentSpec, leaving: list[units_store.Unit], ctx: Context) -> None:
    """`leaving` out of the gateway's rotation together (marked draining), then each until it is idle."""
    for unit in leaving:
        units_store.update(unit.id, status="draining")
    for unit in leaving:
        local_surge.drain(spec, unit, lambda line: ctx.on_phase("draining", line))


def _stop(dep: state.Deployment, leaving: list[units_store.Unit], grace: float = 30) -> None:
    """Stop `leaving` at the same time and forget each as it is gone."""
    def stop(unit: units_store.Unit) -> None:
        units.stop_unit(dep, unit, grace)
        units_store.delete(unit.id)

    with ThreadPoolExecutor() as pool:
        for done in [pool.submit(stop, u) for u in leaving]:
            done.result()
