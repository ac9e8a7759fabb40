"""The real CLI (`python -m llmnest`) on the aliyun target, against tests/aliyun_emulator.py: an
EMULATION of the ROS and ECS APIs on 127.0.0.1 (no cloud is reachable from the test machine)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.aliyun_emulator import ACCESS_KEY_ID, ACCESS_KEY_SECRET, Emulator
from tests.conftest import cli_env, free_port, run_cli
from tests.fakes.shims import unpacked

UP = ("up", "Qwen/QwQ-32B", "--target", "aliyun", "--region", "cn-hangzhou")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = cli_env(tmp_path / "home")
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_PROFILE"):
        base.pop(name, None)
    return {**base, "HOME": str(tmp_path), "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
            "LLMNEST_ALIYUN_POLL_SECONDS": "0"}


def test_dry_run_json_without_credentials(env: dict[str, str]) -> None:
    done = run_cli(env, *UP, "--dry-run", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["template"]["ROSTemplateFormatVersion"] == "2015-09-01"
    checks = {c["check"]: c["ok"] for c in out["preflight"]}
    assert checks == {"plan": True, "template": True, "credentials": False, "stock": None, "price": None}
    assert out["parameters"]["ApiKey"] == "******"


def test_dry_run_for_a_person_shows_template_parameters_and_checks(env: dict[str, str]) -> None:
    done = run_cli(env, *UP, "--api-key", "sk-dry-run-secret-1234", "--dry-run", timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.index("# ROS template") < out.index("# Parameters") < out.index("# Preflight")
    assert "ROSTemplateFormatVersion: '2015-09-01'" in out and "Default: acs:ubuntu_22_04_x64" in out
    assert "ApiKey = ******" in out and "sk-dry-run-secret-1234" not in out + done.stderr
    assert "[FAIL] credentials  no Alibaba Cloud credentials found" in out and "[skip] price" in out
    assert "Add --json" in out


def test_dry_run_validate_has_ros_check_the_stack_and_creates_nothing(env: dict[str, str]) -> None:
    emu = Emulator().start()
    try:
        env = {**env, "LLMNEST_ALIYUN_ENDPOINT": emu.url, "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
               "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET}
        done = run_cli(env, "up", "deepseek-ai/DeepSeek-R1", "--nodes", "2", "--target", "aliyun", "--region",
                       "cn-hangzhou", "--dry-run", "--validate", timeout=180)
        assert done.returncode == 0, done.stderr
        assert "[ok  ] ros-validate ROS ValidateTemplate accepts the template" in done.stdout
        assert "[ok  ] ros-preview  ROS PreviewStack plans" in done.stdout
        assert "ValidateTemplate" in emu.calls and "PreviewStack" in emu.calls and emu.stacks == {}
        alone = run_cli(env, *UP, "--validate", timeout=120)
        assert alone.returncode == 2 and "--validate is for --dry-run" in alone.stderr
    finally:
        emu.stop()


def test_show_of_a_model_not_yet_deployed_points_to_the_dry_run(env: dict[str, str]) -> None:
    done = run_cli(env, "show", "Qwen/QwQ-32B", "--as", "ros", timeout=120)
    assert done.returncode == 4 and done.stdout == ""
    assert "`llmnest up Qwen/QwQ-32B --target aliyun --region REGION --dry-run`" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_up_status_logs_down_against_the_emulated_cloud(env: dict[str, str]) -> None:
    emu = Emulator().start()
    try:
        env = {**env, "LLMNEST_ALIYUN_ENDPOINT": emu.url, "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
               "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET}
        # the "public" IP is 127.0.0.1: a free port, so the status probe reaches nothing of anyone's
        up = run_cli(env, *UP, "--public", "--port", str(free_port()), "--yes", "--json", timeout=120)
        assert up.returncode == 0, up.stderr
        result = json.loads(up.stdout)
        assert result["status"] == "ready" and result["api_key"].startswith("sk-")
        assert "Price preview" in up.stderr and "[7/7] Ready (ALIYUN::ROS::WaitCondition) created" in up.stderr
        assert result["api_key"] not in up.stderr
        shown = run_cli(env, "show", "qwq-32b", "--as", "ros", timeout=120)
        assert shown.returncode == 0 and "ALIYUN::ROS::WaitCondition" in shown.stdout
        status = run_cli(env, "status", "qwq-32b", "--json", timeout=120)
        info = json.loads(status.stdout)
        assert info["cloud"]["stack_status"] == "CREATE_COMPLETE"
        assert info["status"] == info["cloud"]["status"] == "unreachable" and info["log"] is None  # nothing listens
        shown = [line.strip() for line in run_cli(env, "status", "qwq-32b", timeout=120).stdout.splitlines()]
        assert "status  unreachable" in shown and "stack_status  CREATE_COMPLETE" in shown
        assert "probe  ok=False stage=down detail=ConnectError" in shown
        follow = run_cli(env, "logs", "qwq-32b", "-f", timeout=120)
        assert follow.returncode == 2 and "run `llmnest logs qwq-32b --tail N` again" in follow.stderr
        emu.instance_logs = ["INFO: Application startup complete."]
        logs = run_cli(env, "logs", "qwq-32b", "--tail", "5", timeout=120)
        assert logs.stdout.strip() == "INFO: Application startup complete."
        restart = run_cli(env, "restart", "qwq-32b", timeout=120)  # the bootstrap again on the instance
        assert restart.returncode == 0 and "running the bootstrap (single) on i-emul" in restart.stderr
        assert len(emu.invocations) == 2  # logs, then restart: nothing ran on this machine
        redeploy = run_cli(env, "redeploy", "qwq-32b", "--set", "max_model_len=8192", "--json", timeout=120)
        assert redeploy.returncode == 0, redeploy.stderr
        again = json.loads(redeploy.stdout)
        assert again["api_key"] == result["api_key"] and again["base_url"] == result["endpoints"][0]["base_url"]
        assert "--max-model-len 8192" in unpacked(list(emu.invocations.values())[-1]["script"])
        down = run_cli(env, "down", "qwq-32b", "--yes", timeout=120)
        assert down.returncode == 0 and "deleted Nodes (ALIYUN::ECS::InstanceGroup)" in down.stderr
        assert all(s.status == "DELETE_COMPLETE" for s in emu.stacks.values())
    finally:
        emu.stop()


def test_cloud_flags_without_the_cloud_target_are_refused(env: dict[str, str]) -> None:
    done = run_cli(env, "up", "smollm2-135m", "--region", "cn-hangzhou", "--zone", "cn-hangzhou-h", timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == ("error: --region, --zone are for --target aliyun: add --target aliyun, "
                                   "or drop them to deploy on this machine")
    done = run_cli(env, "up", "smollm2-135m", "--dry-run", timeout=120)
    assert done.returncode == 2 and done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
    assert "--dry-run does not apply with --target local: on this machine nothing is rendered ahead" in done.stderr
    for args in (["--target", "nowhere"], ["--target", "local", "--force", "--target", "aliyun", "--region", "x"]):
        done = run_cli(env, "up", "smollm2-135m", *args, timeout=120)
        assert done.returncode == 2 and done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "unknown --target 'nowhere': use local, aliyun or kubernetes" in run_cli(env, "up", "--target", "nowhere").stderr


def test_missing_permission_is_one_line_and_exit_1(env: dict[str, str]) -> None:
    emu = Emulator().start()
    emu.denied.add("DescribeAvailableResource")
    try:
        env = {**env, "LLMNEST_ALIYUN_ENDPOINT": emu.url, "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
               "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET}
        done = run_cli(env, *UP, "--yes", timeout=120)
    finally:
        emu.stop()
    assert done.returncode == 1
    assert "attach the AliyunECSFullAccess policy" in done.stderr and "Traceback" not in done.stderr


KEY_LINES = (  # where a script may name the key: shell builtins, assignments and the script's own functions
    "LLMNEST_API_KEY='", "printf ", 'if [[ -n "${LLMNEST_API_KEY:-}" ]]', 's=${s//"$LLMNEST_API_KEY"/[api key]}',
    'wait_chat "$PORT" "$LLMNEST_API_KEY"',
)


def _role_scripts(template: dict) -> dict[str, tuple[bool, str]]:
    """RunCommand name -> (Sync, the script bash runs, stack values as a stand-in word)."""
    out = {}
    for name, res in template["Resources"].items():
        if res["Type"] == "ALIYUN::ECS::RunCommand":
            parts = res["Properties"]["CommandContent"]["Fn::Join"][1]
            text = "".join(p if isinstance(p, str) else "STACKVALUE" for p in parts)
            out[name] = (res["Properties"]["Sync"], unpacked(text))
    return out


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@pytest.mark.parametrize("edition", [("Qwen/QwQ-32B",), ("deepseek-ai/DeepSeek-R1", "--nodes", "2")])
def test_dry_run_bars(env: dict[str, str], engine: str, edition: tuple[str, ...]) -> None:
    """Issue 24's bars on `up --target aliyun --dry-run`: no synchronous command that can reboot, no user
    key on any command line, a toolkit source reachable in mainland China first, no eRDMA claimed."""
    key = "sk-dry-run-bar-key-0123"
    done = run_cli(env, "up", *edition, "--engine", engine, "--target", "aliyun", "--region", "cn-hangzhou",
                   "--api-key", key, "--dry-run", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    scripts = _role_scripts(out["template"])
    assert scripts and key not in done.stdout
    for name, (sync, script) in scripts.items():
        if sync:  # a synchronous RunCommand must not be able to reboot its instance
            assert "exit 194" not in script and "install_driver" not in script and "mig_off" not in script, name
        for line in script.splitlines():
            if "LLMNEST_API_KEY" in line and not line.lstrip().startswith(": "):
                assert line.strip().startswith(KEY_LINES), (name, line)
        assert not re.search(r"--api-key\s+\S*(LLMNEST_API_KEY|STACKVALUE)", script), name
        if "install_container_toolkit" in script:
            sources = script.split("LLMNEST_TOOLKIT_SOURCES:-", 1)[1].split('}"', 1)[0].split()
            assert sources[0].split("|")[1].startswith("https://developer.download.nvidia.cn/"), name
            assert len(sources) > 2 and not sources[0].split("|")[1].startswith("https://nvidia.github.io"), name
        assert "VLLM_API_KEY=$(engine_key)" in script or "VLLM_API_KEY" not in script, name  # the engine's own key
    whole = json.dumps(out)
    assert "NCCL_IB" not in whole and "erdma" not in whole.lower()
    serving = [script for sync, script in scripts.values() if "start_gateway" in script]
    assert serving and all("--host 127.0.0.1" in s and "METRICS_FROM=192.168.0.0/16" in s for s in serving)
