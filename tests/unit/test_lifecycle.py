"""The lifecycle dispatches to targets and refuses what a target cannot do before anything happens."""

from __future__ import annotations

import inspect

import pytest

from llmnest import lifecycle, state, targets
from llmnest.spec_builder import UpRequest
from llmnest.errors import BadInput
from llmnest.targets import Capability, Context, Target, registry


def test_every_target_implements_every_verb_and_declares_an_option_one_way():
    seen: dict[str, tuple[str, str]] = {}
    for name in targets.names():
        target = targets.get(name)
        assert target.name == name and target.place and not inspect.isabstract(type(target))
        assert target.declaration is registry.declaration(name)
        for option in target.declaration.options:  # two targets may share an option, spelled the same
            flag, owner = seen.setdefault(option.param_name, (option.flag, name))
            assert flag == option.flag, f"{option.param_name} is {flag} for {owner} and {option.flag} for {name}"
        assert set(target.unsupported) <= set(Capability)
    with pytest.raises(BadInput, match="unknown --target 'k8s': use local, aliyun or kubernetes"):
        targets.get("k8s")


def test_options_of_another_target_are_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path))
    req = UpRequest(model="smollm2-135m", options={"instance_type": "ecs.gn7i-c8g1.2xlarge"})
    with pytest.raises(BadInput, match=r"^--instance-type is for --target aliyun: add --target aliyun, or drop it "
                                       r"to deploy on this machine$"):
        lifecycle.up(req, Context())
    assert state.names() == []


@pytest.mark.parametrize(("target", "ctx", "message"), [
    ("local", Context(dry_run=True), "--dry-run does not apply with --target local"),
    ("aliyun", Context(force=True), "--force does not apply with --target aliyun: on the cloud the instance type"),
])
def test_a_capability_the_target_lacks_is_refused_first(target, ctx, message, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path))
    options = {"region": "cn-hangzhou"} if target == "aliyun" else {}
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        lifecycle.up(UpRequest(model="Qwen/QwQ-32B", target=target, options=options), ctx)
    assert state.names() == []


def test_follow_logs_on_the_cloud_is_refused_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path))
    resolved = targets.get("aliyun").resolve(UpRequest(model="Qwen/QwQ-32B", target="aliyun",
                                                       options={"region": "cn-hangzhou"}))
    state.create(resolved.spec, resolved.api_key)
    with pytest.raises(BadInput, match="--follow does not apply to qwq-32b, which runs on Alibaba Cloud: qwq-32b.s log "
                                       "is fetched through Cloud "
                                       "Assistant; run `llmnest logs qwq-32b --tail N` again"):
        lifecycle.logs("qwq-32b", 10, follow=True)
    with pytest.raises(BadInput, match="--follow does not apply to qwq-32b"):  # the gateway's log neither
        lifecycle.logs("qwq-32b", 10, follow=True, gateway=True)
    with pytest.raises(BadInput, match="qwq-32b runs one engine on its instance: leave --replica out"):
        list(lifecycle.logs("qwq-32b", 10, follow=False, replica=1))
    with pytest.raises(BadInput, match="--as ros exists for --target aliyun"):
        state.create(resolved.spec.model_copy(update={"name": "here", "target": "local", "placement": None,
                                                      "runtime": "process"}), None)
        lifecycle.show("here", "ros")


def test_the_target_base_declares_the_fixed_verbs():
    verbs = {"resolve", "render", "create", "where", "status", "endpoints", "logs", "show", "restart", "redeploy", "down"}
    assert verbs <= Target.__abstractmethods__


def test_the_admin_of_a_deployments_gateway_comes_from_its_target(tmp_path, monkeypatch):
    """This machine's gateway for a local deployment, the target's channel for a cloud one, none without a key."""
    from llmnest.errors import NotFound
    from llmnest.gateway.admin import LocalAdmin
    from llmnest.gateway.remote_admin import RemoteAdmin

    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path))
    local = targets.get("local").resolve(UpRequest(model="smollm2-135m"))
    state.create(local.spec, local.api_key)
    assert isinstance(lifecycle.gateway_admin(local.spec.name), LocalAdmin)
    for name, key in (("keyed", True), ("open", False)):
        resolved = targets.get("aliyun").resolve(UpRequest(model="Qwen/QwQ-32B", target="aliyun", name=name,
                                                           no_api_key=not key, insecure=not key,
                                                           options={"region": "cn-hangzhou"}))
        state.create(resolved.spec, resolved.api_key)
    admin = lifecycle.gateway_admin("keyed")
    assert isinstance(admin, RemoteAdmin) and not admin.local and admin.deployment == "keyed"
    with pytest.raises(BadInput, match="open has no API key, so no gateway runs in front of its engine"):
        lifecycle.gateway_admin("open")
    with pytest.raises(NotFound):
        lifecycle.gateway_admin("nowhere")
