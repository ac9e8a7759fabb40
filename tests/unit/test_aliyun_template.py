"""The ROS template: for every seed model, both editions, public and private, it is valid YAML,
every reference resolves, parameters and their constraints hold, resource properties match the
published property definitions (targets/aliyun/ros, extracted from the ROS CDK packages), and every secret
is NoEcho. The checker itself is shown to catch each kind of mistake."""

from __future__ import annotations

import base64
import copy
import json
import re
from importlib import resources

import pytest
import yaml

from llmnest.targets.aliyun import bootstrap, budget
from llmnest.targets.aliyun.sizing import needs_fabric_manager, resolve
from llmnest.targets.aliyun.template import command_content, masked, render_template, stack_parameters
from llmnest.targets.aliyun.validate import (
    check_parameters,
    check_properties,
    check_references,
    check_secrets,
    check_template,
    definitions,
)
from llmnest.targets.aliyun.catalog import instance
from tests.fakes.cloud_specs import cloud_spec, seed_models, two_node_models

KEY, PASSWORD = "sk-template-test-0123", "Llm#nest-2026"
VALUES = {"ZoneId": "cn-hangzhou-i", "ApiKey": KEY, "InstancePassword": PASSWORD}


NETWORKS = {  # --private, --public, and no public IP at all (downloads through an existing VPC's NAT gateway)
    "private": {},
    "public": {"public": True},
    "nat": {"bandwidth_mbps": 0, "vpc_id": "vpc-1", "vswitch_id": "vsw-1"},
}


def _cases() -> list[tuple[str, int, str, str]]:
    two_node = two_node_models()
    cases = [(m, nodes, net, "vllm") for m in seed_models() for nodes in (1, 2) for net in ("private", "public")]
    cases += [(m, 2, net, engine) for m in two_node for net in ("private", "public") for engine in ("vllm", "sglang")]
    cases += [(m, 2, "nat", "vllm") for m in two_node]
    return cases


@pytest.mark.parametrize(("model", "nodes", "network", "engine"), _cases())
def test_template_is_sound(model: str, nodes: int, network: str, engine: str) -> None:
    template = render_template(cloud_spec(model, nodes=nodes, engine=engine, **NETWORKS[network]))
    text = yaml.safe_dump(template, sort_keys=False)
    assert "&id" not in text and yaml.safe_load(text) == template  # plain YAML, no anchors, round-trips
    assert check_references(template) == []
    assert check_properties(template) == []
    assert check_parameters(template, VALUES) == []
    assert check_secrets(template) == []
    params = template["Parameters"]
    assert params["ApiKey"]["NoEcho"] and params["InstancePassword"]["NoEcho"]
    assert template["Outputs"]["ApiKey"]["NoEcho"] is True
    assert ("PublicEndpoint" in template["Outputs"]) == (network == "public")
    assert KEY not in text and PASSWORD not in text
    for name, res in template["Resources"].items():
        if res["Type"] == "ALIYUN::ECS::RunCommand":
            size = len(base64.b64encode(_as_run(res["Properties"]["CommandContent"]).encode()))
            assert size <= CLOUD_ASSISTANT_LIMIT, f"{name}: {size} bytes of base64"


CLOUD_ASSISTANT_LIMIT = 16 * 1024  # Cloud Assistant: command content <= 16 KB after Base64 (CreateCommand)
LONG_CURL = "curl -i -X POST -H 'Content-Type: application/json' 'https://ros.aliyuncs.com/waitcondition?" + "x" * 1900


def _as_run(content: dict) -> str:
    """The script text with long stand-ins for the stack's values (key, IP, the handle's CurlCli)."""
    return "".join(p if isinstance(p, str) else LONG_CURL if "CurlCli" in json.dumps(p) else "v" * 64
                   for p in content["Fn::Join"][1])


def _select0(group: str, attribute: str) -> dict:
    return {"Fn::Select": ["0", {"Fn::GetAtt": [group, attribute]}]}


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_two_node_edition_waits_for_every_node_prepared_before_starting_the_engine(engine: str) -> None:
    """Prepare may reboot (the driver): it runs asynchronously, and the stack waits on the Prepared
    wait condition (one signal per node) before anything starts on the prepared hosts."""
    spec = resolve(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2, engine=engine))
    res = render_template(spec)["Resources"]
    assert res["Prepare"]["Properties"]["Sync"] is False
    assert res["Prepared"]["Properties"] == {"Handle": {"Ref": "PreparedHandle"}, "Count": 2,
                                             "Timeout": budget.prepare_s(spec)}
    assert res["Prepared"]["DependsOn"] == ["Prepare"]
    prepare = command_content(spec, "prepare")["Fn::Join"][1]
    assert {"Fn::GetAtt": ["PreparedHandle", "CurlCli"]} in prepare
    assert {"Fn::GetAtt": ["ReadyHandle", "CurlCli"]} not in prepare
    first = "WorkerStart" if engine == "sglang" else "RayHead"
    assert res[first]["DependsOn"] == ["Prepared"] and res["Ready"]["DependsOn"] == ["Serve"]
    if engine == "vllm":
        assert res["RayWorker"]["DependsOn"] == ["RayHead"] and res["Serve"]["DependsOn"] == ["RayWorker"]
    else:
        assert res["Serve"]["DependsOn"] == ["WorkerStart"]


def test_the_head_node_is_named_by_its_own_group_never_by_matching_two_lists() -> None:
    spec = resolve(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2))
    template = render_template(spec)
    res = template["Resources"]
    assert res["Nodes"]["Properties"]["MaxAmount"] == 1 and res["Worker"]["Properties"]["MaxAmount"] == 1
    head, worker = [_select0("Nodes", "InstanceIds")], [_select0("Worker", "InstanceIds")]
    assert res["Prepare"]["Properties"]["InstanceIds"] == head + worker
    assert res["RayHead"]["Properties"]["InstanceIds"] == head and res["Serve"]["Properties"]["InstanceIds"] == head
    assert res["RayWorker"]["Properties"]["InstanceIds"] == worker
    assert _select0("Nodes", "PrivateIps") in command_content(spec, "ray-worker")["Fn::Join"][1]  # the head's IP
    assert template["Outputs"]["InstanceIds"]["Value"] == head + worker
    # no list of a two-instance group is indexed anywhere
    assert '"1", {"Fn::GetAtt"' not in json.dumps(template)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_every_wait_is_derived_and_no_outer_wait_is_shorter_than_an_inner_one(engine: str) -> None:
    for kw in ({"model": "Qwen/QwQ-32B"}, {"model": "deepseek-ai/DeepSeek-R1", "nodes": 2}):
        spec = resolve(cloud_spec(**kw, engine=engine))
        res = render_template(spec)["Resources"]
        script = bootstrap.render_bootstrap(spec)
        ready_timeout = int(re.search(r"READY_TIMEOUT=(\d+)", script).group(1))
        ray_wait = int(re.search(r"RAY_WAIT=(\d+)", script).group(1))
        assert ready_timeout == budget.load_s(spec)
        for name, r in res.items():
            if r["Type"] == "ALIYUN::ECS::RunCommand":
                role = r["Properties"]["Name"].rsplit("-", 1)[-1]
                assert r["Properties"]["Timeout"] == budget.role_timeout_s(spec, next(
                    x for x in bootstrap.roles(spec) if x.endswith(role))), name
        if spec.placement.nodes == 2 and engine == "vllm":
            assert res["RayHead"]["Properties"]["Timeout"] > ray_wait
            assert res["Ready"]["Properties"]["Timeout"] >= ready_timeout + ray_wait
        assert res["Ready"]["Properties"]["Timeout"] >= ready_timeout
        assert budget.stack_minutes(spec) * 60 > sum(
            r["Properties"]["Timeout"] for r in res.values() if r["Type"] == "ALIYUN::ROS::WaitCondition")


def test_the_wait_grows_with_a_slow_download() -> None:
    fast = resolve(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2, bandwidth_mbps=200))
    slow = resolve(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2, bandwidth_mbps=180))
    assert budget.prepare_s(slow) > budget.prepare_s(fast) > 3600 * 9
    assert render_template(slow)["Resources"]["Prepared"]["Properties"]["Timeout"] == budget.prepare_s(slow)


def _ingress(**placement) -> list[dict]:
    return render_template(cloud_spec(**placement))["Resources"]["SecurityGroup"]["Properties"]["SecurityGroupIngress"]


def test_private_deployment_opens_the_port_to_the_vpc_only_and_no_ssh() -> None:
    rules = _ingress()
    assert [(r["PortRange"], r["SourceCidrIp"]) for r in rules] == [("8080/8080", "192.168.0.0/16")]


def test_public_deployment_opens_the_port_to_allow_cidr_and_ssh_only_when_asked() -> None:
    rules = _ingress(public=True)
    assert ("8080/8080", {"Ref": "AllowCidr"}) in [(r["PortRange"], r["SourceCidrIp"]) for r in rules]
    assert not any(r["PortRange"] == "22/22" for r in rules)
    template = render_template(cloud_spec(public=True))
    assert template["Parameters"]["AllowCidr"]["Default"] == "0.0.0.0/0"
    narrowed = render_template(cloud_spec(public=True, allow_cidr="203.0.113.0/24"))
    assert narrowed["Parameters"]["AllowCidr"]["Default"] == "203.0.113.0/24"
    ssh = [r for r in narrowed["Resources"]["SecurityGroup"]["Properties"]["SecurityGroupIngress"] if r["PortRange"] == "22/22"]
    assert ssh and ssh[0]["SourceCidrIp"] == {"Ref": "AllowCidr"}


def test_existing_network_creates_no_vpc() -> None:
    template = render_template(cloud_spec(vpc_id="vpc-abc", vswitch_id="vsw-abc", zone="cn-hangzhou-i"))
    assert "Vpc" not in template["Resources"] and "VSwitch" not in template["Resources"]
    assert template["Parameters"]["VpcId"]["Default"] == "vpc-abc"
    assert template["Resources"]["Nodes"]["Properties"]["VSwitchId"] == {"Ref": "VSwitchId"}
    assert check_template(template, VALUES) == []


def test_system_disk_is_sized_from_the_weights() -> None:
    small = render_template(cloud_spec("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"))
    large = render_template(cloud_spec("deepseek-ai/DeepSeek-R1-Distill-Llama-70B"))["Parameters"]["SystemDiskSize"]
    disk = small["Parameters"]["SystemDiskSize"]
    assert disk["Default"] == 80  # the seed's 80 GB for a 7B
    assert large["Default"] >= 131 * 1.2 + 60  # 70B bf16 is 131 GiB of weights, +20 % and the OS/image
    assert disk["MinValue"] == disk["Default"] and disk["MaxValue"] == 500  # ROS: a system disk is 20-500 GiB
    assert "DiskMappings" not in small["Resources"]["Nodes"]["Properties"]


def test_weights_beyond_the_system_disk_get_a_data_disk_the_bootstrap_mounts() -> None:
    spec = resolve(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2))
    template = render_template(spec)
    assert template["Parameters"]["SystemDiskSize"]["Default"] == 60
    disks = template["Resources"]["Nodes"]["Properties"]["DiskMappings"]
    assert len(disks) == 1 and disks[0]["Category"] == "cloud_essd" and int(disks[0]["Size"]) >= 625 * 1.2
    assert check_template(template, VALUES) == []
    from llmnest.targets.aliyun.bootstrap import bootstrap_body
    assert "  DATA_DISK=1 \\\n" in bootstrap_body(spec, "prepare") and "mount_data_disk" in bootstrap_body(spec)


def test_weights_no_disk_holds_are_refused_before_any_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmnest.targets.aliyun import sizing
    from llmnest.errors import BadInput

    monkeypatch.setattr(sizing, "MAX_DATA_DISK_GIB", 500)
    with pytest.raises(BadInput, match=r"DeepSeek-R1's weights need a .* GiB disk, more than ECS's 500 GiB"):
        resolve(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2))


def test_the_instance_type_choice_keeps_to_types_the_rendered_command_fits() -> None:
    spec = resolve(cloud_spec("Qwen/QwQ-32B", instance_type="ecs.gn7e-c16g1.4xlarge"))
    allowed = render_template(spec)["Parameters"]["InstanceType"]["AllowedValues"]
    assert "ecs.gn7e-c16g1.4xlarge" in allowed
    shapes = {instance(t).gpus for t in allowed}
    assert shapes == {1} and spec.tensor_parallel_size == 1  # no 2-, 4- or 8-GPU type under TP 1
    eight = resolve(cloud_spec("Qwen/Qwen3-235B-A22B", instance_type="ecs.ebmgn8v.48xlarge"))
    allowed8 = render_template(eight)["Parameters"]["InstanceType"]["AllowedValues"]
    assert allowed8 and all(instance(t).gpus == 8 and needs_fabric_manager(instance(t)) for t in allowed8)


def test_nvswitch_types_start_the_fabric_manager() -> None:
    from llmnest.targets.aliyun.bootstrap import bootstrap_body

    assert needs_fabric_manager(instance("ecs.ebmgn8v.48xlarge")) and needs_fabric_manager(instance("ecs.ebmgn7e.32xlarge"))
    assert not needs_fabric_manager(instance("ecs.gn7i-8x.16xlarge"))  # 8 PCIe A10s: no NVSwitch
    assert not needs_fabric_manager(instance("ecs.gn7e-c16g1.4xlarge"))
    body = bootstrap_body(resolve(cloud_spec("Qwen/Qwen3-235B-A22B", instance_type="ecs.ebmgn8v.48xlarge")))
    assert "  NVSWITCH=1 \\\n" in body


def test_public_outputs_exist_only_with_a_public_ip() -> None:
    outputs = render_template(cloud_spec(public=True))["Outputs"]
    assert outputs["PublicEndpoint"]["Condition"] == outputs["PublicCurl"]["Condition"] == "HasPublicIp"
    assert "Condition" not in outputs["PrivateEndpoint"]


@pytest.mark.parametrize(("password", "ok"), [
    ("Llm#nest-2026", True), ("abcDEF123", True), ("abc#def#123", True), ("ABC#DEF#123", True),
    ("abcdefgh", False), ("abcdEFGH", False), ("abcd1234", False), ("ab#1", False), ("a" * 31, False), ("", True),
])
def test_password_pattern_asks_for_three_kinds_as_ecs_does(password: str, ok: bool) -> None:
    template = render_template(cloud_spec())
    problems = check_parameters(template, {"ZoneId": "z", "InstancePassword": password})
    assert (problems == []) == ok, problems


def test_prepaid_sets_period_through_conditions() -> None:
    template = render_template(cloud_spec(pay="prepaid", period_months=3))
    assert template["Parameters"]["PayType"]["Default"] == "PrePaid"
    assert template["Parameters"]["PeriodMonths"]["Default"] == 3
    props = template["Resources"]["Nodes"]["Properties"]
    assert props["Period"] == {"Fn::If": ["IsPrepaid", {"Ref": "PeriodMonths"}, {"Ref": "ALIYUN::NoValue"}]}


def test_no_api_key_means_no_key_parameter_resource_or_output() -> None:
    template = render_template(cloud_spec(public=True).model_copy(update={"api_key_enabled": False}))
    assert "ApiKey" not in template["Parameters"] and "ApiKey" not in template["Outputs"]
    assert "GeneratedApiKey" not in template["Resources"]
    assert "Authorization" not in json.dumps(template["Outputs"])
    assert check_template(template, {"ZoneId": "z"}) == []


def test_parameters_are_masked_for_display() -> None:
    template = render_template(cloud_spec())
    values = stack_parameters(resolve(cloud_spec()), KEY, PASSWORD)
    shown = masked(template, {"ZoneId": "cn-hangzhou-i", **values})
    assert shown == {"ZoneId": "cn-hangzhou-i", "ApiKey": "******", "InstancePassword": "******"}


def test_definitions_come_from_the_published_packages() -> None:
    types = json.loads((resources.files("llmnest.targets.aliyun") / "ros/resource_types.json").read_text())["types"]
    for name, definition in types.items():
        assert definition["source"].startswith(("npm @alicloud/ros-cdk-", "aliyun/ros-templates@")), name
    assert types["ALIYUN::ECS::InstanceGroup"]["source"].startswith("npm @alicloud/ros-cdk-ecs@")
    random = types["ALIYUN::RandomString"]
    assert random["source"].startswith("aliyun/ros-templates@") and random["attributes"] == ["value"]
    assert {"length", "character_classes"} <= set(random["properties"])
    defs = definitions()
    assert defs["ALIYUN::ECS::InstanceGroup"]["properties"]["MaxAmount"]["required"] is True
    assert "CurlCli" in defs["ALIYUN::ROS::WaitConditionHandle"]["attributes"]


# ---- the checker catches mistakes (so the passing checks above mean something)


@pytest.fixture
def template() -> dict:
    return copy.deepcopy(render_template(cloud_spec(public=True)))


def test_checker_rejects_names_no_source_has(template: dict) -> None:
    """The names this template used to write for ALIYUN::RandomString: no published source has them."""
    key = template["Resources"]["GeneratedApiKey"]
    key["Properties"] = {"Length": 29, "CharacterClasses": [{"Class": "lowercase", "Min": 1}]}
    template["Outputs"]["ApiKey"]["Value"] = {"Fn::GetAtt": ["GeneratedApiKey", "Value"]}
    template["Outputs"]["PublicCurl"]["Condition"] = "NoSuchCondition"
    problems = check_properties(template) + check_references(template)
    assert "GeneratedApiKey: unknown property 'Length'" in problems
    assert "GeneratedApiKey: unknown property 'CharacterClasses'" in problems
    assert "ALIYUN::RandomString has no attribute 'Value' (Fn::GetAtt GeneratedApiKey)" in problems
    assert "output PublicCurl names unknown condition 'NoSuchCondition'" in problems


def test_checker_catches_a_dangling_ref_and_getatt(template: dict) -> None:
    template["Resources"]["Nodes"]["Properties"]["ImageId"] = {"Ref": "NoSuchParameter"}
    template["Outputs"]["PrivateEndpoint"]["Value"] = {"Fn::GetAtt": ["Nodes", "NoSuchAttribute"]}
    problems = check_references(template)
    assert any("NoSuchParameter" in p for p in problems) and any("NoSuchAttribute" in p for p in problems)


def test_checker_catches_unknown_missing_and_mistyped_properties(template: dict) -> None:
    props = template["Resources"]["Nodes"]["Properties"]
    props["InstanceTypo"] = "x"
    del props["InstanceType"]
    props["MaxAmount"] = "two"
    template["Resources"]["SecurityGroup"]["Properties"]["SecurityGroupIngress"][0]["IpProtocol"] = "sctp"
    problems = "\n".join(check_properties(template))
    for expected in ("unknown property 'InstanceTypo'", "missing required property 'InstanceType'",
                     "MaxAmount: expected number", "'sctp' is not one of"):
        assert expected in problems


def test_checker_catches_parameter_violations(template: dict) -> None:
    problems = "\n".join(check_parameters(template, {"ZoneId": "z", "ApiKey": "bad key with spaces",
                                                     "BandwidthMbps": "500", "Nope": "1"}))
    assert "parameter ApiKey: value does not match" in problems
    assert "parameter BandwidthMbps: 500 is above 200" in problems
    assert "unknown parameter 'Nope'" in problems
    assert "parameter ZoneId has no default" in "\n".join(check_parameters(template, {}))


def test_checker_catches_a_secret_in_plain_sight(template: dict) -> None:
    template["Outputs"]["ApiKey"]["NoEcho"] = False
    template["Parameters"]["InstancePassword"]["NoEcho"] = False
    problems = check_secrets(template)
    assert "output ApiKey carries a secret but is not NoEcho" in problems
    assert "parameter InstancePassword looks secret but is not NoEcho" in problems


def test_default_image_is_the_newest_ubuntu_of_its_family_and_image_id_overrides() -> None:
    default = render_template(cloud_spec())
    assert default["Parameters"]["ImageFamily"]["Default"] == "acs:ubuntu_22_04_x64"
    assert default["Resources"]["Nodes"]["Properties"]["ImageFamily"] == {"Ref": "ImageFamily"}
    assert "ImageId" not in default["Resources"]["Nodes"]["Properties"]
    own = render_template(cloud_spec(image_id="m-gpu-image"))
    assert own["Parameters"]["ImageId"]["Default"] == "m-gpu-image"
    assert own["Resources"]["Nodes"]["Properties"]["ImageId"] == {"Ref": "ImageId"}
    assert "ImageFamily" not in own["Resources"]["Nodes"]["Properties"]
    assert check_template(own, {"ZoneId": "cn-hangzhou-k"}) == []
