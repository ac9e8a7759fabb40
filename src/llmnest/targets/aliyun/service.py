"""The Alibaba Cloud lifecycle the CLI calls: deploy, status, logs, redeploy, down.

Orchestration only: the template and script come from the pure renderers, API calls from
client.Cloud, the record from llmnest.state. Progress goes through `say`; nothing is printed here.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from ... import state
from ...build import new_api_key
from ...errors import BadInput, Conflict, LlmnestError, NotFound
from ...probe import chat_once
from ...spec import DeploymentSpec
from .records import AliyunState
from . import bootstrap, preflight
from .budget import role_timeout_s, stack_minutes
from .client import DENIED, Cloud, policy_for_resource
from .sizing import resolve
from .template import (API_KEY_PATTERN, HEAD_GROUP, PASSWORD_PATTERN, WORKER_GROUP, masked, node_groups,
                       render_template, stack_parameters)

__all__ = ["deploy", "down", "gateway_logs", "logs", "redeploy", "render_bootstrap", "render_template", "status"]

Say = Callable[[str], None]
Confirm = Callable[[str], bool]
POLL_ENV = "LLMNEST_ALIYUN_POLL_SECONDS"
log = logging.getLogger(__name__)
SKIP = re.compile(r"IN_PROGRESS$")
STILL_WAITING_S = 300
LOCKED_PLACEMENT = ("region", "zone", "instance_type", "nodes", "public", "vpc_id", "vswitch_id", "pay")
# DescribeInvocationResults' InvocationStatus values before an instance's run has ended; every other
# value (Success, Failed, Error, Timeout, Cancelled, Terminated, Invalid, Aborted, ...) is an end.
NOT_ENDED = frozenset({"Pending", "Scheduled", "Running", "Stopping"})
REBOOT_EXIT = 194  # the bootstrap asks Cloud Assistant to reboot the instance (the driver loads after it)


def _poll_seconds() -> float:
    return float(os.environ.get(POLL_ENV, "10"))


def stack_name(spec: DeploymentSpec) -> str:
    return f"llmnest-{spec.name}"


def render_bootstrap(spec: DeploymentSpec) -> str:
    """For `llmnest show NAME --as script`."""
    return bootstrap.render_bootstrap(spec)


def _check_secrets(api_key: str | None, password: str | None) -> None:
    if api_key and not re.fullmatch(API_KEY_PATTERN, api_key):
        raise BadInput("a cloud API key may use 8-128 letters, digits and . _ ~ + / = - only")
    if password is None:
        return
    kinds = sum(bool(re.search(p, password)) for p in ("[A-Z]", "[a-z]", "[0-9]", "[^A-Za-z0-9]"))
    if not password or not re.fullmatch(PASSWORD_PATTERN, password) or kinds < 3:
        raise BadInput("the instance password must be 8-30 characters with three of: upper case, lower case, "
                       "digits, special characters (no spaces or quotes), as ECS requires")


def _info(dep: state.Deployment) -> AliyunState:
    assert isinstance(dep.info, AliyunState), f"{dep.name} is not an Alibaba Cloud deployment"
    return dep.info


def _cloud(dep: state.Deployment) -> Cloud:
    region = _info(dep).region or (dep.spec.placement.region if dep.spec.placement else None)
    if not region:
        raise LlmnestError(f"{dep.name} is not an Alibaba Cloud deployment")
    return Cloud(region)


def _endpoints(outputs: dict[str, str]) -> list[dict[str, str]]:
    """Public first: it is the one reachable from here, so examples and `bench NAME` use it."""
    found = [("public", outputs.get("PublicEndpoint")), ("private", outputs.get("PrivateEndpoint"))]
    return [{"label": label, "base_url": url} for label, url in found if url]


def _outputs(stack: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o.get("OutputValue") for o in stack.get("Outputs") or []}


def watch(cloud: Cloud, stack_id: str, name: str, total: int, say: Say,
          peek: Callable[[], str | None] = lambda: None) -> dict[str, Any]:
    """Follow the stack's events until it leaves *_IN_PROGRESS; returns the final GetStack.

    Says each created resource, each failure, and every few minutes what is still being created,
    with the instance's latest progress line from `peek` once it has one.
    """
    seen: set[str] = set()
    busy: dict[str, str] = {}  # resources in progress -> type
    created = 0
    started = last_said = time.monotonic()
    while True:
        for event in cloud.stack_events(stack_id):
            if event["EventId"] in seen or event.get("ResourceType") == "ALIYUN::ROS::Stack":
                continue
            seen.add(event["EventId"])
            logical, kind, status = event["LogicalResourceId"], event.get("ResourceType", ""), event.get("Status", "")
            if SKIP.search(status):
                busy[logical] = kind
                continue
            busy.pop(logical, None)
            last_said = time.monotonic()
            if status == "CREATE_COMPLETE":
                created += 1
                say(f"[{created}/{total}] {logical} ({kind}) created")
            else:
                say(f"{logical} ({kind}): {status} {event.get('StatusReason', '')}".rstrip())
        stack = cloud.get_stack(stack_id)
        if not SKIP.search(stack.get("Status", "")):
            return stack
        if busy and time.monotonic() - last_said >= STILL_WAITING_S:
            last_said = time.monotonic()
            minutes = (last_said - started) / 60
            progress = peek() if not busy.keys() & {HEAD_GROUP, WORKER_GROUP} else None
            say(f"still creating after {minutes:.0f} min: {', '.join(busy)}; "
                + (f"on the instance: {progress}" if progress else
                   f"the bootstrap downloads the weights and starts the engine (`llmnest logs {name}`)"))
        time.sleep(_poll_seconds())


def failure_of(cloud: Cloud, stack_id: str, stack: dict[str, Any]) -> LlmnestError:
    """The failing resource and its reason as one line (the rest of a long reason as detail)."""
    failed = [e for e in cloud.stack_events(stack_id)
              if e.get("Status", "").endswith("_FAILED") and e.get("ResourceType") != "ALIYUN::ROS::Stack"]
    hint = ""
    if failed:
        event = failed[0]
        where, reason = f"{event['LogicalResourceId']} ({event['ResourceType']})", event.get("StatusReason", "")
        policy = policy_for_resource(event["ResourceType"])
        if policy and any(word in reason for word in DENIED):
            hint = f"; attach the {policy} policy to the RAM user in the RAM console"
    else:
        where, reason = "the stack", stack.get("StatusReason", "")
    first, _, rest = reason.replace("\\n", "\n").partition("\n")
    return LlmnestError(f"stack {stack.get('StackName', stack_id)} failed at {where}: {first}{hint}",
                        detail=rest or None)


def _create_recorded(cloud: Cloud, spec: DeploymentSpec, template: dict[str, Any], values: dict[str, Any],
                     token: str, say: Say) -> str:
    """CreateStack, with the stack id in the state as soon as it answers.

    Ctrl-C during the call repeats it with the same client token (ROS answers with the stack the
    first call made, or makes it), records the id and says how to follow or delete it.
    """
    def create() -> str:
        stack_id = cloud.create_stack(stack_name(spec), template, values, stack_minutes(spec), token)
        state.update(spec.name, info={"stack_id": stack_id})
        return stack_id

    try:
        return create()
    except KeyboardInterrupt:
        stack_id = create()
        say(f"interrupted: stack {stack_id} is being created. Follow it with `llmnest status {spec.name}`, "
            f"or delete it with `llmnest down {spec.name}`")
        raise
    except LlmnestError:
        state.delete(spec.name)  # CreateStack refused: nothing was created, nothing to remember
        raise


def deploy(
    spec: DeploymentSpec,
    api_key: str | None,
    password: str | None,
    *,
    yes: bool,
    dry_run: bool,
    say: Say,
    confirm: Confirm,
    validate: bool = False,
) -> dict[str, Any]:
    """Plan, check, price, confirm, create the stack and follow it until the model answers."""
    if validate and not dry_run:
        raise BadInput("--validate is for --dry-run: add --dry-run to have ROS check the stack without creating it")
    spec = resolve(spec)
    place = spec.placement
    assert place is not None
    key = (api_key or new_api_key()) if spec.api_key_enabled else None
    _check_secrets(key, password)
    if not dry_run and spec.name in state.names():
        raise Conflict(f"a deployment named {spec.name!r} exists; pick another --name, or `llmnest down {spec.name}` first")
    template = render_template(spec)
    values = stack_parameters(spec, key, password)
    pre = preflight.run(spec, template, values, strict=not dry_run)
    if dry_run:
        if validate:
            pre.checks += preflight.validate_in_cloud(spec, template, {"ZoneId": pre.zone or place.zone, **values})
        return {
            "template": template,
            "parameters": masked(template, {"ZoneId": pre.zone or place.zone or "(picked at deploy)", **values}),
            "bootstrap_script": bootstrap.render_bootstrap(spec),
            "preflight": pre.checks,
        }
    assert pre.cloud is not None and pre.zone is not None and pre.price is not None
    for line in preflight.price_preview(spec, pre.price):
        say(line)
    hourly = pre.price["totals"].get("/Hour")
    price_text = ", ".join(f"{t:,.2f} {pre.price['currency']}{u}" for u, t in pre.price["totals"].items())
    if not yes and not confirm(f"Create stack {stack_name(spec)} in {place.region}/{pre.zone} at {price_text}?"):
        raise LlmnestError("cancelled: nothing was created")

    values["ZoneId"] = pre.zone
    spec = spec.model_copy(update={"placement": place.model_copy(update={"zone": pre.zone})})  # record where it went
    token = secrets.token_hex(16)
    state.create(spec, key)
    state.update(spec.name, info={"region": place.region, "zone": pre.zone, "client_token": token,
                                  "price_per_hour": hourly, "price": price_text})
    stack_id = _create_recorded(pre.cloud, spec, template, values, token, say)
    say(f"creating stack {stack_name(spec)} ({stack_id}) in {place.region}; this takes a while (weights download)")
    try:
        unconditional = [r for r in template["Resources"].values() if "Condition" not in r]
        stack = watch(pre.cloud, stack_id, spec.name, len(unconditional), say, lambda: _progress_line(spec.name))
    except KeyboardInterrupt:
        say(f"interrupted: stack {stack_id} keeps being created in {place.region}. "
            f"Follow it with `llmnest status {spec.name}`, or delete it with `llmnest down {spec.name}`")
        raise
    if stack.get("Status") != "CREATE_COMPLETE":
        error = failure_of(pre.cloud, stack_id, stack)
        state.update(spec.name, status="failed", last_error=error.message)
        error.message += f" (inspect it, then `llmnest down {spec.name}` to delete the stack)"
        raise error
    outputs = _outputs(stack)
    endpoints = _endpoints(outputs)
    state.update(spec.name, status="ready", ready_at=time.time(), info={"endpoints": endpoints})
    return {
        "name": spec.name,
        "endpoints": [{**e, "api_key": key, "model": spec.served_model_name} for e in endpoints],
        "api_key": key,
        "model": spec.model,
        "served_model_name": spec.served_model_name,
        "engine": spec.engine,
        "target": "aliyun",
        "status": "ready",
        "stack_id": stack_id,
        "region": place.region,
        "zone": pre.zone,
        "instance_type": place.instance_type,
        "nodes": place.nodes,
        "price": price_text,
        "price_per_hour": hourly,
    }


def status(dep: state.Deployment) -> dict[str, Any]:
    """The stack's status, and a real chat request to the public endpoint when there is one."""
    info = _info(dep)
    stack_id = info.stack_id
    out: dict[str, Any] = {"name": dep.name, "stack_id": stack_id, "region": info.region,
                           "endpoints": [e.model_dump() for e in info.endpoints]}
    if not stack_id:
        out.update(status="failed", stack_status="NONE", detail="the stack was never created; `llmnest down` forgets it")
        return out
    cloud = _cloud(dep)
    try:
        stack = cloud.get_stack(stack_id)
    except NotFound:
        state.update(dep.name, status="stopped")
        out.update(status="stopped", stack_status="DELETED", detail="the stack no longer exists")
        return out
    outputs = _outputs(stack)
    if outputs and not out["endpoints"]:
        out["endpoints"] = _endpoints(outputs)
        state.update(dep.name, info={"endpoints": out["endpoints"]})
    stack_status = stack.get("Status", "")
    out.update(stack_status=stack_status, stack_reason=stack.get("StatusReason", ""))
    public = next((e["base_url"] for e in out["endpoints"] if e["label"] == "public"), None)
    if stack_status == "CREATE_COMPLETE" and public:
        probe = chat_once(public, dep.spec.served_model_name, state.api_key(dep.name), timeout=15)
        out["probe"] = {"ok": probe.ok, "stage": probe.stage, "detail": probe.detail}
        out["status"] = "ready" if probe.ok else "unreachable"
    elif stack_status == "CREATE_COMPLETE":
        out["probe"] = {"ok": None, "stage": "not probed", "detail": "private endpoint: reachable inside the VPC only"}
        out["status"] = "ready"
    elif stack_status.startswith("DELETE"):
        out["status"] = "stopped"
    else:
        out["status"] = "starting" if SKIP.search(stack_status) else "failed"
    state.update(dep.name, status=out["status"])
    return out


def ended(result: dict[str, Any]) -> bool:
    """Whether an instance's run has ended, from its InvocationStatus (an exit code may be reported
    before the run ends)."""
    return bool(result["status"]) and result["status"] not in NOT_ENDED


def succeeded(result: dict[str, Any]) -> bool:
    return result["status"] == "Success" and result["exit_code"] in (0, None)


def _run_script(cloud: Cloud, instance_ids: list[str], script: str, name: str, timeout: int) -> list[dict[str, Any]]:
    """Run a script through Cloud Assistant and wait until every instance's run has ended."""
    invoke_id = cloud.run_command(instance_ids, script, name, timeout)
    deadline = time.monotonic() + timeout + 60
    while time.monotonic() < deadline:
        results = cloud.invocation_results(invoke_id)
        if results and all(ended(r) for r in results):
            return results
        time.sleep(min(_poll_seconds(), 2.0))
    raise LlmnestError(f"Cloud Assistant invocation {invoke_id} did not finish in {timeout} s")


def _how(result: dict[str, Any]) -> str:
    code = result["exit_code"]
    return f"{result['status']}, exit {code}" if code is not None else str(result["status"])


def _nodes(dep: state.Deployment, cloud: Cloud) -> tuple[list[str], list[str]]:
    """Instance ids and private IPs, the head node first: from the state, else from the stack's
    instance groups, one instance each (so logs work while the stack is still creating, or after it
    failed). Each node's id and IP come from its own group, never matched across two lists."""
    ids, ips = _info(dep).instance_ids, _info(dep).private_ips
    if ids and ips:
        return ids, ips
    stack_id = _info(dep).stack_id
    if not stack_id:
        raise LlmnestError(f"{dep.name} has no stack; `llmnest down {dep.name}` forgets it")
    ids, ips = [], []
    for group in node_groups(dep.spec):
        try:
            attrs = cloud.resource_attributes(stack_id, group)
        except NotFound:
            raise LlmnestError(f"the instances of {dep.name} are not created yet; "
                               f"see `llmnest status {dep.name}`") from None
        group_ids, group_ips = list(attrs.get("InstanceIds") or []), list(attrs.get("PrivateIps") or [])
        if len(group_ids) != 1 or len(group_ips) != 1:
            raise LlmnestError(f"the stack of {dep.name} reports {len(group_ids)} instance(s) in {group}, not one; "
                               f"see `llmnest status {dep.name}`")
        ids += group_ids
        ips += group_ips
    state.update(dep.name, info={"instance_ids": ids, "private_ips": ips})
    return ids, ips


def logs(dep: state.Deployment, tail: int) -> list[str]:
    """The engine's last `tail` log lines, read on node 0 through ECS Cloud Assistant (no SSH), key redacted."""
    return _log_lines(dep, bootstrap.logs_command(dep.spec, tail), tail, "logs")


def gateway_logs(dep: state.Deployment, tail: int) -> list[str]:
    """The last `tail` lines of the gateway's journal on node 0, through Cloud Assistant."""
    return _log_lines(dep, bootstrap.gateway_logs_command(tail), tail, "gateway-logs")


def _log_lines(dep: state.Deployment, script: str, tail: int, what: str) -> list[str]:
    cloud = _cloud(dep)
    ids, _ = _nodes(dep, cloud)
    results = _run_script(cloud, ids[:1], script, f"llmnest-{dep.name}-{what}", 60)
    result = results[0]
    if not succeeded(result):
        raise LlmnestError(f"reading the logs failed on {result['instance_id']} ({_how(result)}): "
                           f"{(result['output'] or result['error']).strip().splitlines()[-1:]}")
    key = state.api_key(dep.name)
    lines = result["output"].splitlines()[-tail:]
    return [line.replace(key, "[api key]") for line in lines] if key else lines  # SGLang logs its server args


def _progress_line(name: str) -> str | None:
    """The last line of node 0's log (the bootstrap's, then the engine's), or None when it cannot be read yet."""
    try:
        lines = logs(state.get(name), 2)
    except LlmnestError as exc:  # instances not up yet, Cloud Assistant not ready: progress is best effort
        log.debug("no progress line from %s: %s", name, exc.message)
        return None
    return lines[-1].strip() if lines else None


def _role_targets(spec: DeploymentSpec, ids: list[str]) -> list[tuple[str, list[str]]]:
    targets = {"single": ids, "prepare": ids, "ray-head": ids[:1], "ray-worker": ids[1:2], "serve": ids[:1],
               "sglang-worker": ids[1:2], "sglang-head": ids[:1]}
    return [(role, targets[role]) for role in bootstrap.roles(spec)]


def redeploy(dep: state.Deployment, new_spec: DeploymentSpec, say: Say) -> None:
    """Re-run the bootstrap with the new spec on the same instances (same key) through Cloud Assistant."""
    old, new = resolve(dep.spec), resolve(new_spec)
    assert old.placement is not None and new.placement is not None
    changed = [f for f in LOCKED_PLACEMENT if getattr(old.placement, f) != getattr(new.placement, f)]
    if changed:
        raise BadInput(f"redeploy keeps the instances and network ({', '.join(changed)} cannot change); "
                       f"`llmnest down {dep.name}` and `llmnest up` again instead")
    cloud = _cloud(dep)
    ids, ips = _nodes(dep, cloud)
    key = state.api_key(dep.name) or ""
    head_ip = ips[0] if ips else ""
    for role, targets in _role_targets(new, ids):
        say(f"running the bootstrap ({role}) on {', '.join(targets)}")
        script = bootstrap.run_command_script(new, role, key, head_ip, "true")
        for result in _run_script(cloud, targets, script, f"llmnest-{dep.name}-{role}", role_timeout_s(new, role)):
            if not succeeded(result):
                tail = "\n".join(result["output"].strip().splitlines()[-20:])
                state.update(dep.name, status="failed", last_error=f"redeploy failed at {role}")
                if result["exit_code"] == REBOOT_EXIT:
                    raise LlmnestError(f"{result['instance_id']} reboots to load the NVIDIA driver, so the redeploy "
                                       f"stopped at {role}; once it is back, run `llmnest restart {dep.name}` (or the redeploy) again",
                                       detail=tail or None)
                raise LlmnestError(f"redeploy failed at {role} on {result['instance_id']} ({_how(result)})",
                                   detail=tail or result["error"])
    state.update(dep.name, spec=new, status="ready", ready_at=time.time())
    say(f"{dep.name} redeployed: {new.served_model_name} answers again")


def down(dep: state.Deployment, say: Say, confirm: Confirm) -> None:
    """Delete the stack (after a confirmation) and report what went with it; then forget the deployment."""
    stack_id = _info(dep).stack_id
    if not stack_id:
        state.delete(dep.name)
        say(f"{dep.name} had no stack (creation never started); forgotten")
        return
    cloud = _cloud(dep)
    try:
        resources = cloud.stack_resources(stack_id)
    except NotFound:
        state.delete(dep.name)
        say(f"stack {stack_id} was already deleted; {dep.name} forgotten")
        return
    listing = ", ".join(f"{r['LogicalResourceId']} ({r['ResourceType']})" for r in resources) or "no resources yet"
    if not confirm(f"Delete stack {stack_id} in {_info(dep).region} with {listing}?"):
        raise LlmnestError("cancelled: nothing was deleted")
    cloud.delete_stack(stack_id)
    say(f"deleting stack {stack_id}")
    while True:
        try:
            stack = cloud.get_stack(stack_id)
        except NotFound:
            break
        if stack.get("Status") == "DELETE_COMPLETE":
            break
        if stack.get("Status") == "DELETE_FAILED":
            raise LlmnestError(f"deleting stack {stack_id} failed: {stack.get('StatusReason', '')}; "
                               "retry `llmnest down`, or delete it in the ROS console")
        time.sleep(_poll_seconds())
    for r in resources:
        say(f"deleted {r['LogicalResourceId']} ({r['ResourceType']}) {r.get('PhysicalResourceId', '')}".rstrip())
    state.delete(dep.name)
