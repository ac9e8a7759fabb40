"""The CLI as a user meets it: help, JSON, and one clear line with a reliable exit code for bad input."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import cli_env, run_cli


def assert_one_line_error(done, code: int, *needles: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in done.stderr


def test_help_lists_every_command(cli):
    out = cli("--help").stdout
    for command in ["up", "ls", "status", "logs", "show", "restart", "redeploy", "down", "models"]:
        assert f" {command} " in out
    up_help = cli("up", "--help").stdout
    for option in ["--engine", "--runtime", "--host", "--port", "--api-key", "--no-api-key", "--max-model-len",
                   "--set", "--json", "--target", "--region", "--dry-run"]:
        assert option in up_help


def test_models_json_is_the_catalog(cli):
    models = json.loads(cli("models", "--json").stdout)
    keys = {m["key"] for m in models}
    assert {"Qwen/QwQ-32B", "smollm2-135m", "Qwen/Qwen3-8B"} <= keys
    assert all({"modelscope_id", "hf_id", "params", "layers", "kv_heads", "head_dim"} <= m.keys() for m in models)


@pytest.mark.parametrize("args, code, needles", [
    (["up", "Qwen/QwQ-33B"], 2, ["unknown model", "Did you mean", "Qwen/QwQ-32B"]),
    (["up", "--engine", "sglang"], 2, ["SGLang needs an NVIDIA GPU"]),
    (["up", "--host", "0.0.0.0", "--no-api-key"], 2, ["without an API key", "--insecure"]),
    (["up", "--set", "max_model_len=lots"], 2, ["max_model_len"]),
    (["up", "--runtime", "vm"], 2, ["runtime"]),
    (["up", "--target", "mars"], 2, ["--target"]),
    (["up", "--target", "aliyun"], 2, ["--region"]),
    (["up", "./no/such/dir"], 2, ["not a model directory"]),
    (["down", "ghost"], 4, ["no deployment named 'ghost'"]),
    (["status"], 4, ["no deployments"]),
    (["logs", "ghost"], 4, ["ghost"]),
    (["redeploy", "ghost"], 2, ["nothing to change"]),
])
def test_bad_input_gets_one_clear_line(cli, args, code, needles):
    assert_one_line_error(cli(*args), code, *needles)


def test_read_commands_speak_json_on_an_empty_home(cli):
    assert json.loads(cli("ls", "--json").stdout) == []


def test_hub_model_offline_fails_fast_with_what_to_do(home):
    """The hubs are made unreachable through a dead local proxy, so this holds on a connected machine too."""
    import time


    env = {**cli_env(home), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    t0 = time.monotonic()
    done = run_cli(env, "up", "Qwen/Qwen3-8B", "--force")
    assert time.monotonic() - t0 < 30
    assert_one_line_error(done, 1, "cannot reach ModelScope or Hugging Face",
                          "llmnest up Qwen/Qwen3-8B --weights /path/to/")
    assert json.loads(run_cli(env, "ls", "--json").stdout) == []


@pytest.mark.skipif(__import__("shutil").which("nvidia-smi") is not None, reason="plans differently on a GPU host")
def test_up_refuses_a_model_that_cannot_fit_before_downloading(cli, home):
    done = cli("up", "Qwen/QwQ-32B")
    assert_one_line_error(done, 3, "does not fit", "memory", "--force")
    assert json.loads(cli("ls", "--json").stdout) == []
    short = cli("up", "Qwen/Qwen3-8B", "--max-model-len", "32768", "--set", "cpu_kv_cache_gib=1")
    assert_one_line_error(short, 3, "Try: set --set cpu_kv_cache_gib=", " or --max-model-len ")
    hinted = re.search(r"--set cpu_kv_cache_gib=(\d+)", short.stderr).group(1)  # the hint names a real flag
    offline = {**cli_env(home), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    again = run_cli(offline, "up", "Qwen/Qwen3-8B", "--max-model-len", "32768", "--set", f"cpu_kv_cache_gib={hinted}")
    assert_one_line_error(again, 1, "cannot reach ModelScope")  # the plan passed: the download came next


def test_status_for_a_person_skips_unset_fields_and_indents_the_clouds_view():
    from llmnest.cli.render import status_text

    text = status_text({"name": "demo", "pid": None, "status": "ready", "container_state": {},
                        "cloud": {"name": "demo", "stack_status": "CREATE_COMPLETE", "stack_reason": "",
                                  "endpoints": [{"label": "public", "base_url": "http://203.0.113.7:8080/v1"}],
                                  "probe": {"ok": True, "stage": "ready", "detail": ""}}})
    assert text.splitlines() == [  # right-aligned to the longest name shown, "stack_status"
        "        name  demo",
        "      status  ready",
        "       cloud",
        "  stack_status  CREATE_COMPLETE",
        "     endpoints  public http://203.0.113.7:8080/v1",
        "         probe  ok=True stage=ready",
    ]


def test_llmnest_home_that_is_a_file_is_one_line(tmp_path):
    afile = tmp_path / "home"
    afile.write_text("not a folder")
    env = {**cli_env(afile), "LLMNEST_HOME": str(afile)}
    for args in (["ls"], ["up", "--name", "x"], ["status", "x"]):
        assert_one_line_error(run_cli(env, *args), 2, f"LLMNEST_HOME={afile} is not a folder")
    assert afile.read_text() == "not a folder"
