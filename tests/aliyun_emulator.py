"""An EMULATION of the Alibaba Cloud ROS (2019-09-10) and ECS (2014-05-26) RPC APIs on 127.0.0.1.

No cloud can be reached from the test machine, so the official SDK clients talk to this server
instead (through LLMNEST_ALIYUN_ENDPOINT). It checks every request's ACS3-HMAC-SHA256 signature
(canonical request, signed headers, payload hash, date and nonce), as the API's signature
documentation describes, and answers with bodies shaped as the API reference's response examples.
It is not the cloud: stacks advance one resource per poll, instances are fake, prices are made up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import yaml

from llmnest.targets.aliyun.validate import check_parameters, check_properties, check_references

ACCESS_KEY_ID = "LTAI-emulated-key-id"
ACCESS_KEY_SECRET = "emulated-secret-0123456789"
SIGNED_REQUIRED = ("host", "x-acs-action", "x-acs-content-sha256", "x-acs-date", "x-acs-signature-nonce", "x-acs-version")
REGIONS = ("cn-hangzhou", "cn-beijing", "cn-shanghai")
ROS_VERSION, ECS_VERSION = "2019-09-10", "2014-05-26"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _unflatten(params: dict[str, str], prefix: str) -> list[Any]:
    """SDK flattening back to a list: 'P.1.Key' -> [{'Key': ...}], 'P.1' -> [value]."""
    items: dict[int, Any] = {}
    for key, value in params.items():
        m = re.fullmatch(rf"{re.escape(prefix)}\.(\d+)(?:\.(\w+))?", key)
        if m:
            index, sub = int(m.group(1)), m.group(2)
            if sub:
                items.setdefault(index, {})[sub] = value
            else:
                items[index] = value
    return [items[i] for i in sorted(items)]


@dataclass
class Stack:
    stack_id: str
    name: str
    region: str
    template: dict[str, Any]
    params: dict[str, str]
    order: list[str]
    status: str = "CREATE_IN_PROGRESS"
    reason: str = "Stack CREATE started"
    done: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    physical: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)  # RunCommand resource -> resolved script
    deleted_polls: int = 0


class Emulator:
    """The emulated cloud. Tests tune it through the attributes below before or between calls."""

    def __init__(self) -> None:
        self.zones = {"cn-hangzhou": ["cn-hangzhou-h", "cn-hangzhou-i", "cn-hangzhou-j"]}
        self.stock: dict[tuple[str, str], str] = {}  # (zone, type) -> status; default Available
        self.prices: dict[str, float] = {}  # instance type -> CNY per hour; default 30
        self.denied: set[str] = set()  # actions answered with 403 Forbidden.RAM / NoPermission
        self.fail_resource: dict[str, str] = {}  # logical id -> reason it fails with
        self.slow: dict[str, int] = {}  # logical id -> polls it stays CREATE_IN_PROGRESS
        self.instance_logs: list[str] = []
        self.public_ip = "127.0.0.1"  # "public" endpoints point back at this machine (a test's fake engine)
        self.command_handler: Callable[[str], tuple[int, str]] | None = None
        self.running_polls = 1  # DescribeInvocationResults polls that see a run still Running
        self.running_exit_code: int | None = None  # the ExitCode a Running result reports (the API may set 0)
        self.end_status: str | None = None  # the InvocationStatus a run ends with (default Success/Failed)
        self.stacks: dict[str, Stack] = {}
        self.invocations: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, str] = {}
        self.calls: list[str] = []
        self.nonces: set[str] = set()
        self._ids = itertools.count(1)
        self._ips = itertools.count(10)
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Emulator:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- the HTTP layer: signature check, routing, error bodies

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = urlsplit(self.path)
                try:
                    emulator.verify(self.command, url.path or "/", url.query, self.headers, body)
                    params = dict(parse_qsl(url.query, keep_blank_values=True))
                    if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                        params.update(parse_qsl(body.decode(), keep_blank_values=True))
                    with emulator._lock:
                        answer = emulator.dispatch(self.headers["x-acs-version"], self.headers["x-acs-action"], params)
                    status = 200
                except ApiError as exc:
                    status, answer = exc.status, {"Code": exc.code, "Message": exc.message}
                answer["RequestId"] = f"EMULATED-{secrets.token_hex(8).upper()}"
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

        return Handler

    def verify(self, method: str, path: str, raw_query: str, headers: Any, body: bytes) -> None:
        """ACS3-HMAC-SHA256: rebuild the canonical request from what arrived and compare signatures."""
        auth = headers.get("Authorization", "")
        m = re.fullmatch(r"ACS3-HMAC-SHA256 Credential=([^,]+),SignedHeaders=([^,]+),Signature=([0-9a-f]{64})", auth)
        if not m:
            raise ApiError(400, "IncompleteSignature", "The request signature does not conform to Aliyun standards.")
        key_id, signed, signature = m.groups()
        if key_id != ACCESS_KEY_ID:
            raise ApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        names = signed.split(";")
        missing = [h for h in SIGNED_REQUIRED if h not in names]
        if missing or names != sorted(names):
            raise ApiError(400, "IncompleteSignature", f"SignedHeaders must include {missing}, sorted")
        payload = hashlib.sha256(body).hexdigest()
        if headers.get("x-acs-content-sha256") != payload:
            raise ApiError(400, "IncompleteSignature", "x-acs-content-sha256 does not match the body")
        sent = datetime.strptime(headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        if abs((datetime.now(timezone.utc) - sent).total_seconds()) > 900:
            raise ApiError(400, "InvalidTimeStamp.Expired", "The x-acs-date is more than 15 minutes off.")
        nonce = headers["x-acs-signature-nonce"]
        if nonce in self.nonces:
            raise ApiError(400, "SignatureNonceUsed", "The request signature nonce has been used.")
        pairs = sorted(parse_qsl(raw_query, keep_blank_values=True))
        query = "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in pairs)
        canonical_headers = "".join(f"{n}:{headers.get(n, '').strip()}\n" for n in names)
        canonical = f"{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n{payload}"
        to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
        expected = hmac.new(ACCESS_KEY_SECRET.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise ApiError(400, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation.")
        self.nonces.add(nonce)

    def dispatch(self, version: str, action: str, params: dict[str, str]) -> dict[str, Any]:
        self.calls.append(action)
        region = params.get("RegionId", "")
        if region not in REGIONS:
            raise ApiError(404, "InvalidRegionId.NotFound", f"The specified RegionId {region!r} does not exist.")
        if action in self.denied:
            code = "NoPermission" if version == ROS_VERSION else "Forbidden.RAM"
            raise ApiError(403, code, "User not authorized to operate on the specified resource.")
        product = {ROS_VERSION: "ros", ECS_VERSION: "ecs"}.get(version)
        handler = getattr(self, f"_{product}_{action}", None)
        if handler is None:
            raise ApiError(400, "InvalidAction.NotFound", f"Specified api {action} is not found.")
        return handler(params)

    # ---- ECS

    def _ecs_DescribeAvailableResource(self, p: dict[str, str]) -> dict[str, Any]:
        wanted = p["InstanceType"]
        zones = []
        for zone in self.zones.get(p["RegionId"], []):
            status = self.stock.get((zone, wanted), "Available")
            category = "WithStock" if status == "Available" else "WithoutStock"
            zones.append({
                "ZoneId": zone, "RegionId": p["RegionId"], "Status": "Available", "StatusCategory": "WithStock",
                "AvailableResources": {"AvailableResource": [{
                    "Type": "InstanceType",
                    "SupportedResources": {"SupportedResource": [
                        {"Value": wanted, "Status": status, "StatusCategory": category, "Min": 0, "Max": 0, "Unit": ""},
                    ]},
                }]},
            })
        return {"AvailableZones": {"AvailableZone": zones}}

    def _ecs_RunCommand(self, p: dict[str, str]) -> dict[str, Any]:
        script = p["CommandContent"]
        if p.get("ContentEncoding", "PlainText").lower() == "base64":
            script = base64.b64decode(script).decode()
        instances = _unflatten(p, "InstanceId")
        if self.command_handler:
            code, output = self.command_handler(script)
        elif m := re.search(r"(?:docker logs --tail|tail -n) (\d+)", script):
            code, output = 0, "".join(line + "\n" for line in self.instance_logs[-int(m.group(1)):])
        else:
            code, output = 0, ""
        invoke_id = f"t-{next(self._ids):06d}"
        self.invocations[invoke_id] = {"script": script, "instances": instances, "code": code, "output": output,
                                       "polls": 0}
        return {"CommandId": f"c-{next(self._ids):06d}", "InvokeId": invoke_id}

    def _ecs_DescribeInvocationResults(self, p: dict[str, str]) -> dict[str, Any]:
        inv = self.invocations[p["InvokeId"]]
        inv["polls"] += 1
        running = inv["polls"] <= self.running_polls  # a real run is seen running first
        ended = self.end_status or ("Success" if inv["code"] == 0 else "Failed")
        results = [{
            "InstanceId": instance, "InvokeId": p["InvokeId"], "CommandId": "c-emulated",
            "InvocationStatus": "Running" if running else ended,
            "InvokeRecordStatus": "Running" if running else "Finished",
            "ExitCode": self.running_exit_code if running else (None if self.end_status else inv["code"]),
            "Output": "" if running else base64.b64encode(inv["output"].encode()).decode(),
            "ErrorCode": "", "ErrorInfo": "", "Dropped": 0,
        } for instance in inv["instances"]]
        return {"Invocation": {"PageNumber": 1, "PageSize": 10, "TotalCount": len(results),
                               "InvocationResults": {"InvocationResult": results}}}

    # ---- ROS

    def _template(self, p: dict[str, str]) -> dict[str, Any]:
        """The request's template, checked as ROS would against the published resource definitions
        (llmnest's targets/aliyun/ros, which names each type's source: the emulator keeps no copy of its own)."""
        try:
            template = yaml.safe_load(p["TemplateBody"])
        except (KeyError, yaml.YAMLError) as exc:
            raise ApiError(400, "InvalidTemplate", f"the template is not valid JSON/YAML: {exc}") from None
        problems = check_references(template) + check_properties(template)
        if problems:
            raise ApiError(400, "InvalidTemplate", f"Template format error: {problems[0]}")
        return template

    def _ros_ValidateTemplate(self, p: dict[str, str]) -> dict[str, Any]:
        template = self._template(p)
        return {
            "Description": template.get("Description", ""),
            "Parameters": [{"ParameterKey": k, "Type": d["Type"], "NoEcho": str(bool(d.get("NoEcho"))).lower(),
                            **({"DefaultValue": d["Default"]} if "Default" in d else {})}
                           for k, d in template.get("Parameters", {}).items()],
            "Outputs": [{"OutputKey": k, "Description": o.get("Description", "")}
                        for k, o in template.get("Outputs", {}).items()],
            "Resources": [{"LogicalResourceIdPattern": k, "ResourceType": r["Type"], "ResourcePath": k}
                          for k, r in template.get("Resources", {}).items()],
        }

    def _ros_PreviewStack(self, p: dict[str, str]) -> dict[str, Any]:
        template = self._template(p)
        values = self._parameter_values(template, p)
        problems = check_parameters(template, values)
        if problems:
            raise ApiError(400, "StackValidationFailed", problems[0])
        resources = [{"LogicalResourceId": name, "ResourceType": template["Resources"][name]["Type"],
                      "Action": "Add", "Properties": self._eval(template["Resources"][name].get("Properties", {}),
                                                                values, _PREVIEW_ATTRS, template)}
                     for name in self._order(template, values)]
        return {"Stack": {"StackName": p["StackName"], "RegionId": p["RegionId"], "Resources": resources,
                          "Parameters": [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in values.items()]}}

    def _parameter_values(self, template: dict[str, Any], p: dict[str, str]) -> dict[str, str]:
        given = {i["ParameterKey"]: i.get("ParameterValue", "") for i in _unflatten(p, "Parameters")}
        declared = template.get("Parameters", {})
        for key in given:
            if key not in declared:
                raise ApiError(400, "StackValidationFailed", f"Unknown parameter ({key}) in template.")
        values = {}
        for key, decl in declared.items():
            if key in given:
                values[key] = given[key]
            elif "Default" in decl:
                values[key] = decl["Default"]
            else:
                raise ApiError(400, "StackValidationFailed", f"The Parameter ({key}) was not provided.")
        return values

    def _ros_GetTemplateEstimateCost(self, p: dict[str, str]) -> dict[str, Any]:
        template = self._template(p)
        values = self._parameter_values(template, p)
        out = {}
        for name, res in template.get("Resources", {}).items():
            if res["Type"] != "ALIYUN::ECS::InstanceGroup":
                continue
            props = res["Properties"]
            itype = self._eval(props["InstanceType"], values, {}, template)
            count = int(self._eval(props.get("MaxAmount", 1), values, {}, template))
            prepaid = self._eval(props.get("InstanceChargeType"), values, {}, template) == "PrePaid"
            hourly = self.prices.get(itype, 30.0) * count
            amount = round(hourly * 720 * 0.85, 2) if prepaid else round(hourly, 2)
            original = round(amount / 0.85, 2) if prepaid else amount
            out[name] = {
                "Type": res["Type"],
                "Result": {
                    "Order": {"OriginalAmount": original, "TradeAmount": amount,
                              "DiscountAmount": round(original - amount, 2), "Currency": "CNY"},
                    "OrderSupplement": {"PriceUnit": "/Month" if prepaid else "/Hour",
                                        "ChargeType": "PrePaid" if prepaid else "PostPaid",
                                        "Quantity": count, "PriceType": "Total"},
                },
            }
        return {"Resources": out}

    def _ros_CreateStack(self, p: dict[str, str]) -> dict[str, Any]:
        token = p.get("ClientToken")
        if token in self.tokens:  # idempotent: the same token answers with the same stack
            return {"StackId": self.tokens[token]}
        template = self._template(p)
        values = self._parameter_values(template, p)
        if any(s.name == p["StackName"] and not s.status.startswith("DELETE") for s in self.stacks.values()):
            raise ApiError(409, "StackExists", f"The Stack ({p['StackName']}) already exists.")
        stack_id = f"{secrets.token_hex(4)}-emul-{secrets.token_hex(2)}-{secrets.token_hex(6)}"
        order = self._order(template, values)
        stack = Stack(stack_id, p["StackName"], p["RegionId"], template, values, order)
        self.stacks[stack_id] = stack
        if token:
            self.tokens[token] = stack_id
        self._event(stack, p["StackName"], "ALIYUN::ROS::Stack", "CREATE_IN_PROGRESS", "Stack CREATE started")
        return {"StackId": stack_id}

    def _stack(self, p: dict[str, str]) -> Stack:
        stack = self.stacks.get(p.get("StackId", ""))
        if stack is None or stack.status == "DELETE_COMPLETE":
            raise ApiError(404, "StackNotFound", f"The Stack ({p.get('StackId')}) could not be found.")
        return stack

    def _ros_GetStack(self, p: dict[str, str]) -> dict[str, Any]:
        stack = self._stack(p)
        self._advance(stack)
        outputs = []
        if stack.status == "CREATE_COMPLETE":
            for key, out in stack.template.get("Outputs", {}).items():
                value = self._eval(out["Value"], stack.params, stack.attributes, stack.template)
                outputs.append({"OutputKey": key, "OutputValue": "******" if out.get("NoEcho") else value,
                                "Description": out.get("Description", "")})
        secret = {k for k, d in stack.template.get("Parameters", {}).items() if d.get("NoEcho")}
        return {
            "StackId": stack.stack_id, "StackName": stack.name, "RegionId": stack.region, "Status": stack.status,
            "StatusReason": stack.reason, "CreateTime": _now(), "DisableRollback": True, "TimeoutInMinutes": 60,
            "Parameters": [{"ParameterKey": k, "ParameterValue": "****" if k in secret else str(v)}
                           for k, v in stack.params.items()],
            "Outputs": outputs,
        }

    def _ros_ListStackEvents(self, p: dict[str, str]) -> dict[str, Any]:
        stack = self._stack(p)
        self._advance(stack)
        size, page = int(p.get("PageSize", 10)), int(p.get("PageNumber", 1))
        newest_first = list(reversed(stack.events))
        return {"Events": newest_first[(page - 1) * size: page * size], "PageNumber": page, "PageSize": size,
                "TotalCount": len(stack.events)}

    def _ros_ListStackResources(self, p: dict[str, str]) -> dict[str, Any]:
        stack = self._stack(p)
        return {"Resources": [
            {"LogicalResourceId": name, "PhysicalResourceId": stack.physical.get(name, ""),
             "ResourceType": stack.template["Resources"][name]["Type"], "Status": "CREATE_COMPLETE",
             "StatusReason": "state changed", "CreateTime": _now(), "UpdateTime": _now(),
             "StackId": stack.stack_id, "StackName": stack.name}
            for name in stack.order[: stack.done]
        ]}

    def _ros_GetStackResource(self, p: dict[str, str]) -> dict[str, Any]:
        stack = self._stack(p)
        name = p.get("LogicalResourceId", "")
        if name not in stack.attributes:
            raise ApiError(404, "StackResourceNotFound", f"The Resource ({name}) could not be found in stack.")
        answer = {"LogicalResourceId": name, "PhysicalResourceId": stack.physical.get(name, ""),
                  "ResourceType": stack.template["Resources"][name]["Type"], "Status": "CREATE_COMPLETE",
                  "StatusReason": "state changed", "StackId": stack.stack_id, "StackName": stack.name}
        if p.get("ShowResourceAttributes", "").lower() == "true":
            answer["ResourceAttributes"] = [{"ResourceAttributeKey": k, "ResourceAttributeValue": v}
                                            for k, v in stack.attributes[name].items()]
        return answer

    def _ros_DeleteStack(self, p: dict[str, str]) -> dict[str, Any]:
        stack = self._stack(p)
        stack.status, stack.reason = "DELETE_IN_PROGRESS", "Stack DELETE started"
        self._event(stack, stack.name, "ALIYUN::ROS::Stack", "DELETE_IN_PROGRESS", "Stack DELETE started")
        stack.deleted_polls = 0
        return {}

    # ---- the stack simulation

    def _event(self, stack: Stack, logical: str, kind: str, status: str, reason: str) -> None:
        stack.events.append({
            "EventId": f"{len(stack.events) + 1:04d}-{secrets.token_hex(4)}", "StackId": stack.stack_id,
            "StackName": stack.name, "LogicalResourceId": logical, "PhysicalResourceId": stack.physical.get(logical, ""),
            "ResourceType": kind, "Status": status, "StatusReason": reason, "CreateTime": _now(),
        })

    def _advance(self, stack: Stack) -> None:
        """One poll: the next resource is created (or fails); deletion takes one poll."""
        if stack.status == "DELETE_IN_PROGRESS":
            stack.status, stack.reason = "DELETE_COMPLETE", "Stack DELETE completed successfully"
            self._event(stack, stack.name, "ALIYUN::ROS::Stack", "DELETE_COMPLETE", stack.reason)
            return
        if stack.status != "CREATE_IN_PROGRESS":
            return
        name = stack.order[stack.done]
        res = stack.template["Resources"][name]
        if self.slow.get(name, 0) > 0:
            if not any(e["LogicalResourceId"] == name for e in stack.events):
                self._event(stack, name, res["Type"], "CREATE_IN_PROGRESS", "state changed")
            self.slow[name] -= 1
            return
        if not any(e["LogicalResourceId"] == name for e in stack.events):
            self._event(stack, name, res["Type"], "CREATE_IN_PROGRESS", "state changed")
        if name in self.fail_resource:
            reason = self.fail_resource[name]
            self._event(stack, name, res["Type"], "CREATE_FAILED", reason)
            stack.status = "CREATE_FAILED"
            stack.reason = f"Resource CREATE failed: {name}: {reason}"
            self._event(stack, stack.name, "ALIYUN::ROS::Stack", "CREATE_FAILED", stack.reason)
            return
        self._create(stack, name, res)
        self._event(stack, name, res["Type"], "CREATE_COMPLETE", "state changed")
        stack.done += 1
        if stack.done == len(stack.order):
            stack.status, stack.reason = "CREATE_COMPLETE", "Stack CREATE completed successfully"
            self._event(stack, stack.name, "ALIYUN::ROS::Stack", "CREATE_COMPLETE", stack.reason)

    def _create(self, stack: Stack, name: str, res: dict[str, Any]) -> None:
        props = self._eval(res.get("Properties", {}), stack.params, stack.attributes, stack.template)
        kind = res["Type"]
        n = next(self._ids)
        attrs: dict[str, Any] = {}
        if kind == "ALIYUN::ECS::VPC":
            stack.physical[name] = attrs["VpcId"] = f"vpc-emul{n:05d}"
        elif kind == "ALIYUN::ECS::VSwitch":
            stack.physical[name] = attrs["VSwitchId"] = f"vsw-emul{n:05d}"
        elif kind == "ALIYUN::ECS::SecurityGroup":
            stack.physical[name] = attrs["SecurityGroupId"] = f"sg-emul{n:05d}"
        elif kind == "ALIYUN::ECS::InstanceGroup":
            count = int(props["MaxAmount"])
            attrs["InstanceIds"] = [f"i-emul{n:05d}{k}" for k in range(count)]
            attrs["PrivateIps"] = [f"192.168.1.{next(self._ips)}" for _ in range(count)]  # distinct per instance
            attrs["PublicIps"] = [self.public_ip] * count if props.get("AllocatePublicIP") else []
            stack.physical[name] = json.dumps(attrs["InstanceIds"])
        elif kind == "ALIYUN::RandomString":
            attrs["Value"] = secrets.token_hex(16)[: int(props.get("Length", 32))]
        elif kind == "ALIYUN::ROS::WaitConditionHandle":
            url = f"https://ros-emulated/waitcondition?stackid={stack.stack_id}&resource={name}"
            attrs["CurlCli"] = f"curl -X POST -H 'Content-Type: application/json' '{url}'"
            attrs["URL"] = url
        elif kind == "ALIYUN::ECS::RunCommand":
            stack.commands[name] = props["CommandContent"]
            attrs["InvokeId"] = f"t-emul{n:05d}"
        stack.physical.setdefault(name, f"{kind.split('::')[-1].lower()}-emul{n:05d}")
        stack.attributes[name] = attrs

    def _order(self, template: dict[str, Any], values: dict[str, str]) -> list[str]:
        """Resources in dependency order (DependsOn, Ref, Fn::GetAtt), skipping false conditions."""
        resources = template.get("Resources", {})
        active = [n for n, r in resources.items()
                  if "Condition" not in r or self._condition(r["Condition"], values, template)]

        def deps(name: str) -> set[str]:
            found = set(resources[name].get("DependsOn", []))
            text = json.dumps(resources[name].get("Properties", {}))
            found |= {m for m in re.findall(r'"Ref": "([^"]+)"', text) if m in resources}
            found |= {m for m in re.findall(r'"Fn::GetAtt": \["([^"]+)"', text) if m in resources}
            return found & set(active)

        order: list[str] = []
        while len(order) < len(active):
            ready = [n for n in active if n not in order and deps(n) <= set(order)]
            if not ready:
                raise ApiError(400, "CircularDependency", "Circular dependency found in the template.")
            order += ready
        return order

    def _condition(self, name: str, values: dict[str, str], template: dict[str, Any]) -> bool:
        return bool(self._eval(template["Conditions"][name], values, {}, template))

    def _eval(self, value: Any, values: dict[str, str], attrs: dict[str, dict[str, Any]], template: dict) -> Any:
        """Resolve the intrinsic functions the templates use."""
        if isinstance(value, list):
            return [v for v in (self._eval(v, values, attrs, template) for v in value) if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (fn, arg), = value.items()
            if fn == "Ref":
                if arg == "ALIYUN::NoValue":
                    return _NO_VALUE
                if arg in values:
                    return values[arg]
                return attrs.get(arg, {}).get("Ref", f"ref:{arg}")
            if fn == "Fn::GetAtt":
                return attrs[arg[0]][arg[1]]
            if fn == "Fn::Join":
                sep, parts = arg
                return sep.join(str(self._eval(x, values, attrs, template)) for x in parts)
            if fn == "Fn::Select":
                return self._eval(arg[1], values, attrs, template)[int(arg[0])]
            if fn == "Fn::If":
                branch = arg[1] if self._condition(arg[0], values, template) else arg[2]
                return self._eval(branch, values, attrs, template)
            if fn == "Fn::Equals":
                a, b = (self._eval(x, values, attrs, template) for x in arg)
                return str(a) == str(b)
            if fn == "Fn::Not":
                return not self._eval(arg, values, attrs, template)
        out = {k: self._eval(v, values, attrs, template) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _NO_VALUE}


_NO_VALUE = object()


class _Unresolved(dict):
    """PreviewStack's stand-in for attributes of resources not created yet: shows what it refers to."""

    def __missing__(self, resource: str) -> dict[str, Any]:
        return _Attrs(resource)


class _Attrs(dict):
    def __init__(self, resource: str) -> None:
        super().__init__()
        self.resource = resource

    def __missing__(self, attribute: str) -> Any:
        return [f"<{self.resource}.{attribute}[{i}]>" for i in range(8)]


_PREVIEW_ATTRS = _Unresolved()
