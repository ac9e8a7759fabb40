"""`llmnest keys/usage --deployment NAME` and the key `up --target kubernetes` prints, end to end through exec.

No API server can run here: api_standin.py answers lightkube's real requests, exec included (pods/exec over
WebSockets, v5.channel.k8s.io, as the API server speaks it), and test_target.py's `Controllers` play the
cluster's controllers (rollouts, Ready pods). What runs in "the gateway pod" is real: the exec handler runs the
exact command the channel sends (`llmnest ARGV...`, or the chat check's `python3 -c ...`) as a process here, with
the pod's environment ($LLMNEST_GATEWAY_DB on a real gateway database, `llmnest` on PATH), next to a real
`llmnest gateway serve` over a stand-in engine (tests/fakes/openai_upstream.py). The only rewrite: the chat
check's URL, the gateway Service's cluster DNS name, is this gateway's address here (the cluster's DNS and
Service routing do not exist here).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmnest import lifecycle, state
from llmnest.errors import Conflict, LlmnestError
from llmnest.spec_builder import UpRequest
from llmnest.targets import Context
from llmnest.targets.kubernetes import target as k8s_target
from llmnest.targets.kubernetes.channel import exec_command, service_url
from tests.conftest import REPO, cli_env, free_port, run_cli
from tests.unit.gateway.conftest import FakeReplica, start_replica
from tests.unit.kubernetes.api_standin import ApiStandIn
from tests.unit.kubernetes.test_client import kubeconfig
from tests.unit.kubernetes.test_target import NS, Controllers, ack_cluster

NAME = "qwq-32b"
SERVED = "Qwen/QwQ-32B"
UP = ("up", SERVED, "--target", "kubernetes", "--namespace", NS, "--expose", "cluster", "--timeout", "60")
NOT_FOUND = {"metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500,
             "message": 'Internal error occurred: error executing command in container: failed to exec in container: '
                        'failed to start exec "0f3a": OCI runtime exec failed: exec failed: unable to start container '
                        'process: exec: "llmnest": executable file not found in $PATH: unknown'}  # containerd's words


@dataclass
class Cluster:
    api: ApiStandIn
    env: dict[str, str]  # this machine's CLI environment (KUBECONFIG to the stand-in, LLMNEST_HOME)
    db_url: str  # the gateway's database, as the pod has it in $LLMNEST_GATEWAY_DB
    gateway_url: str  # the real gateway, which the gateway Service's cluster DNS name stands for
    bin: Path  # the pod's PATH entry holding `llmnest`
    up: subprocess.CompletedProcess[str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(self.env, *args, timeout=120)

    def chat(self, key: str) -> int:
        body = {"model": SERVED, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 3}
        return httpx.post(f"{self.gateway_url}/v1/chat/completions", json=body, timeout=10, trust_env=False,
                          headers={"authorization": f"Bearer {key}"}).status_code

    def rows(self) -> dict[str, dict]:
        done = self.cli("keys", "ls", "--db", self.db_url, "--json")
        assert done.returncode == 0, done.stderr
        return {r["name"]: r for r in json.loads(done.stdout)}

    def deployment(self, name: str, chat_url: str | None = None) -> None:
        """Deployment `name`'s Services answer and its gateway pods run the real CLI (the chat check to `chat_url`,
        by default the real gateway)."""
        self.api.serve(NS, f"{name}-engine", lambda path: (200, "") if path == "/health" else (401, "key"))
        self.api.serve(NS, f"{name}-gateway", lambda path: (200, '{"status":"ok"}') if path == "/health"
                       else (401, '{"error":{"code":"invalid_api_key"}}'))
        self.api.on_exec(NS, f"{name}-gateway-",
                         self._pod(service_url(name, NS, 8080), chat_url or f"{self.gateway_url}/v1"))

    def _pod(self, service: str, chat_url: str):
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "LLMNEST_GATEWAY_DB": self.db_url, "HOME": str(self.bin.parent),
               "LLMNEST_HOME": str(self.bin.parent / "pod-home"), "PYTHONPATH": self.env.get("PYTHONPATH", "")}

        def run(container: str, command: list[str], stdin) -> tuple[int, bytes, bytes] | dict:
            assert container == "gateway"
            given = stdin() if command[0] == "python3" else b""  # the chat check reads its key there; llmnest nothing
            command = [chat_url if word == service else word for word in command]
            try:
                done = subprocess.run(command, input=given, capture_output=True, env=env, cwd=REPO, timeout=120)
            except FileNotFoundError:
                return NOT_FOUND
            return done.returncode, done.stdout, done.stderr

        return run


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("k8s-exec")
    db_url = f"sqlite:///{tmp / 'gateway.db'}"
    pod_bin = tmp / "pod" / "bin"
    pod_bin.mkdir(parents=True)
    (pod_bin / "llmnest").write_text(f'#!/bin/sh\nexec {sys.executable} -m llmnest "$@"\n')
    (pod_bin / "llmnest").chmod(0o755)
    replica: FakeReplica | None = None
    gateway: subprocess.Popen | None = None
    with ApiStandIn() as api, Controllers(api):
        try:
            replica = start_replica(SERVED, "engine")
            upstreams = tmp / "upstreams.json"
            upstreams.write_text(json.dumps([{"model": SERVED, "replica_id": "engine", "base_url": replica.base_url,
                                              "internal_key": replica.key}]))
            port = free_port()
            gateway = subprocess.Popen([sys.executable, "-m", "llmnest", "gateway", "serve", "--port", str(port),
                                        "--upstreams", str(upstreams)], cwd=REPO, stderr=subprocess.DEVNULL,
                                       env={**cli_env(tmp / "gw-home"), "LLMNEST_GATEWAY_DB": db_url})
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline and gateway.poll() is None, "the gateway did not start"
                    time.sleep(0.1)
            config = tmp / "kubeconfig"
            config.write_text(json.dumps(kubeconfig(api.url)))
            env = {**cli_env(tmp / "home"), "KUBECONFIG": str(config)}
            for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy",
                        "LLMNEST_GATEWAY_DB"):
                env.pop(var, None)
            ack_cluster(api)
            made = Cluster(api, env, db_url, url, pod_bin, None)  # type: ignore[arg-type]
            made.deployment(NAME)
            made.up = made.cli(*UP)
            yield made
        finally:
            for proc in (gateway, replica.proc if replica else None):
                if proc is not None:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def here(cluster: Cluster, monkeypatch) -> Cluster:
    """The lifecycle in this process against the same cluster and home."""
    for var in ("LLMNEST_HOME", "KUBECONFIG", "LLMNEST_MODELS_DIR"):
        monkeypatch.setenv(var, cluster.env[var])
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(k8s_target, "POLL_S", 0.05)
    return cluster


def up(name: str, api_key: str | None = None) -> lifecycle.Created:
    return lifecycle.up(UpRequest(model=SERVED, name=name, target="kubernetes", api_key=api_key,
                                  options={"namespace": NS, "expose": "cluster"}), Context(timeout=30))


def test_up_prints_the_deployments_key_made_through_exec_and_a_chat_through_the_gateway_answered(here: Cluster):
    cluster = here
    done = cluster.up
    assert done.returncode == 0, done.stderr
    key = state.api_key(NAME)
    assert key.startswith("sk-") and f"  API key                {key}\n" in done.stdout
    row = cluster.rows()[NAME]  # named after the deployment, for its model only, in the cluster gateway's database
    assert (row["status"], row["models"], row["prefix"]) == ("active", [SERVED], key[:7])
    assert row["requests"] >= 1  # up's chat check went through the real gateway with that key
    for _pod, _container, command in cluster.api.exec_calls:
        assert key not in " ".join(command)  # the key travelled as its hash, and on the chat check's stdin
    listed = json.loads(cluster.cli("ls", "--json").stdout)
    assert listed[0]["name"] == NAME and listed[0]["status"] == "ready"
    assert cluster.chat(key) == 200


def test_keys_and_usage_with_deployment_go_through_exec_into_the_gateway_pod(cluster: Cluster):
    sent = len(cluster.api.exec_calls)
    made = cluster.cli("keys", "create", "alice", "--deployment", NAME, "--models", SERVED, "--rpm", "100", "--json")
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["key"]
    (call,) = cluster.api.exec_calls[sent:]
    assert call[0].startswith(f"{NAME}-gateway-") and call[1] == "gateway"
    assert call[2][:3] == exec_command(["keys", "create"])
    assert secret not in " ".join(call[2])
    assert cluster.chat(secret) == 200

    remote = cluster.cli("keys", "ls", "--deployment", NAME, "--json")
    assert remote.returncode == 0 and {r["name"]: r for r in json.loads(remote.stdout)} == cluster.rows()
    usage = cluster.cli("usage", "--deployment", NAME, "--by", "key", "--json")
    assert usage.returncode == 0, usage.stderr
    (used,) = [r for r in json.loads(usage.stdout) if r["key_name"] == "alice"]
    assert (used["requests"], used["completion_tokens"]) == (1, 3)

    revoked = cluster.cli("keys", "revoke", "alice", "--deployment", NAME)
    assert revoked.returncode == 0, revoked.stderr
    deadline = time.monotonic() + 10
    while cluster.chat(secret) != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.2)


def one_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_the_gateway_pods_exit_codes_and_exec_failures_are_one_line_each(cluster: Cluster):
    assert cluster.cli("keys", "create", "bob", "--deployment", NAME).returncode == 0
    assert "a key named 'bob' exists" in one_line(cluster.cli("keys", "create", "bob", "--deployment", NAME), 3)
    assert f"`llmnest keys ls --deployment {NAME}` lists them" in one_line(
        cluster.cli("keys", "revoke", "nobody", "--deployment", NAME), 4)
    assert "--token-budget and --budget-period go together" in one_line(
        cluster.cli("keys", "update", "bob", "--deployment", NAME, "--token-budget", "5"), 2)

    cluster.api.forbid_exec = True
    try:
        line = one_line(cluster.cli("keys", "ls", "--deployment", NAME), 1)
    finally:
        cluster.api.forbid_exec = False
    assert f"needs `get` and `create` on pods/exec in namespace {NS}" in line

    wrapper = cluster.bin / "llmnest"
    wrapper.rename(wrapper.with_suffix(".away"))
    try:
        line = one_line(cluster.cli("usage", "--deployment", NAME), 1)
    finally:
        wrapper.with_suffix(".away").rename(wrapper)
    assert f"the gateway image llmnest/llmnest:0.1.0 of {NAME} has no `llmnest` on its PATH" in line

    pods = [k for k in cluster.api.objects if k[0] == "pods" and k[2].startswith(f"{NAME}-gateway-")]
    saved = {k: cluster.api.objects[k]["status"] for k in pods}
    for key in pods:  # the gateway pods not Ready (restarting, say)
        cluster.api.set_status("pods", key[1], key[2], {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "False"}]})
    try:
        line = one_line(cluster.cli("keys", "ls", "--deployment", NAME), 1)
    finally:
        for key, status in saved.items():
            cluster.api.set_status("pods", key[1], key[2], status)
    assert f"{NAME} has no ready gateway pod now; `llmnest status {NAME}` says why" in line
    assert cluster.cli("keys", "ls", "--deployment", NAME).returncode == 0  # and back


def test_up_api_key_takes_a_key_allowed_the_model_and_down_leaves_it(here: Cluster):
    made = here.cli("keys", "create", "carol", "--deployment", NAME, "--models", SERVED, "--json")
    secret = json.loads(made.stdout)["key"]
    here.deployment("team-c")
    created = up("team-c", api_key=secret)
    assert created.api_key == secret and lifecycle.summary(created.deployment, secret)["api_key_name"] == \
        f"carol, for {SERVED} only"
    assert "team-c" not in here.rows()  # nothing new was made
    assert "revoked" not in lifecycle.down("team-c", Context(timeout=30))
    assert here.rows()["carol"]["status"] == "active" and here.chat(secret) == 200


def test_up_api_key_imports_a_new_secret_as_the_deployments_own_key_and_down_revokes_it(here: Cluster):
    secret = "sk-brought-by-the-user-0123456789"
    here.deployment("team-d")
    created = up("team-d", api_key=secret)
    row = here.rows()["team-d"]
    assert (created.api_key, row["models"], row["prefix"], row["status"]) == (secret, [SERVED], secret[:7], "active")
    assert here.chat(secret) == 200
    assert "its key team-d is revoked" in lifecycle.down("team-d", Context(timeout=30))
    assert here.rows()["team-d"]["status"] == "revoked" and "team-d" not in state.names()


def test_up_refuses_a_revoked_key_and_a_name_taken_and_leaves_nothing(here: Cluster):
    made = here.cli("keys", "create", "dave", "--deployment", NAME, "--json")
    secret = json.loads(made.stdout)["key"]
    assert here.cli("keys", "revoke", "dave", "--deployment", NAME).returncode == 0
    here.deployment("team-e")
    with pytest.raises(Conflict, match="^--api-key is the cluster gateway's key 'dave', which is revoked; pass"):
        up("team-e", api_key=secret)
    assert "team-e" not in state.names() and here.api.get("deployments", NS, "team-e-gateway") is None

    assert here.cli("keys", "create", "team-f", "--db", here.db_url).returncode == 0  # someone's key, by that name
    here.deployment("team-f")
    with pytest.raises(Conflict, match="live key named 'team-f' that this up did not make"):
        up("team-f")
    assert "team-f" not in state.names() and here.rows()["team-f"]["status"] == "active"  # theirs stays


def test_a_chat_check_that_is_not_answered_fails_up_and_revokes_the_key_it_made(here: Cluster, monkeypatch):
    monkeypatch.setattr(k8s_target, "CHAT_WAIT_S", 1.0)
    here.deployment("team-g", chat_url=f"http://127.0.0.1:{free_port()}/v1")  # nothing listens: no answer
    with pytest.raises(LlmnestError, match=r"^team-g: a chat through the gateway's Service with the key was not "
                                           r"answered within 1 s \(last: .*refused"):
        up("team-g")
    assert here.rows()["team-g"]["status"] == "revoked" and "team-g" not in state.names()
    assert here.api.get("deployments", NS, "team-g-engine") is None


def test_a_runtime_that_reports_a_missing_command_as_exit_127_is_the_same_line(here: Cluster):
    from llmnest.targets.kubernetes.channel import PodExecChannel
    from llmnest.targets.kubernetes.client import Cluster as KubeCluster, connect

    dep = state.get(NAME)
    channel = PodExecChannel(dep, KubeCluster(connect(None, NS), NS))
    here.api.on_exec(NS, f"{NAME}-gateway-", lambda *_: (127, "", "sh: llmnest: not found\n"))
    try:
        with pytest.raises(LlmnestError, match=f"^the gateway image llmnest/llmnest:0.1.0 of {NAME} has no `llmnest`"):
            channel.run(["keys", "ls", "--json"])
        here.api.on_exec(NS, f"{NAME}-gateway-", lambda *_: (1, "", "error: disk full\n"))
        assert channel.run(["keys", "ls", "--json"]).exit_code == 1  # other exit codes are the command's
    finally:
        here.deployment(NAME)
    with pytest.raises(Exception, match="NUL character"):
        channel.run(["keys", "revoke", "--", "a\0b"])
