"""Alibaba Cloud: a ROS stack with a GPU instance (or two) that runs the engine in docker.

The cloud's own orchestration (plan, preflight, stack, Cloud Assistant) is in targets/aliyun/service.py;
this adapter gives it the lifecycle's verbs and options.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import yaml
from pydantic import ValidationError

from ... import state
from ...build import UpRequest, build_spec
from ...catalog import demo_model, get_model
from ...errors import BadInput
from ...examples import Endpoint
from ...gateway.remote_admin import GatewayChannel
from ...spec import AliyunPlacement, DeploymentSpec
from ..base import Capability, Context, Created, Resolved, Target

# placement field -> the `llmnest up` flag that sets it
OPTIONS = {"region": "--region", "zone": "--zone", "instance_type": "--instance-type", "nodes": "--nodes",
           "public": "--public", "bandwidth_mbps": "--bandwidth", "allow_cidr": "--allow-cidr", "vpc_id": "--vpc-id",
           "vswitch_id": "--vswitch-id", "pay": "--pay", "period_months": "--period", "key_pair": "--key-pair",
           "image_id": "--image-id", "llmnest_package": "--llmnest-package", "password": "--password-stdin", "validate": "--validate"}


def _service():  # noqa: ANN202 - the module, imported late: it needs the Alibaba Cloud SDKs
    from . import service

    return service


class AliyunTarget(Target):
    name = "aliyun"
    place = "Alibaba Cloud"
    options = OPTIONS
    unsupported = {
        Capability.FOLLOW_LOGS: "{name}'s log is fetched through Cloud Assistant; "
                                "run `llmnest logs {name} --tail N` again for newer lines",
        Capability.FORCE_PLAN: "on the cloud the instance type must fit the model (pick one with --instance-type)",
    }
    show_formats = ("command", "script", "ros")

    def resolve(self, req: UpRequest) -> Resolved:
        if req.weights:
            raise BadInput("--weights is for this machine: a cloud instance downloads the weights itself")
        opts = {k: v for k, v in req.options.items() if k in OPTIONS and k not in {"password", "validate"}}
        if not opts.get("region"):
            raise BadInput("--target aliyun needs --region (for example --region cn-hangzhou)")
        try:
            placement = AliyunPlacement(**opts)
        except ValidationError as exc:
            first = exc.errors()[0]
            flag = OPTIONS.get(str(first["loc"][0]), str(first["loc"][0]))
            raise BadInput(f"invalid {flag}: {first['msg']}") from None
        model = get_model(req.model) if req.model else demo_model()
        spec, key = build_spec(req, model, None, aliyun=placement)
        return Resolved(spec, key, model)

    def render(self, resolved: Resolved, ctx: Context) -> dict[str, Any]:
        return _service().deploy(resolved.spec, resolved.api_key, ctx.password, yes=True, dry_run=True,
                                 say=ctx.say, confirm=ctx.confirm, validate=ctx.validate)

    def create(self, resolved: Resolved, ctx: Context) -> Created:
        t0 = time.monotonic()
        result = _service().deploy(resolved.spec, resolved.api_key, ctx.password, yes=ctx.yes, dry_run=False,
                                   say=ctx.say, confirm=ctx.confirm, validate=ctx.validate)
        extra = {k: result[k] for k in ("stack_id", "region", "zone", "instance_type", "nodes", "price")}
        return Created(state.get(result["name"]), result["api_key"], time.monotonic() - t0, extra)

    def where(self, dep: state.Deployment) -> str:
        place, info = dep.spec.aliyun, dep.info
        assert place is not None and isinstance(info, state.AliyunState)
        return f"{place.nodes} x {place.instance_type or 'ECS'}, {info.region}/{info.zone}"

    def status(self, dep: state.Deployment) -> dict[str, Any]:
        cloud = _service().status(dep)  # also records the stack's status
        return {"status": cloud["status"], "cloud": cloud}

    def endpoints(self, dep: state.Deployment, api_key: str | None) -> list[Endpoint]:
        info = dep.info
        assert isinstance(info, state.AliyunState)
        return [Endpoint(e.base_url, api_key, dep.spec.served_model_name, e.label) for e in info.endpoints]

    def logs(self, dep: state.Deployment, tail: int, follow: bool, replica: int = 0) -> Iterator[str]:
        if replica:
            raise BadInput(f"{dep.name} runs one engine on its instance: leave --replica out")
        yield from _service().logs(dep, tail)

    def gateway_logs(self, dep: state.Deployment, tail: int, follow: bool) -> Iterator[str]:
        if not dep.spec.api_key_enabled:
            raise BadInput(f"{dep.name} has no API key, so no gateway runs in front of its engine; leave --gateway out")
        yield from _service().gateway_logs(dep, tail)

    def gateway_channel(self, dep: state.Deployment) -> GatewayChannel:
        if not dep.spec.api_key_enabled:
            raise BadInput(f"{dep.name} has no API key, so no gateway runs in front of its engine: it has no keys "
                           "or usage to manage")
        from .channel import CloudAssistantChannel

        return CloudAssistantChannel(dep)

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

