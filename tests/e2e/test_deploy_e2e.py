"""End to end against real vLLM (CPU build) serving the demo model, deployed by `llmnest up`."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time

import httpx
import pytest

from tests.conftest import free_port, processes_of, serving_on

pytestmark = pytest.mark.e2e


def test_up_answers_a_chat_request_sensibly(demo):
    reply = demo.chat("What is the capital of France? Answer in one sentence.")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert "paris" in body["choices"][0]["message"]["content"].lower()
    assert body["usage"]["completion_tokens"] > 0


def test_wrong_or_missing_key_gets_401(demo):
    assert demo.chat("Hi", key="sk-wrong-key").status_code == 401
    no_key = httpx.post(f"{demo.base_url}/chat/completions", json={"model": demo.model, "messages": []}, timeout=30)
    assert no_key.status_code == 401


def test_the_engine_listens_on_loopback_with_a_key_that_is_nobodys(demo):
    """Behind the gateway the engine has its own loopback port and internal key: the user's key does not
    open it, the internal key is no key of the gateway, and it appears in no printed command."""
    engine = f"http://127.0.0.1:{demo.replica()['port']}/v1/chat/completions"
    body = {"model": demo.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    assert demo.replica()["port"] != demo.port
    assert httpx.post(engine, json=body, headers={"Authorization": f"Bearer {demo.api_key}"}, timeout=60).status_code == 401
    assert httpx.post(engine, json=body, headers={"Authorization": f"Bearer {demo.engine_key}"}, timeout=60).status_code == 200
    assert demo.chat("Hi", key=demo.engine_key).status_code == 401
    shown = demo.cli("show", "demo", "--as", "script").stdout
    assert demo.engine_key not in shown and demo.api_key not in shown and "engine_key)" in shown
    keys = json.loads(demo.cli("keys", "ls", "--json").stdout)
    assert "default" in [k["name"] for k in keys] and demo.api_key not in json.dumps(keys)


def test_status_ls_and_show_describe_the_deployment(demo):
    info = demo.status()
    assert info["status"] == "ready" and info["base_url"] == demo.base_url
    assert info["kv_cache_tokens_actual"] > 0  # read from vLLM's own start-up log
    listed = json.loads(demo.cli("ls", "--json").stdout)
    assert [d["name"] for d in listed] == ["demo"]
    spec = json.loads(demo.cli("show", "demo", "--json").stdout)
    assert spec["port"] == demo.port and spec["engine"] == "vllm" and spec["api_key"].startswith("set")
    assert demo.api_key not in demo.cli("show", "demo", "--as", "command").stdout  # key read from its file
    key_file = demo.home / "deployments" / "demo" / "api_key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_shown_command_run_by_hand_starts_the_same_server(demo):
    shown = demo.cli("show", "demo", "--as", "command").stdout
    blocks = re.split(r"^# .*\n", shown, flags=re.M)
    engine, gateway = blocks[1], blocks[2]  # the engine replica's command, then the gateway's
    assert f"gateway serve --host 127.0.0.1 --port {demo.port} --deployments-on-port" in " ".join(gateway.replace("\\", " ").split())
    port = free_port()
    command = re.sub(r"--port \d+", f"--port {port}", engine)
    proc = subprocess.Popen(["bash", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = {"model": demo.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the shown command exited"
            try:
                ok = httpx.post(url, json=body, headers={"Authorization": f"Bearer {demo.engine_key}"}, timeout=10)
                if ok.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        else:
            pytest.fail("the shown command did not start a server that answers")
        assert httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_port_and_name_in_use_are_refused(demo):
    taken = demo.cli("up", "--name", "demo", "--port", str(free_port()))
    assert taken.returncode == 3 and "exists" in taken.stderr and "Traceback" not in taken.stderr
    busy = demo.cli("up", "--name", "other", "--port", str(demo.port), "--no-gateway")
    assert busy.returncode == 3 and "already in use" in busy.stderr
    other_host = demo.cli("up", "--name", "other", "--port", str(demo.port), "--host", "0.0.0.0")
    assert other_host.returncode == 3 and "listens on 127.0.0.1; pass --host 127.0.0.1" in other_host.stderr
    with socket.socket() as sock:  # a port someone else listens on
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        foreign = demo.cli("up", "--name", "other", "--port", str(sock.getsockname()[1]))
    assert foreign.returncode == 3 and "already in use" in foreign.stderr
    assert [d["name"] for d in json.loads(demo.cli("ls", "--json").stdout)] == ["demo"]


def test_rejected_engine_flag_shows_the_engine_error_and_leaves_nothing(demo):
    before = processes_of(demo.home)
    done = demo.cli("up", "--name", "badflag", "--port", str(free_port()), "--set", "no-such-flag=1", timeout=600)
    assert done.returncode == 1
    error = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "unrecognized arguments: --no-such-flag" in error[0], done.stderr
    assert "engine.log" in error[0] and "Traceback" not in done.stderr
    assert [d["name"] for d in json.loads(demo.cli("ls", "--json").stdout)] == ["demo"]
    assert processes_of(demo.home) <= before, "its engine, supervisor or gateway is left"


def test_startup_timeout_stops_the_engine(demo):
    port = free_port()
    before = processes_of(demo.home)
    done = demo.cli("up", "--name", "slow", "--port", str(port), "--timeout", "3", timeout=300)
    assert done.returncode == 1 and "did not answer within 3 s" in done.stderr
    time.sleep(1)
    assert not serving_on(port) and processes_of(demo.home) <= before
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # the port is free again


def test_redeploy_keeps_the_key_and_changes_the_context(demo):
    """One redeploy changes the context and opens the endpoint to the network: the gateway in front, which
    serves nothing else, listens on every interface from then on."""
    done = demo.cli("redeploy", "demo", "--set", "max_model_len=2048", "--set", "host=0.0.0.0", "--json",
                    timeout=1200)
    assert done.returncode == 0, done.stderr
    redeployed = json.loads(done.stdout)
    assert redeployed["api_key"] == demo.api_key
    assert demo.status()["gateway"]["host"] == "0.0.0.0"
    for endpoint in redeployed["endpoints"]:  # loopback, and the LAN address when this machine has one
        answer = httpx.get(f"{endpoint['base_url']}/models", headers={"Authorization": f"Bearer {demo.api_key}"},
                           timeout=30)
        assert answer.status_code == 200, endpoint
    engine = f"http://127.0.0.1:{demo.replica()['port']}/v1/models"
    models = httpx.get(engine, headers={"Authorization": f"Bearer {demo.engine_key}"}, timeout=30)
    assert models.json()["data"][0]["max_model_len"] == 2048
    assert demo.chat("Name three primary colors.").status_code == 200
    bad = demo.cli("redeploy", "demo", "--set", "port=0")
    assert bad.returncode == 2 and "port" in bad.stderr
    assert demo.status()["status"] == "ready"  # an invalid new spec leaves the old one running


def test_killed_engine_is_restarted_by_the_supervisor(demo):
    before = demo.status()
    pid = demo.replica()["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while demo.status()["restarts"] == before["restarts"]:
        assert time.monotonic() < deadline, "no restart recorded"
        time.sleep(0.5)
    info = demo.wait_ready()
    assert info["restarts"] == before["restarts"] + 1
    assert "SIGKILL" in info["last_error"] and info["replicas"][0]["pid"] != pid
    assert demo.chat("Hi", max_tokens=4).status_code == 200
    assert "starting engine (attempt 2)" in demo.cli("logs", "demo", "--tail", "100000").stdout


def test_a_hung_engine_is_noticed_and_restarted(demo):
    """A hang (the engine still runs but stops answering) is found by the liveness probe, not by an exit."""
    before = demo.status()
    pid = demo.replica()["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 120
        while demo.status()["restarts"] == before["restarts"]:
            assert time.monotonic() < deadline, "the hang was not noticed"
            time.sleep(1)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)  # gone already when the restart killed it
        except ProcessLookupError:
            pass
    info = demo.wait_ready()
    assert "stopped answering /health" in info["last_error"] and info["replicas"][0]["pid"] != pid
    assert demo.chat("Hi", max_tokens=4).status_code == 200


def test_ctrl_c_during_up_says_what_it_stops_and_leaves_nothing(demo):
    port = free_port()
    before = processes_of(demo.home)
    # As from a terminal: SIGINT at its default (a suite started in the background inherits it ignored,
    # and Python then never raises KeyboardInterrupt)
    proc = subprocess.Popen([*demo.argv, "up", "--name", "interrupted", "--port", str(port)], env=demo.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not processes_of(demo.home) - before - {proc.pid} or not serving_on(port):  # engine and gateway run
            assert time.monotonic() < deadline and proc.poll() is None, "the engine did not start"
            time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and time.monotonic() - t0 < 15, err
    assert "interrupted: stopping interrupted (supervisor pid" in err and err.rstrip().endswith("interrupted")
    assert [d["name"] for d in json.loads(demo.cli("ls", "--json").stdout)] == ["demo"]
    time.sleep(1)
    assert not serving_on(port) and processes_of(demo.home) <= before
