"""deploy / status / logs / redeploy / down through the official SDK clients, for real, against
tests/aliyun_emulator.py: an EMULATION of the ROS and ECS RPC APIs on 127.0.0.1 that checks request
signatures (no Alibaba Cloud endpoint is reachable from the test machine)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path

import pytest

from llmnest import lifecycle, state
from llmnest.targets.aliyun import client, service
from llmnest.errors import BadInput, Conflict, LlmnestError
from tests.aliyun_emulator import ACCESS_KEY_ID, ACCESS_KEY_SECRET, Emulator
from tests.conftest import free_port
from tests.fakes.cloud_specs import cloud_spec
from tests.fakes.fake_engine import serve
from tests.fakes.shims import unpacked

KEY = "sk-service-test-key-0123"


def _credentials_env(monkeypatch: pytest.MonkeyPatch, home: Path, key_id: str | None, secret: str | None) -> None:
    """Set the credential chain's inputs. The SDK reads them once, at import, so set what it read too."""
    from alibabacloud_credentials.utils import auth_constant, auth_util

    monkeypatch.setenv("HOME", str(home))  # no ~/.aliyun profile of the machine leaks in
    monkeypatch.setattr(auth_constant, "HOME", str(home))
    values = {"ALIBABA_CLOUD_ACCESS_KEY_ID": ("environment_access_key_id", key_id),
              "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ("environment_access_key_secret", secret),
              "ALIBABA_CLOUD_ECS_METADATA_DISABLED": ("environment_ecs_metadata_disabled", "true")}
    for var, (attr, value) in values.items():
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
        monkeypatch.setattr(auth_util, attr, value)
    for attr in ("environment_security_token", "environment_profile_name", "environment_credentials_file"):
        monkeypatch.setattr(auth_util, attr, None)


def _base_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "llmnest"))
    monkeypatch.setenv(service.POLL_ENV, "0")
    _credentials_env(monkeypatch, tmp_path, None, None)


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    _base_env(monkeypatch, tmp_path)
    emulator = Emulator().start()
    monkeypatch.setenv(client.ENDPOINT_ENV, emulator.url)
    _credentials_env(monkeypatch, tmp_path, ACCESS_KEY_ID, ACCESS_KEY_SECRET)
    yield emulator
    emulator.stop()


@pytest.fixture
def engine():
    """A fake model server the emulated instance's public IP (127.0.0.1) leads to."""
    port = free_port()
    server = serve(port, KEY, "Qwen/QwQ-32B")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port
    server.shutdown()
    server.server_close()


class Recorder:
    def __init__(self, answer: bool = True) -> None:
        self.lines: list[str] = []
        self.questions: list[str] = []
        self.answer = answer

    def say(self, line: str) -> None:
        self.lines.append(line)

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer


def deploy(spec=None, rec: Recorder | None = None, **kw):
    rec = rec or Recorder()
    kw = {"yes": False, "dry_run": False, **kw}
    return service.deploy(spec or cloud_spec(public=True), KEY, None, say=rec.say, confirm=rec.confirm, **kw), rec


# ---- dry run and preflight


def test_dry_run_without_credentials_still_renders_and_says_so(monkeypatch, tmp_path) -> None:
    _base_env(monkeypatch, tmp_path)
    out, rec = deploy(dry_run=True)
    assert set(out) == {"template", "parameters", "bootstrap_script", "preflight"}
    checks = {c["check"]: c for c in out["preflight"]}
    assert checks["credentials"]["ok"] is False and "ALIBABA_CLOUD_ACCESS_KEY_ID" in checks["credentials"]["detail"]
    assert checks["stock"]["ok"] is None and checks["price"]["detail"] == "skipped: credentials failed"
    assert checks["template"]["ok"] is True
    assert out["parameters"]["ApiKey"] == "******" and KEY not in json.dumps(out)
    assert out["bootstrap_script"].startswith("#!/bin/bash")
    assert state.names() == [] and rec.questions == []


def test_dry_run_with_credentials_checks_stock_and_price_and_creates_nothing(emu: Emulator) -> None:
    emu.stock[("cn-hangzhou-h", "ecs.gn7i-4x.8xlarge")] = "SoldOut"
    emu.prices["ecs.gn7i-4x.8xlarge"] = 41.5
    out, _ = deploy(cloud_spec(instance_type="ecs.gn7i-4x.8xlarge"), dry_run=True)
    checks = {c["check"]: c for c in out["preflight"]}
    assert checks["stock"]["detail"] == "ecs.gn7i-4x.8xlarge available in cn-hangzhou-i"
    assert checks["price"]["detail"] == "41.50 CNY/Hour"
    assert out["parameters"]["ZoneId"] == "cn-hangzhou-i"
    assert "CreateStack" not in emu.calls and state.names() == []


def _dry_run_with_password(password: str) -> dict:
    return service.deploy(cloud_spec(), KEY, password, yes=True, dry_run=True, say=print, confirm=print)


@pytest.mark.parametrize("password", ["", "Sh0rt1!", "alllowercase", "lower123only", "Has Space1!", "x" * 28 + "A1!"])
def test_an_instance_password_ecs_would_reject_is_refused_first(monkeypatch, tmp_path, password: str) -> None:
    _base_env(monkeypatch, tmp_path)
    with pytest.raises(BadInput, match="three of: upper case, lower case, digits, special characters"):
        _dry_run_with_password(password)
    assert _dry_run_with_password("Llm#nest-2026")["parameters"]["InstancePassword"] == "******"


def test_no_credentials_on_a_real_deploy_says_how_to_provide_them(monkeypatch, tmp_path) -> None:
    _base_env(monkeypatch, tmp_path)
    with pytest.raises(client.NoCredentials) as err:
        deploy()
    assert "no Alibaba Cloud credentials found: set ALIBABA_CLOUD_ACCESS_KEY_ID" in err.value.message


def test_credentials_from_the_aliyun_cli_profile_are_used(emu: Emulator, monkeypatch, tmp_path) -> None:
    _credentials_env(monkeypatch, tmp_path, None, None)
    (tmp_path / ".aliyun").mkdir()
    (tmp_path / ".aliyun" / "config.json").write_text(json.dumps({"current": "default", "profiles": [{
        "name": "default", "mode": "AK", "access_key_id": ACCESS_KEY_ID, "access_key_secret": ACCESS_KEY_SECRET,
        "region_id": "cn-hangzhou"}]}))
    out, _ = deploy(dry_run=True)
    assert {c["check"]: c["ok"] for c in out["preflight"]} == {"plan": True, "template": True, "credentials": True,
                                                               "stock": True, "price": True}


def test_a_wrong_secret_fails_the_signature_check(emu: Emulator, monkeypatch, tmp_path) -> None:
    _credentials_env(monkeypatch, tmp_path, ACCESS_KEY_ID, "not-the-secret")
    with pytest.raises(client.NoCredentials, match=r"refused the credentials \(SignatureDoesNotMatch\)"):
        deploy()


def test_sold_out_zone_names_zones_to_try(emu: Emulator) -> None:
    emu.stock[("cn-hangzhou-i", "ecs.gn7i-4x.8xlarge")] = "SoldOut"
    with pytest.raises(LlmnestError) as err:
        deploy(cloud_spec(instance_type="ecs.gn7i-4x.8xlarge", zone="cn-hangzhou-i"))
    assert err.value.message == ("ecs.gn7i-4x.8xlarge is not available in zone cn-hangzhou-i (SoldOut); "
                                 "try --zone cn-hangzhou-h or cn-hangzhou-j")


def test_sold_out_region_names_regions_to_try(emu: Emulator) -> None:
    for zone in emu.zones["cn-hangzhou"]:
        emu.stock[(zone, "ecs.gn7i-4x.8xlarge")] = "SoldOut"
    with pytest.raises(LlmnestError, match="no stock in any zone of cn-hangzhou; try --region cn-beijing, cn-shanghai"):
        deploy(cloud_spec(instance_type="ecs.gn7i-4x.8xlarge"))


@pytest.mark.parametrize(("action", "policy"), [("DescribeAvailableResource", "AliyunECSFullAccess"),
                                                 ("GetTemplateEstimateCost", "AliyunROSFullAccess"),
                                                 ("CreateStack", "AliyunROSFullAccess")])
def test_missing_ram_permission_names_the_policy(emu: Emulator, action: str, policy: str) -> None:
    emu.denied.add(action)
    with pytest.raises(client.PermissionDenied) as err:
        deploy(yes=True)
    assert f"attach the {policy} policy" in err.value.message
    assert state.names() == []  # nothing was created, nothing is remembered


def test_an_unreachable_cloud_is_one_line(emu: Emulator, monkeypatch) -> None:
    monkeypatch.setenv(client.ENDPOINT_ENV, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(LlmnestError) as err:
        deploy()
    assert err.value.message.startswith("cannot reach Alibaba Cloud for DescribeAvailableResource: [Errno 111]")


def test_region_the_cloud_does_not_know_is_bad_input(emu: Emulator) -> None:
    with pytest.raises(BadInput, match="Alibaba Cloud does not know that region"):
        deploy(cloud_spec(region="cn-shenzhen"))


# ---- create, fail, outputs


def test_deploy_shows_price_confirms_follows_events_and_records(emu: Emulator, engine: int) -> None:
    emu.prices["ecs.gn7e-c16g1.4xlarge"] = 34.78
    out, rec = deploy(cloud_spec(public=True, port=engine, instance_type="ecs.gn7e-c16g1.4xlarge"))
    assert rec.questions == ["Create stack llmnest-qwq-32b in cn-hangzhou/cn-hangzhou-h at 34.78 CNY/Hour?"]
    assert rec.lines[0] == "Price preview (ROS GetTemplateEstimateCost, cn-hangzhou):"
    assert any("total: 34.78 CNY/Hour" in line for line in rec.lines)
    created = [line for line in rec.lines if re.match(r"\[\d+/\d+\] ", line)]
    assert created[-1] == "[7/7] Ready (ALIYUN::ROS::WaitCondition) created"
    assert [(e["label"], e["base_url"]) for e in out["endpoints"]] == [
        ("public", f"http://127.0.0.1:{engine}/v1"), ("private", f"http://192.168.1.10:{engine}/v1")]
    assert all(e["api_key"] == KEY and e["model"] == "Qwen/QwQ-32B" for e in out["endpoints"])
    assert (out["api_key"], out["status"], out["served_model_name"]) == (KEY, "ready", "Qwen/QwQ-32B")
    dep = state.get("qwq-32b")
    assert dep.status == "ready" and dep.info.stack_id == out["stack_id"] and dep.info.price_per_hour == 34.78
    assert KEY not in dep.info.model_dump_json() and dep.spec.placement.zone == "cn-hangzhou-h"
    assert state.api_key("qwq-32b") == KEY
    stack = emu.stacks[out["stack_id"]]
    assert stack.params["ApiKey"] == KEY and "GeneratedApiKey" not in stack.order


def test_a_long_wait_says_what_is_still_being_created(emu: Emulator, monkeypatch) -> None:
    monkeypatch.setattr(service, "STILL_WAITING_S", 0)
    emu.slow["Ready"] = 3
    _, rec = deploy(yes=True)
    still = [line for line in rec.lines if line.startswith("still creating")]
    assert still and "Ready" in still[0] and "`llmnest logs qwq-32b`" in still[0]


def test_a_long_wait_shows_the_instances_progress(emu: Emulator, monkeypatch) -> None:
    monkeypatch.setattr(service, "STILL_WAITING_S", 0)
    emu.slow["Ready"] = 3
    emu.instance_logs = ["2026-11-25 10:00:00 downloading Qwen/QwQ-32B (attempt 1)", "weights on disk: 23G"]
    _, rec = deploy(yes=True)
    still = [line for line in rec.lines if line.startswith("still creating")]
    assert still[-1].endswith(": Ready; on the instance: weights on disk: 23G")
    peeks = [inv["script"] for inv in emu.invocations.values()]
    assert peeks and all(script.startswith("if docker inspect qwq-32b") for script in peeks)


def test_a_denied_resource_in_the_stack_names_the_policy(emu: Emulator) -> None:
    emu.fail_resource["Vpc"] = "Forbidden.RAM: User not authorized to operate on the specified resource."
    with pytest.raises(LlmnestError) as err:
        deploy(yes=True)
    assert "failed at Vpc (ALIYUN::ECS::VPC): Forbidden.RAM" in err.value.message
    assert "attach the AliyunVPCFullAccess policy" in err.value.message


def test_the_script_the_stack_runs_is_valid_and_keeps_the_key_in_its_preamble(emu: Emulator, engine: int,
                                                                               tmp_path: Path) -> None:
    out, _ = deploy(cloud_spec(public=True, port=engine), yes=True)
    script = emu.stacks[out["stack_id"]].commands["Bootstrap"]
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0
    assert [n for n, line in enumerate(script.splitlines()) if KEY in line] == [2]  # LLMNEST_API_KEY='...'
    assert "llmnest_signal_curl() {\n  curl -X POST" in script


def test_declined_confirmation_creates_nothing(emu: Emulator) -> None:
    with pytest.raises(LlmnestError, match="cancelled: nothing was created"):
        deploy(rec=Recorder(answer=False))
    assert "CreateStack" not in emu.calls and state.names() == []


def test_stack_failure_prints_the_failing_resource_and_reason(emu: Emulator) -> None:
    emu.fail_resource["Ready"] = ("WaitCondition received FAILURE: the engine stopped before it answered"
                                  "\\nERROR: torch.OutOfMemoryError: CUDA out of memory")
    with pytest.raises(LlmnestError) as err:
        deploy(yes=True)
    assert err.value.message.startswith(
        "stack llmnest-qwq-32b failed at Ready (ALIYUN::ROS::WaitCondition): WaitCondition received FAILURE: "
        "the engine stopped before it answered")
    assert "`llmnest down qwq-32b`" in err.value.message
    assert "CUDA out of memory" in err.value.detail
    dep = state.get("qwq-32b")
    assert dep.status == "failed" and dep.info.stack_id in emu.stacks


def test_a_taken_name_is_refused_before_anything_is_created(emu: Emulator) -> None:
    deploy(yes=True)
    calls = len(emu.calls)
    with pytest.raises(Conflict):
        deploy(yes=True)
    assert len(emu.calls) == calls


def test_ctrl_c_while_following_leaves_the_stack_recorded(emu: Emulator) -> None:
    rec = Recorder()

    def interrupt(line: str) -> None:
        rec.lines.append(line)
        if line.startswith("[1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        service.deploy(cloud_spec(), KEY, None, yes=True, dry_run=False, say=interrupt, confirm=rec.confirm)
    dep = state.get("qwq-32b")
    assert dep.info.stack_id in emu.stacks
    assert any("`llmnest status qwq-32b`" in line and "`llmnest down qwq-32b`" in line for line in rec.lines)


def test_ctrl_c_during_create_stack_records_the_stack_it_made(emu: Emulator, monkeypatch) -> None:
    real = client.Cloud.create_stack
    calls = []

    def lost_answer(self, *args, **kwargs):
        calls.append(args)
        stack_id = real(self, *args, **kwargs)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the stack exists, but its id never reached us
        return stack_id

    monkeypatch.setattr(client.Cloud, "create_stack", lost_answer)
    with pytest.raises(KeyboardInterrupt):
        deploy(yes=True)
    assert len(emu.stacks) == 1  # the retry with the same client token did not make a second one
    assert state.get("qwq-32b").info.stack_id == next(iter(emu.stacks))


# ---- lifecycle


@pytest.fixture
def deployed(emu: Emulator, engine: int):
    out, _ = deploy(cloud_spec(public=True, port=engine), yes=True)
    return state.get(out["name"])


def test_status_reports_the_stack_and_probes_the_public_endpoint(deployed, engine: int) -> None:
    out = service.status(deployed)
    assert out["stack_status"] == "CREATE_COMPLETE"
    assert out["probe"] == {"ok": True, "stage": "ready", "detail": ""} and out["status"] == "ready"


def test_bench_targets_the_public_endpoint_with_the_key_and_the_stack_price(deployed, engine: int, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from llmnest.bench.endpoint import resolve_endpoint

    monkeypatch.setenv("LLMNEST_MODELS_DIR", str(tmp_path / "models"))
    tokenizer = tmp_path / "models" / "tokenizers" / "Qwen/QwQ-32B"  # fetched once from the hub (none reachable here)
    tokenizer.mkdir(parents=True)
    (tokenizer / "tokenizer.json").write_text("{}")
    target = resolve_endpoint("qwq-32b", None, None, None, None, None, print)
    assert target.base_url == f"http://127.0.0.1:{engine}/v1" and target.api_key == KEY
    assert target.tokenizer == str(tokenizer)
    assert target.price_per_hour == deployed.info.price_per_hour and target.model == "Qwen/QwQ-32B"


def test_status_notices_an_endpoint_that_does_not_answer(deployed, engine: int, monkeypatch) -> None:
    monkeypatch.setattr(state, "api_key", lambda name: "sk-wrong-key-000")
    out = service.status(deployed)
    assert out["status"] == "unreachable" and out["probe"]["stage"] == "unauthorized"


def test_logs_come_through_cloud_assistant(deployed, emu: Emulator) -> None:
    emu.instance_logs = [f"INFO line {i}" for i in range(50)]
    assert service.logs(deployed, 3) == ["INFO line 47", "INFO line 48", "INFO line 49"]
    script = next(inv["script"] for inv in emu.invocations.values())
    assert script.startswith("if docker inspect qwq-32b >/dev/null 2>&1; then docker logs --tail 3 qwq-32b 2>&1; else")
    emu.instance_logs = [f"server_args=ServerArgs(api_key='{KEY}', tp_size=1)"]
    assert service.logs(deployed, 1) == ["server_args=ServerArgs(api_key='[api key]', tp_size=1)"]


def test_gateway_logs_are_its_units_journal_through_cloud_assistant(deployed, emu: Emulator) -> None:
    """The cloud API is the emulator (a mock: no Alibaba Cloud here); the journal lines are its stand-in output."""
    emu.command_handler = lambda script: (0, "2026-12-01T10:00:00+0800 gw llmnest[1]: gateway on http://0.0.0.0:8080/v1\n")
    assert list(lifecycle.logs("qwq-32b", 5, follow=False, gateway=True)) == [
        "2026-12-01T10:00:00+0800 gw llmnest[1]: gateway on http://0.0.0.0:8080/v1"]
    script = list(emu.invocations.values())[-1]["script"]
    assert script == "journalctl -u llmnest-gateway -n 5 --no-pager -o short-iso 2>&1"


def test_logs_work_after_a_failed_stack_and_say_when_there_is_no_instance_yet(emu: Emulator) -> None:
    emu.fail_resource["Ready"] = "WaitCondition received FAILURE: the engine stopped before it answered"
    with pytest.raises(LlmnestError):
        deploy(yes=True)
    emu.instance_logs = ["ERROR: torch.OutOfMemoryError: CUDA out of memory"]
    dep = state.get("qwq-32b")
    assert service.logs(dep, 10) == ["ERROR: torch.OutOfMemoryError: CUDA out of memory"]
    assert state.get("qwq-32b").info.instance_ids == emu.stacks[dep.info.stack_id].attributes["Nodes"]["InstanceIds"]
    emu.fail_resource = {"Nodes": "ecs.gn7e-c16g1.4xlarge is out of stock (OperationDenied.NoStock)"}
    with pytest.raises(LlmnestError) as err:
        deploy(cloud_spec(name="other"), yes=True)
    assert "failed at Nodes (ALIYUN::ECS::InstanceGroup): ecs.gn7e-c16g1.4xlarge is out of stock" in err.value.message
    with pytest.raises(LlmnestError, match="the instances of other are not created yet"):
        service.logs(state.get("other"), 10)


def test_redeploy_reruns_the_bootstrap_with_the_new_spec_and_same_key(deployed, emu: Emulator) -> None:
    new = deployed.spec.model_copy(update={"max_model_len": 8192})
    rec = Recorder()
    service.redeploy(deployed, new, rec.say)
    script = unpacked(next(inv["script"] for inv in emu.invocations.values()))
    assert "--max-model-len 8192" in script and f"LLMNEST_API_KEY='{KEY}'" in script
    nodes = emu.stacks[deployed.info.stack_id].attributes["Nodes"]
    assert next(inv["instances"] for inv in emu.invocations.values()) == nodes["InstanceIds"]
    assert state.get("qwq-32b").spec.max_model_len == 8192


def test_a_two_node_redeploy_names_the_head_by_its_own_group(emu: Emulator) -> None:
    """Head and worker are one-instance groups: the head's id and IP come from the same group, and
    every role runs on the instance its group names, whatever order a list would have had."""
    deploy(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2, public=True), yes=True)
    dep = state.get("deepseek-r1")
    attrs = emu.stacks[dep.info.stack_id].attributes
    head, worker = attrs["Nodes"], attrs["Worker"]
    emu.invocations.clear()
    service.redeploy(dep, dep.spec, print)
    runs = [(re.search(r"LLMNEST_ROLE=([\w-]+)", inv["script"])[1], inv["instances"], inv["script"])
            for inv in emu.invocations.values()]
    assert [(role, ids) for role, ids, _ in runs] == [
        ("prepare", head["InstanceIds"] + worker["InstanceIds"]), ("ray-head", head["InstanceIds"]),
        ("ray-worker", worker["InstanceIds"]), ("serve", head["InstanceIds"])]
    assert all(f"LLMNEST_HEAD_IP='{head['PrivateIps'][0]}'" in script for _, _, script in runs)
    assert state.get("deepseek-r1").info.instance_ids == head["InstanceIds"] + worker["InstanceIds"]


def test_redeploy_refuses_to_change_the_instances(deployed) -> None:
    new = deployed.spec.model_copy(update={"placement": deployed.spec.placement.model_copy(
        update={"instance_type": "ecs.ebmgn8v.48xlarge"})})
    with pytest.raises(BadInput, match=r"instance_type cannot change"):
        service.redeploy(deployed, new, print)


def test_redeploy_failure_shows_the_output_tail(deployed, emu: Emulator) -> None:
    emu.command_handler = lambda script: (1, "pulling image\nFAILED: the engine stopped before it answered\n")
    with pytest.raises(LlmnestError) as err:
        service.redeploy(deployed, deployed.spec, print)
    assert err.value.message.startswith("redeploy failed at single on i-emul") and "(Failed, exit 1)" in err.value.message
    assert "the engine stopped" in err.value.detail


def test_a_redeploy_that_needs_a_reboot_says_so_and_what_to_do(deployed, emu: Emulator) -> None:
    emu.command_handler = lambda script: (194, "the NVIDIA driver loads after a reboot: rebooting now\n")
    with pytest.raises(LlmnestError) as err:
        service.redeploy(deployed, deployed.spec, print)
    assert err.value.message.startswith("i-emul") and err.value.message.endswith(
        "reboots to load the NVIDIA driver, so the redeploy stopped at single; once it is back, "
        "run `llmnest restart qwq-32b` (or the redeploy) again")


def test_a_run_that_reports_an_exit_code_while_running_is_waited_for(deployed, emu: Emulator) -> None:
    """Finished is InvocationStatus's word, not an ExitCode present: the redeploy waits for the end."""
    emu.running_polls, emu.running_exit_code = 3, 0
    emu.command_handler = lambda script: (1, "FAILED: the engine stopped before it answered\n")
    with pytest.raises(LlmnestError, match=r"\(Failed, exit 1\)"):
        service.redeploy(deployed, deployed.spec, print)
    assert all(inv["polls"] == 4 for inv in emu.invocations.values())


@pytest.mark.parametrize("status", ["Timeout", "Cancelled", "Terminated", "Aborted"])
def test_a_run_that_ends_without_an_exit_code_is_a_failure_not_a_success(deployed, emu: Emulator,
                                                                         status: str) -> None:
    emu.end_status = status
    with pytest.raises(LlmnestError, match=rf"reading the logs failed on i-emul\w+ \({status}\)"):
        service.logs(deployed, 5)


def test_down_confirms_deletes_and_reports(deployed, emu: Emulator) -> None:
    rec = Recorder()
    service.down(deployed, rec.say, rec.confirm)
    assert rec.questions[0].startswith(f"Delete stack {deployed.info.stack_id} in cn-hangzhou with Vpc (ALIYUN::ECS::VPC)")
    assert "deleted Nodes (ALIYUN::ECS::InstanceGroup)" in "\n".join(rec.lines)
    assert emu.stacks[deployed.info.stack_id].status == "DELETE_COMPLETE"
    assert state.names() == []


def test_down_declined_deletes_nothing(deployed, emu: Emulator) -> None:
    with pytest.raises(LlmnestError, match="nothing was deleted"):
        service.down(deployed, print, lambda q: False)
    assert "DeleteStack" not in emu.calls and state.names() == ["qwq-32b"]


def test_status_after_the_stack_is_gone(deployed, emu: Emulator) -> None:
    service.down(deployed, print, lambda q: True)
    out = service.status(deployed)
    assert (out["status"], out["stack_status"]) == ("stopped", "DELETED")


# ---- `up --dry-run --validate`: ROS ValidateTemplate and PreviewStack, nothing created


def _validated(spec) -> list[dict]:
    from llmnest.targets.aliyun.preflight import validate_in_cloud
    from llmnest.targets.aliyun.sizing import resolve
    from llmnest.targets.aliyun.template import render_template, stack_parameters

    spec = resolve(spec)
    template = render_template(spec)
    return validate_in_cloud(spec, template, {"ZoneId": "cn-hangzhou-i", **stack_parameters(spec, KEY, None)})


@pytest.mark.parametrize("kw", [{}, {"model": "deepseek-ai/DeepSeek-R1", "nodes": 2, "public": True}])
def test_validate_asks_ros_to_check_and_preview_and_creates_nothing(emu: Emulator, kw: dict) -> None:
    checks = _validated(cloud_spec(**kw))
    assert [(c["check"], c["ok"]) for c in checks] == [("ros-validate", True), ("ros-preview", True)]
    assert "ROS PreviewStack plans" in checks[1]["detail"] and "ALIYUN::ECS::InstanceGroup" in checks[1]["detail"]
    assert emu.calls == ["ValidateTemplate", "PreviewStack"] and emu.stacks == {}


def test_validate_reports_what_ros_rejects_and_skips_the_preview(emu: Emulator, monkeypatch) -> None:
    from llmnest.targets.aliyun import template as tpl

    real = tpl.render_template
    spec = cloud_spec()

    def with_old_names(s):  # the RandomString names this template wrote before: no published source has them
        t = real(s)
        t["Resources"]["GeneratedApiKey"]["Properties"] = {"Length": 29}
        return t

    monkeypatch.setattr(tpl, "render_template", with_old_names)
    checks = _validated(spec)
    assert checks[0]["ok"] is False and "unknown property 'Length'" in checks[0]["detail"]
    assert checks[1] == {"check": "ros-preview", "ok": None, "detail": "skipped: ros-validate failed"}
    assert emu.calls == ["ValidateTemplate"]


def test_validate_without_credentials_says_how_to_log_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _base_env(monkeypatch, tmp_path)
    checks = _validated(cloud_spec())
    assert checks[0]["ok"] is False and "no Alibaba Cloud credentials found" in checks[0]["detail"]
    assert checks[1]["ok"] is None


def test_dry_run_validate_adds_ros_checks_to_the_preflight(emu: Emulator) -> None:
    result = service.deploy(cloud_spec(), KEY, None, yes=True, dry_run=True, say=Recorder().say,
                            confirm=lambda q: True, validate=True)
    names = [c["check"] for c in result["preflight"]]
    assert names[-2:] == ["ros-validate", "ros-preview"] and all(c["ok"] for c in result["preflight"])
    assert emu.stacks == {}
    with pytest.raises(BadInput, match="--validate is for --dry-run"):
        service.deploy(cloud_spec(), KEY, None, yes=True, dry_run=False, say=Recorder().say,
                       confirm=lambda q: True, validate=True)
