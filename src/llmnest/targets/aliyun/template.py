"""The ROS template of a deployment, as a plain dict (dumped to YAML/JSON by callers). Pure.

Network (new VPC + vSwitch, or the user's), a security group that opens the service port to the
VPC and to --allow-cidr only, the GPU instance group, an API key (given as a NoEcho parameter, or
generated in the stack by ALIYUN::RandomString), the bootstrap RunCommand(s), and a wait condition
that the bootstrap signals once the model answers a real request, or with FAILURE and the log tail.

Nothing that can reboot an instance runs as a synchronous RunCommand: the single node's bootstrap and
the two-node `Prepare` run asynchronously (a driver that loads only after a reboot exits 194, Cloud
Assistant reboots, a systemd unit resumes the script) and the stack waits on wait conditions the
script signals: `Prepared` (one signal per node), then `Ready`. The head node is its own instance
group (`Nodes`, one instance), the worker another (`Worker`), so its id and IP are named, not
picked from two lists whose orders ROS does not promise to match.
"""

from __future__ import annotations

import json
from typing import Any

from ...spec import DeploymentSpec
from . import bootstrap
from .budget import prepare_s, ready_wait_s, role_timeout_s
from .images import OS_IMAGE_FAMILY
from .network import NEW_VPC_CIDR, NEW_VSWITCH_CIDR, vpc_ranges
from .sizing import MAX_SYSTEM_DISK_GIB, catalog_model, disks_gib, fitting_types, resolve

FORMAT_VERSION = "2015-09-01"
API_KEY_PATTERN = r"^$|^[A-Za-z0-9._~+/=-]{8,128}$"
_SPECIAL = r"()`~!@#$%^&*_+=|{}\[\]:;<>,.?/-"
# ECS: 8-30 characters with at least three of lowercase, uppercase, digits and special characters
PASSWORD_PATTERN = (
    rf"^$|^(?:(?=.*[a-z])(?=.*[A-Z])(?=.*\d)|(?=.*[a-z])(?=.*[A-Z])(?=.*[{_SPECIAL}])"
    rf"|(?=.*[a-z])(?=.*\d)(?=.*[{_SPECIAL}])|(?=.*[A-Z])(?=.*\d)(?=.*[{_SPECIAL}]))[A-Za-z\d{_SPECIAL}]{{8,30}}$"
)
CIDR_PATTERN = r"^$|^(\d{1,3}\.){3}\d{1,3}/\d{1,2}$"
GENERATED_KEY_PREFIX = "sk-"
SSH_PORT = 22
HEAD_GROUP, WORKER_GROUP = "Nodes", "Worker"  # node 0 (the head; the only node of a single-node stack), node 1


def ref(name: str) -> dict[str, Any]:
    return {"Ref": name}


def getatt(resource: str, attribute: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [resource, attribute]}


def join(*parts: Any) -> dict[str, Any]:
    return {"Fn::Join": ["", list(parts)]}


def first(value: Any) -> dict[str, Any]:
    return {"Fn::Select": ["0", value]}


def node_groups(spec: DeploymentSpec) -> tuple[str, ...]:
    """The instance groups of the stack, head first: one instance each."""
    place = resolve(spec).placement
    assert place is not None
    return (HEAD_GROUP,) if place.nodes == 1 else (HEAD_GROUP, WORKER_GROUP)


def instance_id(group: str) -> dict[str, Any]:
    return first(getatt(group, "InstanceIds"))


def private_ip(group: str) -> dict[str, Any]:
    return first(getatt(group, "PrivateIps"))


def _image_parameter(image_id: str | None) -> dict[str, Any]:
    """The user's GPU image, or the newest public Ubuntu 22.04 (the bootstrap adds driver, docker, toolkit)."""
    if image_id:
        return {"ImageId": {"Type": "String", "Default": image_id,
                            "Description": "GPU image with the NVIDIA driver, docker and the NVIDIA container toolkit"}}
    return {"ImageFamily": {"Type": "String", "Default": OS_IMAGE_FAMILY,
                            "Description": "ECS public image family; the bootstrap installs the NVIDIA driver, "
                                           "docker and the NVIDIA container toolkit"}}


def _parameters(spec: DeploymentSpec) -> dict[str, Any]:
    place = spec.placement
    assert place is not None
    model = catalog_model(spec)
    allowed = fitting_types(spec)
    disk, data_disk = disks_gib(model)
    params: dict[str, Any] = {
        "ZoneId": {
            "Type": "String",
            "Description": "Zone of the instances (preflight picks one that has the instance type in stock)",
            "AssociationProperty": "ALIYUN::ECS::Instance::ZoneId",
            **({"Default": place.zone} if place.zone else {}),
        },
        "InstanceType": {
            "Type": "String",
            "Description": f"GPU instance type; these serve {model.key} on {place.nodes} node(s) with the "
                           f"rendered engine command (tensor parallel {spec.tensor_parallel_size})",
            "AllowedValues": allowed,
            "Default": place.instance_type,
        },
        **_image_parameter(place.image_id),
        "SystemDiskSize": {
            "Type": "Number",
            "Description": "System disk in GiB: OS, engine image" + ("" if data_disk else " and the model's weights"),
            "Default": disk,
            "MinValue": disk,
            "MaxValue": MAX_SYSTEM_DISK_GIB,
        },
        "PayType": {"Type": "String", "AllowedValues": ["PostPaid", "PrePaid"],
                    "Default": "PrePaid" if place.pay == "prepaid" else "PostPaid"},
        "PeriodMonths": {"Type": "Number", "AllowedValues": list(range(1, 10)), "Default": place.period_months or 1,
                         "Description": "Subscription length (PrePaid only)"},
        "BandwidthMbps": {"Type": "Number", "MinValue": 0, "MaxValue": 200, "Default": place.bandwidth_mbps,
                          "Description": "Public outbound bandwidth (pay by traffic); 0 for no public IP"},
        "AllowCidr": {
            "Type": "String",
            "Description": "Who may reach the service port (and SSH, when set): a CIDR; empty for the VPC only",
            "AllowedPattern": CIDR_PATTERN,
            "Default": place.allow_cidr or ("0.0.0.0/0" if place.public else ""),
        },
        "InstancePassword": {
            "Type": "String",
            "NoEcho": True,
            "Default": "",
            "Description": "Login password of the instances, 8-30 characters; empty for none",
            "AllowedPattern": PASSWORD_PATTERN,
            "ConstraintDescription": "8-30 characters, at least three of: lowercase, uppercase, digits, "
                                     "special characters",
        },
        "KeyPairName": {"Type": "String", "Default": place.key_pair or "",
                        "Description": "SSH key pair for the instances; empty for none"},
    }
    if spec.api_key_enabled:
        params["ApiKey"] = {
            "Type": "String",
            "NoEcho": True,
            "Default": "",
            "Description": "API key of the endpoint; empty to generate one in the stack",
            "AllowedPattern": API_KEY_PATTERN,
        }
    if place.vpc_id:
        params["VpcId"] = {"Type": "String", "Default": place.vpc_id, "AssociationProperty": "ALIYUN::ECS::VPC::VPCId"}
        params["VSwitchId"] = {"Type": "String", "Default": place.vswitch_id,
                               "AssociationProperty": "ALIYUN::VPC::VSwitch::VSwitchId"}
    return params


def _conditions(spec: DeploymentSpec) -> dict[str, Any]:
    def not_empty(param: str) -> dict[str, Any]:
        return {"Fn::Not": {"Fn::Equals": ["", ref(param)]}}

    conds: dict[str, Any] = {
        "HasPassword": not_empty("InstancePassword"),
        "HasKeyPair": not_empty("KeyPairName"),
        "IsPrepaid": {"Fn::Equals": ["PrePaid", ref("PayType")]},
        "HasPublicIp": {"Fn::Not": {"Fn::Equals": [0, ref("BandwidthMbps")]}},
    }
    if spec.api_key_enabled:
        conds["GenerateApiKey"] = {"Fn::Equals": ["", ref("ApiKey")]}
    return conds


def api_key_value(spec: DeploymentSpec) -> Any:
    """The key the endpoint uses: the parameter, or the stack's generated one."""
    if not spec.api_key_enabled:
        return ""
    generated = join(GENERATED_KEY_PREFIX, getatt("GeneratedApiKey", "value"))
    return {"Fn::If": ["GenerateApiKey", generated, ref("ApiKey")]}


def _ingress(spec: DeploymentSpec) -> list[dict[str, Any]]:
    place = spec.placement
    assert place is not None
    port = f"{spec.port}/{spec.port}"
    what = "the gateway" if bootstrap.gateway_on(spec) else "model endpoint"
    rules = [  # the one public port: the gateway's (the engine listens on loopback behind it)
        {"IpProtocol": "tcp", "PortRange": port, "SourceCidrIp": cidr, "Priority": 1,
         "Description": f"{what}, from inside the VPC"}
        for cidr in vpc_ranges(spec)
    ]
    if place.public or place.allow_cidr:
        rules.append({"IpProtocol": "tcp", "PortRange": port, "SourceCidrIp": ref("AllowCidr"), "Priority": 1,
                      "Description": f"{what}, from --allow-cidr"})
    if place.allow_cidr:
        rules.append({"IpProtocol": "tcp", "PortRange": f"{SSH_PORT}/{SSH_PORT}", "SourceCidrIp": ref("AllowCidr"),
                      "Priority": 1, "Description": "SSH, from --allow-cidr"})
    return rules


def _network(spec: DeploymentSpec) -> tuple[dict[str, Any], Any, Any]:
    """Network resources, and the VPC and vSwitch ids to use."""
    place = spec.placement
    assert place is not None
    if place.vpc_id:
        return {}, ref("VpcId"), ref("VSwitchId")
    resources = {
        "Vpc": {"Type": "ALIYUN::ECS::VPC",
                "Properties": {"CidrBlock": NEW_VPC_CIDR, "VpcName": f"llmnest-{spec.name}"}},
        "VSwitch": {"Type": "ALIYUN::ECS::VSwitch",
                    "Properties": {"VpcId": getatt("Vpc", "VpcId"), "ZoneId": ref("ZoneId"),
                                   "CidrBlock": NEW_VSWITCH_CIDR, "VSwitchName": f"llmnest-{spec.name}"}},
    }
    return resources, getatt("Vpc", "VpcId"), getatt("VSwitch", "VSwitchId")


def _data_disk(spec: DeploymentSpec) -> dict[str, Any]:
    """The weights' own disk when they outgrow the system disk (the bootstrap formats and mounts it)."""
    size = disks_gib(catalog_model(spec))[1]
    if not size:
        return {}
    return {"DiskMappings": [{"Category": "cloud_essd", "Size": str(size), "DiskName": f"llmnest-{spec.name}-model"}]}


def _instances(spec: DeploymentSpec, vpc: Any, vswitch: Any, index: int) -> dict[str, Any]:
    """Node `index`'s instance group (one instance)."""
    place = spec.placement
    assert place is not None
    no_value = ref("ALIYUN::NoValue")
    return {
        "Type": "ALIYUN::ECS::InstanceGroup",
        "Properties": {
            "InstanceName": f"llmnest-{spec.name}" + (f"-{index}" if place.nodes > 1 else ""),
            "MaxAmount": 1,
            "InstanceType": ref("InstanceType"),
            **({"ImageId": ref("ImageId")} if place.image_id else {"ImageFamily": ref("ImageFamily")}),
            "ZoneId": ref("ZoneId"),
            "VpcId": vpc,
            "VSwitchId": vswitch,
            "SecurityGroupId": getatt("SecurityGroup", "SecurityGroupId"),
            "SystemDiskCategory": "cloud_essd",
            "SystemDiskSize": ref("SystemDiskSize"),
            **_data_disk(spec),
            "AllocatePublicIP": {"Fn::If": ["HasPublicIp", True, False]},
            "InternetChargeType": "PayByTraffic",
            "InternetMaxBandwidthOut": ref("BandwidthMbps"),
            "InstanceChargeType": ref("PayType"),
            "Period": {"Fn::If": ["IsPrepaid", ref("PeriodMonths"), no_value]},
            "PeriodUnit": {"Fn::If": ["IsPrepaid", "Month", no_value]},
            "Password": {"Fn::If": ["HasPassword", ref("InstancePassword"), no_value]},
            "KeyPairName": {"Fn::If": ["HasKeyPair", ref("KeyPairName"), no_value]},
            "Tags": [{"Key": "llmnest", "Value": spec.name}],
        },
    }


_KEY, _HEAD, _CURL = "\x00key\x00", "\x00head\x00", "\x00curl\x00"


def command_content(spec: DeploymentSpec, role: str) -> dict[str, Any]:
    """The RunCommand script for `role`: the preamble with stack values spliced in, then the body.
    The two-node prepare role signals the Prepared wait condition; every other role, Ready."""
    text = bootstrap.run_command_script(spec, role, _KEY, _HEAD, _CURL)
    values = {
        "key": api_key_value(spec),
        "head": private_ip(HEAD_GROUP),
        "curl": getatt("PreparedHandle" if role == "prepare" else "ReadyHandle", "CurlCli"),
    }
    parts: list[Any] = []
    for i, piece in enumerate(text.split("\x00")):
        if i % 2:
            parts.append(values[piece])
        elif piece:
            parts.append(piece)
    return join(*parts)


def _run(spec: DeploymentSpec, role: str, targets: Any, *, sync: bool, after: str | None) -> dict:
    """A RunCommand; only roles that cannot reboot (they install nothing) run synchronously."""
    resource: dict[str, Any] = {
        "Type": "ALIYUN::ECS::RunCommand",
        "Properties": {
            "Name": f"llmnest-{spec.name}-{role}",
            "Type": "RunShellScript",
            "InstanceIds": targets,
            "CommandContent": command_content(spec, role),
            "Sync": sync,
            "Timeout": role_timeout_s(spec, role),
        },
    }
    if after:
        resource["DependsOn"] = [after]
    return resource


def _bootstrap_resources(spec: DeploymentSpec) -> tuple[dict[str, Any], str]:
    """RunCommand resources (and the two-node Prepared wait) in start-up order; returns them and the
    one the Ready wait condition follows."""
    roles = bootstrap.roles(spec)
    head, worker = [instance_id(HEAD_GROUP)], [instance_id(WORKER_GROUP)]
    if roles == bootstrap.ROLES_SINGLE:
        return {"Bootstrap": _run(spec, "single", head, sync=False, after=None)}, "Bootstrap"
    steps: dict[str, Any] = {
        "PreparedHandle": {"Type": "ALIYUN::ROS::WaitConditionHandle"},
        "Prepare": _run(spec, "prepare", head + worker, sync=False, after=None),
        "Prepared": {
            "Type": "ALIYUN::ROS::WaitCondition",
            "DependsOn": ["Prepare"],
            "Properties": {"Handle": ref("PreparedHandle"), "Count": 2, "Timeout": prepare_s(spec)},
        },
    }
    if spec.engine == "sglang":
        steps["WorkerStart"] = _run(spec, "sglang-worker", worker, sync=True, after="Prepared")
        steps["Serve"] = _run(spec, "sglang-head", head, sync=False, after="WorkerStart")
    else:
        steps["RayHead"] = _run(spec, "ray-head", head, sync=True, after="Prepared")
        steps["RayWorker"] = _run(spec, "ray-worker", worker, sync=True, after="RayHead")
        steps["Serve"] = _run(spec, "serve", head, sync=False, after="RayWorker")
    return steps, "Serve"


def curl_example(spec: DeploymentSpec, base_url: Any) -> Any:
    """A curl command as an output; the key stays a shell variable ($API_KEY), never the value."""
    body = json.dumps({"model": spec.served_model_name, "messages": [{"role": "user", "content": "Who are you?"}]})
    auth = ' -H "Authorization: Bearer $API_KEY"' if spec.api_key_enabled else ""
    return join("curl ", base_url, f'/chat/completions -H "Content-Type: application/json"{auth} -d \'{body}\'')


def _outputs(spec: DeploymentSpec) -> dict[str, Any]:
    place = spec.placement
    assert place is not None
    port = f":{spec.port}/v1"
    private = join("http://", private_ip(HEAD_GROUP), port)
    outputs: dict[str, Any] = {
        "InstanceIds": {"Description": "ECS instances (the head node first)",
                        "Value": [instance_id(group) for group in node_groups(spec)]},
        "PrivateEndpoint": {"Description": "OpenAI base URL inside the VPC", "Value": private},
        "PrivateCurl": {"Description": "Example request from inside the VPC (export API_KEY first)",
                        "Value": curl_example(spec, private)},
    }
    if place.public:
        public = join("http://", first(getatt(HEAD_GROUP, "PublicIps")), port)
        outputs["PublicEndpoint"] = {"Description": "OpenAI base URL from --allow-cidr", "Value": public,
                                     "Condition": "HasPublicIp"}
        outputs["PublicCurl"] = {"Description": "Example request from the internet (export API_KEY first)",
                                 "Value": curl_example(spec, public), "Condition": "HasPublicIp"}
    if spec.api_key_enabled:
        outputs["ApiKey"] = {"Description": "API key of the endpoint", "NoEcho": True, "Value": api_key_value(spec)}
    return outputs


def render_template(spec: DeploymentSpec) -> dict[str, Any]:
    """The whole ROS template for `spec` (resolved first, so an unplanned spec works too)."""
    spec = resolve(spec)
    place = spec.placement
    assert place is not None
    network, vpc, vswitch = _network(spec)
    resources: dict[str, Any] = {
        **network,
        "SecurityGroup": {
            "Type": "ALIYUN::ECS::SecurityGroup",
            "Properties": {"VpcId": vpc, "SecurityGroupName": f"llmnest-{spec.name}",
                           "SecurityGroupIngress": _ingress(spec)},
        },
        **{group: _instances(spec, vpc, vswitch, i) for i, group in enumerate(node_groups(spec))},
        "ReadyHandle": {"Type": "ALIYUN::ROS::WaitConditionHandle"},
    }
    if spec.api_key_enabled:
        resources["GeneratedApiKey"] = {
            "Type": "ALIYUN::RandomString",
            "Condition": "GenerateApiKey",
            "Properties": {"length": 29, "character_classes": [{"class": "lowercase", "min": 1},
                                                               {"class": "digits", "min": 1}]},
        }
    steps, last = _bootstrap_resources(spec)
    resources.update(steps)
    resources["Ready"] = {
        "Type": "ALIYUN::ROS::WaitCondition",
        "DependsOn": [last],
        "Properties": {"Handle": ref("ReadyHandle"), "Count": 1, "Timeout": ready_wait_s(spec)},
    }
    template = {
        "ROSTemplateFormatVersion": FORMAT_VERSION,
        "Description": (
            f"llmnest {spec.name}: {spec.served_model_name} with {spec.engine} on {place.nodes} x "
            f"{place.instance_type}, {'public' if place.public else 'private'} endpoint"
        ),
        "Parameters": _parameters(spec),
        "Conditions": _conditions(spec),
        "Resources": resources,
        "Outputs": _outputs(spec),
    }
    return json.loads(json.dumps(template))  # no shared sub-objects (they would become YAML anchors)


def stack_parameters(spec: DeploymentSpec, api_key: str | None, password: str | None) -> dict[str, str]:
    """Parameter values for CreateStack besides ZoneId (secrets included: `masked` before showing)."""
    values: dict[str, str] = {}
    if spec.api_key_enabled and api_key:
        values["ApiKey"] = api_key
    if password:
        values["InstancePassword"] = password
    return values


def secret_parameters(template: dict[str, Any]) -> set[str]:
    return {name for name, p in template["Parameters"].items() if p.get("NoEcho")}


def masked(template: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    secrets = secret_parameters(template)
    return {k: ("******" if k in secrets and v else v) for k, v in values.items()}
