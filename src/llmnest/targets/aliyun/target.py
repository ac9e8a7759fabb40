"""Alibaba Cloud: a ROS stack with a GPU instance (or two) that runs the engine in docker.

The cloud's own orchestration (plan, preflight, stack, Cloud Assistant) is in targets/aliyun/service.py;
this adapter gives it the lifecycle's verbs and options.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import yaml
from pydantic import ValidationError

from ... import state
from ...build import UpRequest, build_spec
from ...catalog import CatalogModel, demo_model, get_model
from ...errors import BadInput
from ...examples import Endpoint
from ...plan import Plan
from ...spec import DeploymentSpec
from ..base import Capability, Context, Created, Resolved, Target
from . import DECLARATION
from .options import SETTINGS
from .placement import AliyunPlacement, placement_of
from .records import AliyunState


def _service():  # noqa: ANN202 - the module, imported late: it needs the Alibaba Cloud SDKs
    from . import service

    return service


class AliyunTarget(Target):
    declaration = DECLARATION
    unsupported = {
        Capability.FOLLOW_LOGS: "{name}'s log is fetched through Cloud Assistant; "
                                "run `llmnest logs {name} --tail N` again for newer lines",
        Capability.FORCE_PLAN: "on the cloud the instance type must fit the model (pick one with --instance-type)",
    }

    def resolve(self, req: UpRequest) -> Resolved:
        if req.weights:
            raise BadInput("--weights is for this machine: a cloud instance downloads the weights itself")
        opts = {k: v for k, v in req.options.items() if DECLARATION.option(k) and k not in SETTINGS}
        if not opts.get("region"):
            raise BadInput("--target aliyun needs --region (for example --region cn-hangzhou)")
        try:
            placement = AliyunPlacement(**opts)
        except ValidationError as exc:
            first = exc.errors()[0]
            option = DECLARATION.option(str(first["loc"][0]))
            raise BadInput(f"invalid {option.flag if option else first['loc'][0]}: {first['msg']}") from None
        model = get_model(req.model) if req.model else demo_model()
        spec, key = build_spec(req, model, None, placement=placement)
        return Resolved(spec, key, model, {k: v for k, v in req.options.items() if k in SETTINGS})

    def plan(self, resolved: Resolved, ctx: Context) -> dict[str, Any]:
        from .picker import rank_instances

        spec, model = resolved.spec, resolved.model
        fits = [{**f.to_dict(), "price_label": f.instance.price.label()}
                for f in rank_instances(model, spec.max_model_len)] if model else []
        dry = self.render(resolved, Context(dry_run=True))
        return {"kind": "instances", "spec": spec.name, "instances": fits, "preflight": dry.get("preflight", []),
                "template": yaml.safe_dump(dry.get("template"), sort_keys=False),
                "parameters": dry.get("parameters", {}), "bootstrap": dry.get("bootstrap_script", "")}

    def render(self, resolved: Resolved, ctx: Context) -> dict[str, Any]:
        return _service().deploy(resolved.spec, resolved.api_key, resolved.settings.get("password"), yes=True,
                                 dry_run=True, say=ctx.say, confirm=ctx.confirm,
                                 validate=bool(resolved.settings.get("validate")))

    def dry_run_text(self, result: dict[str, Any]) -> str:
        """The template (YAML, as the ROS console shows it), the parameters (secrets masked) and each preflight
        check."""
        marks = {True: "ok  ", False: "FAIL", None: "skip"}
        checks = [f"  [{marks[c['ok']]}] {c['check']:<12} {c['detail']}" for c in result["preflight"]]
        params = [f"  {k} = {v}" for k, v in result["parameters"].items()]
        return "\n".join([
            "# ROS template", yaml.safe_dump(result["template"], sort_keys=False).rstrip(), "",
            "# Parameters", *params, "",
            "# Preflight", *checks, "",
            "Nothing was created. Add --json for all of this and the bootstrap script as one JSON object.",
        ])

    def create(self, resolved: Resolved, ctx: Context) -> Created:
        t0 = time.monotonic()
        result = _service().deploy(resolved.spec, resolved.api_key, resolved.settings.get("password"), yes=ctx.yes,
                                   dry_run=False, say=ctx.say, confirm=ctx.confirm,
                                   validate=bool(resolved.settings.get("validate")))
        extra = {k: result[k] for k in ("stack_id", "region", "zone", "instance_type", "nodes", "price")}
        return Created(state.get(result["name"]), result["api_key"], time.monotonic() - t0, extra)

    def price_per_hour(self, dep: state.Deployment) -> float | None:
        info = dep.info
        assert isinstance(info, AliyunState)
        return info.price_per_hour

    def instance_fits(self, model: CatalogModel, max_model_len: int | None = None, *, fitting_only: bool = True,
                      **settings: Any) -> list[Any]:
        from .picker import evaluate_instances, rank_instances

        return (rank_instances if fitting_only else evaluate_instances)(model, max_model_len, **settings)

    def instance_plan(self, model: CatalogModel, instance_type: str, max_model_len: int | None = None,
                      **settings: Any) -> tuple[Any, Plan]:
        from .catalog import instance
        from .picker import plan_instance

        itype = instance(instance_type)
        return itype, plan_instance(model, itype, max_model_len, **settings)

    def instance_hint(self, model: CatalogModel, max_model_len: int, engine: Any) -> str | None:
        from .picker import cheapest_fit
        from ...plan.memory import DEPLOYED_VLLM

        fit = cheapest_fit(model, max_model_len, engine=replace(engine, vllm_version=DEPLOYED_VLLM))
        if fit is None:
            return None
        return (f"on {self.place}: --target {self.name} --instance-type {fit.instance.name} "
                f"({fit.instance.gpus} x {fit.instance.gpu.key})")

    def where(self, dep: state.Deployment) -> str:
        place, info = placement_of(dep.spec), dep.info
        assert isinstance(info, AliyunState)
        return f"{place.nodes} x {place.instance_type or 'ECS'}, {info.region}/{info.zone}"

    def status(self, dep: state.Deployment) -> dict[str, Any]:
        cloud = _service().status(dep)  # also records the stack's status
        return {"status": cloud["status"], "cloud": cloud}

    def endpoints(self, dep: state.Deployment, api_key: str | None) -> list[Endpoint]:
        info = dep.info
        assert isinstance(info, AliyunState)
        return [Endpoint(e.base_url, api_key, dep.spec.served_model_name, e.label) for e in info.endpoints]

    def logs(self, dep: state.Deployment, tail: int, follow: bool, replica: int = 0) -> Iterator[str]:
        if replica:
            raise BadInput(f"{dep.name} runs one engine on its instance: leave --replica out")
        yield from _service().logs(dep, tail)

    def gateway_logs(self, dep: state.Deployment, tail: int, follow: bool) -> Iterator[str]:
        if not dep.spec.api_key_enabled:
            raise BadInput(f"{dep.name} has no API key, so no gateway runs in front of its engine; leave --gateway out")
        yield from _service().gateway_logs(dep, tail)

    def show(self, dep: state.Deployment, fmt: str) -> str:
        if fmt == "ros":
            return yaml.safe_dump(_service().render_template(dep.spec), sort_keys=False).rstrip()
        return _service().render_bootstrap(dep.spec)

    def restart(self, dep: state.Deployment, ctx: Context) -> None:
        _service().redeploy(dep, dep.spec, ctx.say)  # the bootstrap again, same spec: a fresh engine container

    def redeploy(self, dep: state.Deployment, new: DeploymentSpec, ctx: Context) -> None:
        _service().redeploy(dep, new, ctx.say)

    def down(self, dep: state.Deployment, ctx: Context) -> str:
        _service().down(dep, ctx.say, lambda q: ctx.yes or ctx.confirm(q))
        return f"deleted the stack of {dep.name} and forgot it"

