"""The thin SDK edge: Alibaba Cloud's official ROS and ECS clients, and their errors as one line.

Credentials come from the SDK's standard chain (environment variables, the `aliyun` CLI's
~/.aliyun/config.json profile, ~/.alibabacloud/credentials.ini, and the ECS instance RAM role
when ALIBABA_CLOUD_ECS_METADATA names it).
`LLMNEST_ALIYUN_ENDPOINT` (for example http://127.0.0.1:9000) sends every call to one gateway
instead of the public endpoints: a proxy, or the emulator the tests use.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from ...errors import BadInput, LlmnestError, NotFound

ENDPOINT_ENV = "LLMNEST_ALIYUN_ENDPOINT"
HOW_TO_LOG_IN = (
    "set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or run `aliyun configure` "
    "(profile in ~/.aliyun/config.json), or on an ECS instance set ALIBABA_CLOUD_ECS_METADATA=<RAM role name>"
)
POLICIES = {"ros": "AliyunROSFullAccess", "ecs": "AliyunECSFullAccess"}
RESOURCE_POLICIES = {"ALIYUN::ECS::VPC": "AliyunVPCFullAccess", "ALIYUN::ECS::VSwitch": "AliyunVPCFullAccess",
                     "ALIYUN::ECS::": "AliyunECSFullAccess", "ALIYUN::ROS::": "AliyunROSFullAccess"}


def policy_for_resource(resource_type: str) -> str | None:
    """The RAM policy a stack needs to create `resource_type` (the seed's table)."""
    for prefix, policy in RESOURCE_POLICIES.items():
        if resource_type.startswith(prefix):
            return policy
    return None
DENIED = ("Forbidden", "NoPermission", "NotAuthorized", "AccessDenied")
BAD_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "IncompleteSignature", "InvalidSecurityToken")


class NoCredentials(LlmnestError):
    """No credentials anywhere in the standard chain."""


class PermissionDenied(LlmnestError):
    """The account lacks a RAM permission."""


def _credential_client() -> Any:
    """The SDK's credential chain, asked for the ECS instance role only where the user names one.

    The chain would otherwise query the ECS metadata address on every machine that has no other
    credentials (`ALIBABA_CLOUD_ECS_METADATA=ROLE` turns that provider on, as the SDK documents).
    The SDK reads these variables when it is first imported, so they are set before that. Its own
    logger prints tracebacks for each failed provider: quiet unless llmnest runs with -v.
    """
    import logging

    if not os.environ.get("ALIBABA_CLOUD_ECS_METADATA"):
        os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    if not logging.getLogger("llmnest").isEnabledFor(logging.DEBUG):
        logging.getLogger("credentials").setLevel(logging.CRITICAL)
    from alibabacloud_credentials.client import Client as CredentialClient

    return CredentialClient()


def credential_source() -> str:
    """Which provider of the chain has credentials (e.g. 'default/env'); NoCredentials when none does."""
    from alibabacloud_credentials.exceptions import CredentialException

    try:
        return _credential_client().get_credential().provider_name or "default"
    except CredentialException:
        raise NoCredentials(f"no Alibaba Cloud credentials found: {HOW_TO_LOG_IN}") from None


def _config(region: str) -> Any:
    from alibabacloud_tea_openapi.utils_models import Config

    config = Config(credential=_credential_client(), region_id=region, connect_timeout=10000, read_timeout=60000)
    if gateway := os.environ.get(ENDPOINT_ENV):
        url = urlsplit(gateway)
        config.endpoint, config.protocol = url.netloc, url.scheme
    return config


@contextmanager
def api_errors(product: str, action: str) -> Iterator[None]:
    """Turn SDK and transport errors into one line a person can act on."""
    from alibabacloud_credentials.exceptions import CredentialException
    from Tea.exceptions import TeaException, UnretryableException

    try:
        yield
    except CredentialException:
        raise NoCredentials(f"no Alibaba Cloud credentials found: {HOW_TO_LOG_IN}") from None
    except TeaException as exc:
        code = str(exc.code or "")
        message = str(exc.message or "").removeprefix("code: ").split(" request id:")[0]
        if not code:  # no answer at all: the transport failed
            reason = re.findall(r"\[Errno -?\d+\] [^\"')]+|timed out", message) or [message[-200:]]
            raise LlmnestError(f"cannot reach Alibaba Cloud for {action}: {reason[-1]} (network, proxy or "
                               f"{ENDPOINT_ENV}?)") from None
        status = getattr(exc, "statusCode", None) or getattr(exc, "status_code", None)
        if status == 403 or code.startswith(DENIED):
            policy = POLICIES[product]
            raise PermissionDenied(
                f"your Alibaba Cloud account may not call {product.upper()} {action} ({code}): "
                f"attach the {policy} policy to the RAM user in the RAM console, then retry"
            ) from None
        if code.startswith(BAD_CREDENTIALS):
            raise NoCredentials(f"Alibaba Cloud refused the credentials ({code}): {HOW_TO_LOG_IN}") from None
        if code.startswith("InvalidRegionId"):
            raise BadInput(f"Alibaba Cloud does not know that region ({code}); pick one from `aliyun ecs DescribeRegions`") from None
        if code.startswith(("StackNotFound", "StackResourceNotFound")):
            raise NotFound(f"the ROS stack no longer exists ({message}); `llmnest down NAME` forgets it") from None
        raise LlmnestError(f"{product.upper()} {action} failed: {code}: {message}") from None
    except UnretryableException as exc:
        raise LlmnestError(f"cannot reach Alibaba Cloud for {action}: {exc.inner_exception or exc}") from None


class Cloud:
    """ROS and ECS clients for one region; every method is one API call."""

    def __init__(self, region: str) -> None:
        from alibabacloud_ecs20140526.client import Client as EcsClient
        from alibabacloud_ros20190910.client import Client as RosClient

        self.region = region
        with api_errors("ros", "connect"):
            self._ros = RosClient(_config(region))
            self._ecs = EcsClient(_config(region))

    # ---- ECS

    def available_zones(self, instance_type: str, charge: str) -> dict[str, str]:
        """Zone -> stock status ('Available', 'SoldOut', ...) of `instance_type` in this region."""
        from alibabacloud_ecs20140526 import models as ecs

        req = ecs.DescribeAvailableResourceRequest(
            region_id=self.region, destination_resource="InstanceType", instance_type=instance_type,
            instance_charge_type=charge,
        )
        with api_errors("ecs", "DescribeAvailableResource"):
            body = self._ecs.describe_available_resource(req).body.to_map()
        zones: dict[str, str] = {}
        for zone in body.get("AvailableZones", {}).get("AvailableZone", []):
            status = "SoldOut"
            for res in zone.get("AvailableResources", {}).get("AvailableResource", []):
                for item in res.get("SupportedResources", {}).get("SupportedResource", []):
                    if item.get("Value") == instance_type:
                        status = item.get("Status", status)
            zones[zone["ZoneId"]] = status
        return zones

    def run_command(self, instance_ids: list[str], script: str, name: str, timeout: int) -> str:
        """Run a shell script through Cloud Assistant; returns the invocation id."""
        from alibabacloud_ecs20140526 import models as ecs

        req = ecs.RunCommandRequest(
            region_id=self.region, type="RunShellScript", name=name, instance_id=instance_ids, timeout=timeout,
            content_encoding="Base64", command_content=base64.b64encode(script.encode()).decode(),
        )
        with api_errors("ecs", "RunCommand"):
            return self._ecs.run_command(req).body.invoke_id

    def invocation_results(self, invoke_id: str) -> list[dict[str, Any]]:
        """Per instance: status, exit code and decoded output of an invocation."""
        from alibabacloud_ecs20140526 import models as ecs

        req = ecs.DescribeInvocationResultsRequest(region_id=self.region, invoke_id=invoke_id)
        with api_errors("ecs", "DescribeInvocationResults"):
            body = self._ecs.describe_invocation_results(req).body.to_map()
        results = body.get("Invocation", {}).get("InvocationResults", {}).get("InvocationResult", [])
        return [
            {
                "instance_id": r.get("InstanceId"),
                "status": r.get("InvocationStatus"),  # per instance: Pending, Running, Success, Failed, ...
                "exit_code": r.get("ExitCode"),
                "output": base64.b64decode(r.get("Output") or "").decode(errors="replace"),
                "error": r.get("ErrorInfo") or "",
                "dropped": r.get("Dropped") or 0,  # bytes of output Cloud Assistant cut off (it keeps a bounded output)
            }
            for r in results
        ]

    # ---- ROS

    @staticmethod
    def _parameters(values: dict[str, Any]) -> list[Any]:
        from alibabacloud_ros20190910 import models as ros

        return [ros.CreateStackRequestParameters(parameter_key=k, parameter_value=str(v)) for k, v in values.items()]

    def estimate_cost(self, template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """ROS's price estimate of every priced resource in the template (the raw Resources map)."""
        from alibabacloud_ros20190910 import models as ros

        req = ros.GetTemplateEstimateCostRequest(
            region_id=self.region, template_body=json.dumps(template),
            parameters=[ros.GetTemplateEstimateCostRequestParameters(parameter_key=k, parameter_value=str(v))
                        for k, v in values.items()],
        )
        with api_errors("ros", "GetTemplateEstimateCost"):
            return self._ros.get_template_estimate_cost(req).body.resources or {}

    def validate_template(self, template: dict[str, Any]) -> dict[str, Any]:
        """ROS's check of the template itself (syntax, resource types, properties): its summary."""
        from alibabacloud_ros20190910 import models as ros

        req = ros.ValidateTemplateRequest(region_id=self.region, template_body=json.dumps(template))
        with api_errors("ros", "ValidateTemplate"):
            return self._ros.validate_template(req).body.to_map()

    def preview_stack(self, name: str, template: dict[str, Any], values: dict[str, Any],
                      timeout_min: int) -> list[dict[str, Any]]:
        """ROS's plan of the stack with these parameter values, creating nothing: its resources."""
        from alibabacloud_ros20190910 import models as ros

        req = ros.PreviewStackRequest(
            region_id=self.region, stack_name=name, template_body=json.dumps(template),
            parameters=[ros.PreviewStackRequestParameters(parameter_key=k, parameter_value=str(v))
                        for k, v in values.items()],
            timeout_in_minutes=timeout_min, disable_rollback=True,
        )
        with api_errors("ros", "PreviewStack"):
            body = self._ros.preview_stack(req).body.to_map()
        return body.get("Stack", {}).get("Resources", [])

    def create_stack(self, name: str, template: dict[str, Any], values: dict[str, Any], timeout_min: int,
                     token: str) -> str:
        from alibabacloud_ros20190910 import models as ros

        req = ros.CreateStackRequest(
            region_id=self.region, stack_name=name, template_body=json.dumps(template),
            parameters=self._parameters(values), timeout_in_minutes=timeout_min, disable_rollback=True,
            client_token=token, tags=[ros.CreateStackRequestTags(key="llmnest", value=name)],
        )
        with api_errors("ros", "CreateStack"):
            return self._ros.create_stack(req).body.stack_id

    def get_stack(self, stack_id: str) -> dict[str, Any]:
        from alibabacloud_ros20190910 import models as ros

        with api_errors("ros", "GetStack"):
            return self._ros.get_stack(ros.GetStackRequest(region_id=self.region, stack_id=stack_id)).body.to_map()

    def stack_events(self, stack_id: str) -> list[dict[str, Any]]:
        """All events of a stack, oldest first."""
        from alibabacloud_ros20190910 import models as ros

        events: list[dict[str, Any]] = []
        page = 1
        while True:
            req = ros.ListStackEventsRequest(region_id=self.region, stack_id=stack_id, page_number=page, page_size=50)
            with api_errors("ros", "ListStackEvents"):
                body = self._ros.list_stack_events(req).body.to_map()
            events += body.get("Events", [])
            if len(events) >= body.get("TotalCount", 0) or not body.get("Events"):
                break
            page += 1
        return sorted(events, key=lambda e: (e.get("CreateTime", ""), e.get("EventId", "")))

    def stack_resources(self, stack_id: str) -> list[dict[str, Any]]:
        from alibabacloud_ros20190910 import models as ros

        with api_errors("ros", "ListStackResources"):
            body = self._ros.list_stack_resources(
                ros.ListStackResourcesRequest(region_id=self.region, stack_id=stack_id)).body.to_map()
        return body.get("Resources", [])

    def resource_attributes(self, stack_id: str, logical_id: str) -> dict[str, Any]:
        """A created resource's attributes (what Fn::GetAtt gives), e.g. an InstanceGroup's InstanceIds."""
        from alibabacloud_ros20190910 import models as ros

        req = ros.GetStackResourceRequest(region_id=self.region, stack_id=stack_id, logical_resource_id=logical_id,
                                          show_resource_attributes=True)
        with api_errors("ros", "GetStackResource"):
            body = self._ros.get_stack_resource(req).body.to_map()
        out = {}
        for attr in body.get("ResourceAttributes") or []:
            value = attr.get("ResourceAttributeValue")
            if isinstance(value, str) and value.startswith(("[", "{")):
                value = json.loads(value)
            out[attr.get("ResourceAttributeKey")] = value
        return out

    def delete_stack(self, stack_id: str) -> None:
        from alibabacloud_ros20190910 import models as ros

        with api_errors("ros", "DeleteStack"):
            self._ros.delete_stack(ros.DeleteStackRequest(region_id=self.region, stack_id=stack_id))
