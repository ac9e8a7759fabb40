"""`llmnest keys/usage --deployment NAME` and the console's Keys and Usage pages for a deployment on Alibaba
Cloud, end to end: the real CLI, the official SDK, and tests/aliyun_emulator.py, an EMULATION of the ECS and
ROS APIs (no cloud is reachable from the test machine). The emulator's RunCommand runs the script it is sent
with bash on this machine, against a stand-in instance: a directory with the wrapper the bootstrap writes
(/usr/local/bin/llmnest: llmnest with the gateway's settings) and a real `llmnest gateway serve` over a
stand-in engine, on a real gateway database. So the quoting, the framing, exit codes and the key's hash all
travel the path they travel on a real instance; only Cloud Assistant's transport is emulated."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.aliyun_emulator import ACCESS_KEY_ID, ACCESS_KEY_SECRET, Emulator
from tests.conftest import REPO, cli_env, free_port, run_cli
from tests.unit.gateway.conftest import FakeReplica, start_replica

NAME = "qwq-32b"  # the deployment
SERVED = "Qwen/QwQ-32B"  # the model name it serves


@dataclass
class Instance:
    """The stand-in instance: its root (LLMNEST_ROOT), the gateway's database and URL, what ran there."""

    root: Path
    db_url: str
    gateway_url: str
    env: dict[str, str]  # this machine's CLI environment (emulated cloud, credentials, LLMNEST_HOME)
    emu: Emulator
    ran: list[str]

    def scripts_since(self, n: int) -> list[str]:
        return self.ran[n:]


def _write_wrapper(root: Path, db_url: str) -> None:
    """What the bootstrap's start_gateway writes: an env file (0600) and a root-only wrapper that sources it."""
    state = root / "var/lib/llmnest"
    state.mkdir(parents=True)
    env_file = state / "gateway.env"
    env_file.write_text(f"LLMNEST_HOME={state}/home\nLLMNEST_GATEWAY_DB={db_url}\n")
    env_file.chmod(0o600)
    wrapper = root / "usr/local/bin/llmnest"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\nset -a; . {env_file}; set +a\nexec {sys.executable} -m llmnest "$@"\n')
    wrapper.chmod(0o700)


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    tmp = tmp_path_factory.mktemp("aliyun-admin")
    root, db_url = tmp / "instance", f"sqlite:///{tmp / 'instance-gateway.db'}"
    _write_wrapper(root, db_url)
    emu = Emulator().start()
    env = {**cli_env(tmp / "home"), "HOME": str(tmp), "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
           "LLMNEST_ALIYUN_POLL_SECONDS": "0", "LLMNEST_ALIYUN_ENDPOINT": emu.url,
           "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET}
    env.pop("ALIBABA_CLOUD_PROFILE", None)
    replica: FakeReplica | None = None
    gateway: subprocess.Popen | None = None
    try:
        up = run_cli(env, "up", "Qwen/QwQ-32B", "--target", "aliyun", "--region", "cn-hangzhou", "--public",
                     "--port", str(free_port()), "--yes", "--json", timeout=180)
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)["served_model_name"] == SERVED
        served = SERVED
        replica = start_replica(served, "engine")
        upstreams = tmp / "upstreams.json"
        upstreams.write_text(json.dumps([{"model": served, "replica_id": "engine", "base_url": replica.base_url,
                                          "internal_key": replica.key}]))
        port = free_port()
        instance_env = {"PATH": "/usr/bin:/bin", "LLMNEST_GATEWAY_DB": db_url, "LLMNEST_HOME": str(root / "home"),
                        "PYTHONPATH": env.get("PYTHONPATH", "")}
        gateway = subprocess.Popen([sys.executable, "-m", "llmnest", "gateway", "serve", "--port", str(port),
                                    "--upstreams", str(upstreams)], env=instance_env, cwd=REPO,
                                   stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and gateway.poll() is None, "the instance's gateway did not start"
                time.sleep(0.1)
        ran: list[str] = []

        def cloud_assistant(script: str) -> tuple[int, str]:
            """RunCommand on the stand-in instance: bash as root there (a bare environment: Cloud Assistant's
            has no llmnest settings), stdout and stderr in one output as Cloud Assistant keeps them."""
            ran.append(script)
            done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=root,
                                  env={"PATH": "/usr/bin:/bin", "PYTHONPATH": instance_env["PYTHONPATH"],
                                       "LLMNEST_ROOT": str(root)})
            return done.returncode, done.stdout + done.stderr

        emu.command_handler = cloud_assistant
        yield Instance(root, db_url, url, env, emu, ran)
    finally:
        emu.stop()
        for proc in (gateway, replica.proc if replica else None):
            if proc is not None:
                proc.kill()
                proc.wait()


def cli(inst: Instance, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(inst.env, *args, timeout=120)


def chat(inst: Instance, key: str) -> int:
    body = {"model": SERVED, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 3}
    return httpx.post(f"{inst.gateway_url}/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {key}"}).status_code


def test_a_key_made_from_here_works_on_the_instance_its_usage_comes_back_and_revoking_it_holds(instance) -> None:
    inst = instance
    sent = len(inst.ran)
    made = cli(inst, "keys", "create", "alice", "--deployment", NAME, "--models", SERVED, "--rpm", "100",
               "--json")
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["key"]
    assert secret.startswith("sk-") and "warning" not in made.stderr
    # the secret stayed here: the instance got its SHA-256 and prefix, and Cloud Assistant kept no secret
    (script,) = inst.scripts_since(sent)
    assert secret not in script and hashlib.sha256(secret.encode()).hexdigest() in script
    assert all(secret not in inv["output"] for inv in inst.emu.invocations.values())
    assert chat(inst, secret) == 200  # through the instance's gateway, which only ever saw the hash

    remote = cli(inst, "keys", "ls", "--deployment", NAME, "--json")
    here = cli(inst, "keys", "ls", "--db", inst.db_url, "--json")  # the same database read directly
    assert remote.returncode == 0 and json.loads(remote.stdout) == json.loads(here.stdout)
    (row,) = [r for r in json.loads(remote.stdout) if r["name"] == "alice"]
    assert (row["status"], row["models"], row["rpm"], row["requests"], row["prefix"]) == (
        "active", [SERVED], 100, 1, secret[:7])
    assert cli(inst, "keys", "ls", "--deployment", NAME).stdout == cli(inst, "keys", "ls", "--db", inst.db_url).stdout

    usage = cli(inst, "usage", "--deployment", NAME, "--by", "key", "--json")
    assert usage.returncode == 0, usage.stderr
    (used,) = [r for r in json.loads(usage.stdout) if r["key_name"] == "alice"]
    assert (used["requests"], used["prompt_tokens"], used["completion_tokens"]) == (1, 2, 3)
    csv = cli(inst, "usage", "--deployment", NAME, "--csv")
    assert csv.stdout.splitlines()[0].startswith("period,key_name,model") and "alice" in csv.stdout

    updated = cli(inst, "keys", "update", "alice", "--deployment", NAME, "--clear", "rpm", "--tpm", "500", "--json")
    assert updated.returncode == 0, updated.stderr
    assert (json.loads(updated.stdout)["rpm"], json.loads(updated.stdout)["tpm"]) == (None, 500)

    revoked = cli(inst, "keys", "revoke", "alice", "--deployment", NAME)
    assert revoked.returncode == 0 and re.fullmatch(r"key alice revoked at \S+Z\n", revoked.stdout)
    deadline = time.monotonic() + 10  # the gateway refuses a revoked key within seconds
    while chat(inst, secret) != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.2)


def test_remote_exit_codes_come_back_as_the_same_errors(instance, tmp_path: Path) -> None:
    inst = instance
    made = cli(inst, "keys", "create", "bob", "--deployment", NAME, "--json")
    assert made.returncode == 0, made.stderr
    again = cli(inst, "keys", "create", "bob", "--deployment", NAME)
    assert again.returncode == 3 and "a key named 'bob' exists" in again.stderr
    assert f"`llmnest keys revoke bob --deployment {NAME}` first" in again.stderr
    missing = cli(inst, "keys", "revoke", "nobody", "--deployment", NAME)
    assert missing.returncode == 4 and missing.stderr.count("\n") == 1
    assert f"`llmnest keys ls --deployment {NAME}` lists them" in missing.stderr
    # refused by the instance (only it knows bob has no budget period): exit 2 there, BadInput here
    sent = len(inst.ran)
    half = cli(inst, "keys", "update", "bob", "--deployment", NAME, "--token-budget", "5")
    assert half.returncode == 2 and "--token-budget and --budget-period go together" in half.stderr
    assert len(inst.ran) == sent + 1
    # an existing secret (--key-file) is read here and sent as its hash; reusing one is refused there
    key_file = tmp_path / "key"
    key_file.write_text(json.loads(made.stdout)["key"] + "\n")
    reused = cli(inst, "keys", "create", "carol", "--deployment", NAME, "--key-file", str(key_file))
    assert reused.returncode == 3 and "that secret is the key 'bob' already" in reused.stderr
    assert key_file.read_text().strip() not in "".join(inst.ran)


@pytest.mark.parametrize("name", ["a'b", "x\ny", "$(touch pwned)", "--db=sqlite:////tmp/x", "a b", "é"])
def test_hostile_names_are_refused_here_as_locally_and_nothing_is_sent(instance, name: str) -> None:
    inst = instance
    sent = len(inst.ran)
    for verb, *extra in (("create",), ("revoke",), ("update", "--rpm", "1")):
        local = cli(inst, "keys", verb, *extra, "--db", f"sqlite:///{inst.root}/scratch.db", "--", name)
        remote = cli(inst, "keys", verb, *extra, "--deployment", NAME, "--", name)
        assert remote.returncode == 2 and "key name" in remote.stderr and "Traceback" not in remote.stderr
        if verb == "create":  # revoke and update look the name up locally, so there it is "not found"
            assert (local.returncode, local.stderr) == (remote.returncode, remote.stderr)
    assert len(inst.ran) == sent and not (inst.root / "pwned").exists()


def test_shell_syntax_in_values_reaches_the_instance_as_plain_text(instance) -> None:
    inst = instance
    models = "m'$(touch${IFS}pwned)`touch${IFS}pwned2`;\"x\""
    made = cli(inst, "keys", "create", "dave", "--deployment", NAME, "--models", models, "--json")
    assert made.returncode == 0, made.stderr
    assert f"warning: {NAME} serves {SERVED}, not {models}" in made.stderr
    rows = json.loads(cli(inst, "keys", "ls", "--deployment", NAME, "--json").stdout)
    assert [r["models"] for r in rows if r["name"] == "dave"] == [[models]]
    assert not list(inst.root.glob("pwned*")) and not list(Path.cwd().glob("pwned*"))
    bad = cli(inst, "usage", "--deployment", NAME, "--since", "$(reboot)")
    assert bad.returncode == 2 and "--since '$(reboot)' is not a window" in bad.stderr


def test_an_instance_without_the_gateway_yet_and_wrong_combinations(instance) -> None:
    inst = instance
    both = cli(inst, "keys", "ls", "--deployment", NAME, "--db", inst.db_url)
    assert both.returncode == 2 and "give --db" in both.stderr
    unknown = cli(inst, "usage", "--deployment", "nope")
    assert unknown.returncode == 4
    wrapper = inst.root / "usr/local/bin/llmnest"
    wrapper.rename(wrapper.with_suffix(".away"))
    try:
        early = cli(inst, "keys", "ls", "--deployment", NAME)
        assert early.returncode == 1 and early.stderr.count("\n") == 1
        assert f"{NAME}'s instance has no llmnest gateway yet" in early.stderr
    finally:
        wrapper.with_suffix(".away").rename(wrapper)


def test_console_keys_and_usage_pages_manage_the_instance_gateway(instance, monkeypatch) -> None:
    from starlette.testclient import TestClient

    from llmnest.console import auth
    from llmnest.console.app import create_app
    from llmnest.gateway import keys
    from llmnest.gateway.db import Database

    inst = instance
    for var in ("LLMNEST_HOME", "LLMNEST_MODELS_DIR", "LLMNEST_ALIYUN_ENDPOINT", "LLMNEST_ALIYUN_POLL_SECONDS",
                "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_ECS_METADATA_DISABLED",
                "HOME"):
        monkeypatch.setenv(var, inst.env[var])
    monkeypatch.delenv("LLMNEST_GATEWAY_DB", raising=False)
    from alibabacloud_credentials.utils import auth_util  # the SDK reads its variables once, at its first import

    monkeypatch.setattr(auth_util, "environment_access_key_id", ACCESS_KEY_ID)
    monkeypatch.setattr(auth_util, "environment_access_key_secret", ACCESS_KEY_SECRET)
    token = auth.load_or_create_token()
    client = TestClient(create_app(token), follow_redirects=False)
    assert client.get(f"/keys?token={token}").status_code == 303
    here = client.get("/keys")
    assert 'id="gateway-picker"' in here.text and re.search(rf'<option value="{NAME}"\s*>{NAME}</option>', here.text)
    csrf = re.search(r'name="csrf" content="([0-9a-f]+)"', here.text)[1]

    sent = len(inst.ran)
    made = client.post(f"/keys/create?deployment={NAME}", data={"name": "erin", "rpm": "7", "csrf": csrf})
    assert made.status_code == 200, made.text
    secret = re.search(r'id="new-secret">(sk-[^<]+)<', made.text)[1]
    assert secret not in "".join(inst.ran[sent:]) and len(inst.ran) > sent
    assert all(k.name != "erin" for k in keys.list_keys(Database(None)))  # not this machine's gateway
    assert chat(inst, secret) == 200
    page = client.get(f"/keys?deployment={NAME}")
    assert 'data-name="erin"' in page.text and f'action="/keys/erin/revoke?deployment={NAME}"' in page.text
    assert f"API keys of {NAME}" in page.text and secret not in page.text

    form = client.get(f"/keys/erin?deployment={NAME}")
    assert form.status_code == 200 and 'name="rpm" value="7"' in form.text
    bad = client.post(f"/keys/erin?deployment={NAME}", data={"rpm": "7", "tpm": "-1", "csrf": csrf})
    assert bad.status_code == 400 and re.search(r'name="tpm"[^>]*class="invalid"', bad.text)
    saved = client.post(f"/keys/erin?deployment={NAME}", data={"rpm": "", "tpm": "900", "csrf": csrf})
    assert saved.status_code == 303 and saved.headers["location"] == f"/keys?deployment={NAME}"
    rows = json.loads(cli(inst, "keys", "ls", "--db", inst.db_url, "--json").stdout)
    assert [(r["rpm"], r["tpm"]) for r in rows if r["name"] == "erin"] == [(None, 900)]

    usage = client.get(f"/usage?deployment={NAME}&by=key&since=1d")
    assert usage.status_code == 200 and "<td>erin</td>" in usage.text
    assert f'href="/usage.csv?deployment={NAME}&amp;by=key&amp;since=1d"' in usage.text
    csv = client.get(f"/usage.csv?deployment={NAME}&by=key&since=1d")
    assert csv.status_code == 200 and ",erin," in csv.text

    gone = client.post(f"/keys/erin/revoke?deployment={NAME}", data={"csrf": csrf})
    assert gone.status_code == 303
    assert client.get(f"/keys/ghost?deployment={NAME}").status_code == 404
    assert client.get("/keys?deployment=nope").status_code == 404
    deadline = time.monotonic() + 10
    while chat(inst, secret) != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.2)


def _result(output: str, **kw) -> dict:
    return {"instance_id": "i-1", "status": "Success", "exit_code": 0, "output": output, "error": "", "dropped": 0,
            **kw}


def test_a_run_that_did_not_frame_its_answer_is_one_failure_naming_why() -> None:
    """What the emulator does not produce: Cloud Assistant's own failures, cut-off output, garbled frames."""
    from llmnest.errors import LlmnestError
    from llmnest.targets.aliyun.channel import admin_script, parse

    with pytest.raises(LlmnestError, match=r"longer than Cloud Assistant keeps \(512 bytes cut off\)"):
        parse(_result("llmnest-channel 0 AAAA AAAA\n", dropped=512), NAME)
    with pytest.raises(LlmnestError, match=r"could not run llmnest on qwq-32b's instance i-1 \(Timeout, exit None\): "
                                           r"the command timed out"):
        parse(_result("", status="Timeout", exit_code=None, error="the command timed out"), NAME)
    with pytest.raises(LlmnestError, match="garbled"):
        parse(_result("llmnest-channel 0 bm90Z3ppcA== \n"), NAME)
    with pytest.raises(LlmnestError, match="has no llmnest gateway yet"):
        parse(_result("sh: 1: /usr/local/bin/llmnest: not found\nllmnest-channel 127  \n", exit_code=127), NAME)
    fake = "fake() { printf '[]'; echo oops >&2; return 1; }\necho motd-like noise; printf 'no newline'\n"
    script = fake + admin_script(["keys", "ls"]).replace('"${LLMNEST_ROOT:-}/usr/local/bin/llmnest"', "fake")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    got = parse(_result(done.stdout, exit_code=done.returncode), NAME)
    assert (got.exit_code, got.stdout, got.stderr) == (1, "[]", "oops\n")


def test_errors_of_the_remote_cli_come_back_as_its_one_line() -> None:
    from llmnest.errors import BadInput, LlmnestError
    from llmnest.gateway.remote_admin import ChannelResult, RemoteAdmin

    class Replay:  # a channel that answers what a remote llmnest printed
        def __init__(self, result: ChannelResult) -> None:
            self.result = result

        def run(self, argv: list[str]) -> ChannelResult:
            return self.result

    old = ("Usage: llmnest keys create [OPTIONS] NAME\nTry 'llmnest keys create -h' for help.\n"
           "╭─ Error ─────────────────────────╮\n│ No such option: --key-sha256    │\n╰─────────────────────────────────╯\n")
    with pytest.raises(BadInput, match=r"^the llmnest next to the gateway of d is older than this one "
                                       r"\(No such option: --key-sha256\)$"):
        RemoteAdmin(Replay(ChannelResult(2, "", old)), "d").create_key("ann", {})
    with pytest.raises(LlmnestError, match=r"^llmnest keys ls failed next to the gateway of d \(exit 1\): disk full$"):
        RemoteAdmin(Replay(ChannelResult(1, "", "error: disk full\n")), "d").key_rows()
    with pytest.raises(LlmnestError, match="printed no JSON"):
        RemoteAdmin(Replay(ChannelResult(0, "Welcome!\n", "")), "d").key_rows()
