"""The Kubernetes pod specs' containers, run for real in Docker on this machine (no API server can run here).

The demo model's manifests are rendered as `up --target kubernetes` would render them (vLLM's CPU
image, weights from an existing claim); then the engine and gateway containers run exactly as their
pod specs define them: image, command, args (with Kubernetes' $(VAR) expansion), env (literal values
and secretKeyRef read from the rendered Secrets), container ports, volume mounts (the claim is the demo
weights folder bound read-only, the Secret volume its files, the Memory emptyDir on /dev/shm as shm),
and the probes, executed by this test against the container with their own period, timeout and
threshold. The gateway finds the engine by the Service's cluster DNS name (mapped to the engine
container's address, as the ClusterIP Service would route it) and keeps keys and usage in PostgreSQL.

What differs from a cluster, and why: the gateway image is built here from the CPU engine image plus
llmnest's wheel (no registry holds an llmnest image); the PostgreSQL the test starts listens on
loopback, so a small TCP relay on the Docker bridge stands for the cluster's database Service;
resource requests are not enforced. `make test` starts dockerd and builds the CPU image first.

The keys `llmnest keys create --deployment NAME` and `up` make through the gateway pod: the exact commands
PodExecChannel sends (channel.exec_command, channel.chat_command) run with `docker exec` in the gateway
container, standing in for the API server's pods/exec (which runs them the same way: an argument list in the
container, with its environment); the chat check's URL, the gateway Service's cluster DNS name on port 80, is
the container's own port here (no Service routes port 80 to it).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmnest.spec_builder import UpRequest
from llmnest.catalog import demo_model
from llmnest.runtimes.docker import LOCAL_CPU_IMAGE
from llmnest.targets import get as get_target
from llmnest.gateway.remote_admin import ChannelResult, RemoteAdmin
from llmnest.targets.kubernetes import manifests
from llmnest.targets.kubernetes.channel import CONTAINER, chat_command, exec_command, service_url
from llmnest.targets.kubernetes.placement import KubernetesPlacement
from tests.conftest import REPO, cli_env, run_cli
from tests.services import postgres_url  # noqa: F401  (a fixture)

pytestmark = pytest.mark.e2e

NAME = "kdemo"
NS = "llm"
NETWORK = "llmnest-k8s-e2e"
GATEWAY_IMAGE = "llmnest/llmnest:e2e"
METRICS_TOKEN = "sk-metrics-" + secrets.token_urlsafe(12)
VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def docker(*args: str, check: bool = True, timeout: float = 600) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])}: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion in command, args and env values ($$ escapes; unknown stays)."""
    return VAR.sub(lambda m: env.get(m[1], m[0]), text.replace("$$", "\0")).replace("\0", "$")


def secret_data(objs: list[dict], extra: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {**{o["metadata"]["name"]: o["stringData"] for o in objs if o["kind"] == "Secret"}, **extra}


def container_env(container: dict, secrets_: dict[str, dict[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets_[ref["name"]][ref["key"]]
        else:
            env[item["name"]] = expand(item["value"], env)
    return env


def run_pod_container(pod: dict, container: dict, name: str, secrets_: dict[str, dict[str, str]],
                      claims: dict[str, Path], workdir: Path, hosts: dict[str, str]) -> str:
    """`docker run` of one container as its pod spec defines it; returns its address on the network."""
    env = container_env(container, secrets_)
    argv = ["run", "--detach", "--name", name, "--network", NETWORK, "--hostname", name]
    for host, ip in hosts.items():
        argv += ["--add-host", f"{host}:{ip}"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        ro = ":ro" if mount.get("readOnly") else ""
        if "persistentVolumeClaim" in volume:
            argv += ["--volume", f"{claims[volume['persistentVolumeClaim']['claimName']]}:{mount['mountPath']}{ro}"]
        elif "secret" in volume:
            folder = Path(tempfile.mkdtemp(dir=workdir))
            for key, value in secrets_[volume["secret"]["secretName"]].items():
                (folder / key).write_text(value)
            folder.chmod(0o755)
            argv += ["--volume", f"{folder}:{mount['mountPath']}{ro}"]
        elif volume.get("emptyDir", {}).get("medium") == "Memory" and mount["mountPath"] == "/dev/shm":
            argv += ["--shm-size", volume["emptyDir"]["sizeLimit"].replace("Gi", "g")]
        else:
            raise AssertionError(f"volume {volume} is not modelled by this test")
    for key in env:
        argv += ["--env", key]  # values through the environment of `docker run`, never its argv
    command = [expand(w, env) for w in container["command"] + container.get("args", [])]
    argv += ["--entrypoint", command[0], container["image"], *command[1:]]
    done = subprocess.run(["docker", *argv], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    return docker("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)


def probe(container: dict, which: str, ip: str, name: str) -> int:
    """Run one of the container's httpGet probes as the kubelet would; returns the attempts it took.

    A startup or liveness probe must pass before failureThreshold consecutive failures (else the kubelet
    restarts the container); readiness keeps the pod out of its Service until it passes (bounded here)."""
    spec = container[which]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}.get(spec["httpGet"]["port"], spec["httpGet"]["port"])
    url = f"http://{ip}:{port}{spec['httpGet']['path']}"
    threshold = spec.get("failureThreshold", 3)
    if which == "readinessProbe":
        threshold = max(threshold * 10, 30)
    for attempt in range(1, threshold + 1):
        try:
            if httpx.get(url, timeout=spec.get("timeoutSeconds", 1), trust_env=False).status_code < 400:
                return attempt
        except httpx.HTTPError:
            pass
        state = docker("inspect", "--format", "{{.State.Status}}", name)
        assert state == "running", f"{name} {state}: {docker('logs', '--tail', '30', name, check=False)}"
        time.sleep(spec.get("periodSeconds", 10))
    raise AssertionError(f"{which} of {name} failed {threshold} times; log: {docker('logs', '--tail', '30', name)}")


class Relay:
    """TCP relay from the Docker bridge to a loopback-only server (the database Service's stand-in)."""

    def __init__(self, bind_ip: str, target_port: int) -> None:
        self.server = socket.create_server((bind_ip, 0))
        self.port = self.server.getsockname()[1]
        self.target = ("127.0.0.1", target_port)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


def build_gateway_image(workdir: Path) -> None:
    """llmnest's wheel and its dependencies installed into the CPU engine image's venv, committed."""
    wheels = workdir / "wheels"
    py = sys.executable
    source = workdir / "source"  # a copy: building in the checkout would leave src/llmnest.egg-info there
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([py, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)], check=True)
    wheel = next(wheels.glob("llmnest-*.whl"))
    python = docker("run", "--rm", "--entrypoint", "sh", LOCAL_CPU_IMAGE, "-c", "command -v python3")
    version = docker("run", "--rm", "--entrypoint", python, LOCAL_CPU_IMAGE, "-c",
                     "import platform; print(platform.python_version())")  # markers compare the full version
    subprocess.run([py, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", version,
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "-d", str(wheels),
                    # pip download compares python_full_version markers as X.Y.0: redis needs async-timeout below 3.11.3
                    f"llmnest[shared] @ {wheel.as_uri()}", "async-timeout>=4.0.3"], check=True, timeout=900)
    docker("rm", "--force", "llmnest-gateway-build", check=False)
    docker("run", "--name", "llmnest-gateway-build", "--volume", f"{wheels}:/wheels:ro", "--entrypoint", python,
           LOCAL_CPU_IMAGE, "-m", "pip", "install", "-q", "--no-index", "--find-links", "/wheels",
           f"/wheels/{wheel.name}[shared]", timeout=900)
    bindir = str(Path(python).parent)
    docker("rmi", GATEWAY_IMAGE, check=False)  # the previous run's build, else left dangling
    docker("commit", "--change", f"ENV PATH={bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "llmnest-gateway-build", GATEWAY_IMAGE)
    docker("rm", "--force", "llmnest-gateway-build", check=False)


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[dict]:  # noqa: F811
    assert docker("image", "inspect", LOCAL_CPU_IMAGE, check=False), f"no {LOCAL_CPU_IMAGE}: run `make image`"
    workdir = tmp_path_factory.mktemp("k8s-pods")
    workdir.chmod(0o755)
    home = workdir / "home"
    env = cli_env(home)
    build_gateway_image(workdir)
    spec = get_target("local").resolve(UpRequest(model=demo_model().key, name=NAME, runtime="docker",
                                                 sets={"image": LOCAL_CPU_IMAGE})).spec
    place = KubernetesPlacement(namespace=NS, weights="pvc:demo-weights", gateway_image=GATEWAY_IMAGE,
                                load_timeout_s=900, expose="intranet")
    objs = manifests.render(spec, place, "sk-internal-" + secrets.token_urlsafe(18), METRICS_TOKEN)
    weights = _demo_weights(home)
    for name in (f"{NAME}-engine", f"{NAME}-gateway"):
        docker("rm", "--force", name, check=False)
    docker("network", "rm", NETWORK, check=False)
    docker("network", "create", NETWORK)
    bridge_ip = docker("network", "inspect", "--format", "{{(index .IPAM.Config 0).Gateway}}", NETWORK)
    relay = Relay(bridge_ip, int(postgres_url.rsplit(":", 1)[1].split("/")[0]))
    db_in_cluster = f"postgresql://llmnest@{bridge_ip}:{relay.port}/postgres"
    found = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    try:
        yield {"objs": objs, "found": found, "secrets": secret_data(objs, {"llmnest-gateway-db": {"url": db_in_cluster}}),
               "weights": weights, "workdir": workdir, "env": env, "db": postgres_url}
    finally:
        for name in (f"{NAME}-engine", f"{NAME}-gateway"):
            docker("rm", "--force", name, check=False)
        docker("network", "rm", NETWORK, check=False)
        relay.close()


class DockerExec:
    """PodExecChannel's commands run by `docker exec` in the gateway container (the API server's exec here)."""

    def __init__(self, container: str) -> None:
        self.container = container
        self.ran: list[list[str]] = []

    def execute(self, command: list[str], stdin: str | None = None) -> ChannelResult:
        self.ran.append(command)
        done = subprocess.run(["docker", "exec", *(["-i"] if stdin is not None else []), self.container, *command],
                              input=stdin, capture_output=True, text=True, timeout=120)
        return ChannelResult(done.returncode, done.stdout, done.stderr)

    def run(self, argv: list[str]) -> ChannelResult:
        return self.execute(exec_command(argv))


def _demo_weights(home: Path) -> Path:
    done = subprocess.run([sys.executable, "-c", "from llmnest.catalog import demo_model; from llmnest.demo import "
                           "demo_weights; print(demo_weights(demo_model(), print))"],
                          env=cli_env(home), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


def test_the_pod_specs_serve_the_demo_behind_the_gateway_with_a_key(pods: dict) -> None:
    found, secrets_ = pods["found"], pods["secrets"]
    engine_pod = found[("Deployment", f"{NAME}-engine")]["spec"]["template"]["spec"]
    engine = engine_pod["containers"][0]
    assert engine["image"] == LOCAL_CPU_IMAGE and "initContainers" not in engine_pod
    engine_ip = run_pod_container(engine_pod, engine, f"{NAME}-engine", secrets_,
                                  {"demo-weights": pods["weights"]}, pods["workdir"], {})
    assert probe(engine, "startupProbe", engine_ip, f"{NAME}-engine") >= 1
    probe(engine, "readinessProbe", engine_ip, f"{NAME}-engine")
    probe(engine, "livenessProbe", engine_ip, f"{NAME}-engine")
    engine_key = secrets_[f"{NAME}-engine-key"]["key"]
    body = {"model": json.loads(secrets_[f"{NAME}-gateway-upstreams"]["upstreams.json"])[0]["model"],
            "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16}
    assert httpx.post(f"http://{engine_ip}:8000/v1/chat/completions", json=body, timeout=120,
                      trust_env=False).status_code == 401  # the key from the Secret reached vLLM
    direct = httpx.post(f"http://{engine_ip}:8000/v1/chat/completions", json=body, timeout=300, trust_env=False,
                        headers={"Authorization": f"Bearer {engine_key}"})
    assert direct.status_code == 200, direct.text

    service = found[("Service", f"{NAME}-engine")]
    dns = f"{service['metadata']['name']}.{NS}.svc.cluster.local"
    gw_pod = found[("Deployment", f"{NAME}-gateway")]["spec"]["template"]["spec"]
    gateway = gw_pod["containers"][0]
    gw_ip = run_pod_container(gw_pod, gateway, f"{NAME}-gateway", secrets_, {}, pods["workdir"], {dns: engine_ip})
    probe(gateway, "livenessProbe", gw_ip, f"{NAME}-gateway")
    probe(gateway, "readinessProbe", gw_ip, f"{NAME}-gateway")

    made = run_cli(pods["env"], "keys", "create", "team-a", "--db", pods["db"], "--json")
    assert made.returncode == 0, made.stderr
    user_key = json.loads(made.stdout)["key"]
    port = found[("Service", f"{NAME}-gateway")]["spec"]["ports"][0]["targetPort"]
    assert port == "http" and gateway["ports"][0]["containerPort"] == 8080
    url = f"http://{gw_ip}:8080/v1/chat/completions"
    assert httpx.post(url, json=body, timeout=60, trust_env=False).status_code == 401
    assert httpx.post(url, json=body, timeout=60, trust_env=False,
                      headers={"Authorization": f"Bearer {engine_key}"}).status_code == 401  # not a user key
    reply = httpx.post(url, json=body, timeout=300, trust_env=False, headers={"Authorization": f"Bearer {user_key}"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"].strip()
    usage = {r["name"]: r for r in json.loads(run_cli(pods["env"], "keys", "ls", "--db", pods["db"], "--json").stdout)}
    assert usage["team-a"]["requests"] >= 1 and usage["team-a"]["completion_tokens"] > 0
    # keys through the gateway pod, as `keys create --deployment` and `up` make them (see the module's docstring)
    assert gateway["name"] == CONTAINER
    channel = DockerExec(f"{NAME}-gateway")
    _, pod_key = RemoteAdmin(channel, NAME).create_key(NAME, {"models": [body["model"]]})
    assert all(pod_key not in " ".join(c) for c in channel.ran)  # its hash went in, the secret stayed here
    check = [f"http://127.0.0.1:{gateway['ports'][0]['containerPort']}/v1" if w == service_url(NAME, NS, 8080) else w
             for w in chat_command(NAME, NS, 8080, body["model"])]
    answer = channel.execute(check, stdin=pod_key)
    assert answer.exit_code == 0 and answer.stdout.startswith("200\n") and '"choices"' in answer.stdout, answer
    reply = httpx.post(url, json=body, timeout=300, trust_env=False, headers={"Authorization": f"Bearer {pod_key}"})
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"].strip(), reply.text
    rows = {r["name"]: r for r in json.loads(run_cli(pods["env"], "keys", "ls", "--db", pods["db"], "--json").stdout)}
    assert rows[NAME]["models"] == [body["model"]] and rows[NAME]["requests"] == 2  # the check, then the chat
    # /metrics from outside the pod (as Prometheus scrapes it): only with the token of the rendered Secret
    metrics = f"http://{gw_ip}:8080/metrics"
    assert httpx.get(metrics, timeout=30, trust_env=False).status_code == 403
    scraped = httpx.get(metrics, timeout=30, trust_env=False, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200 and "llmnest_requests_total" in scraped.text, scraped.text[:300]
    text = manifests.to_yaml(pods["objs"])
    assert user_key not in text and user_key not in " ".join(gateway["args"] + engine["args"])
