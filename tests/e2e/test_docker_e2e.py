"""The docker runtime against a real Docker engine: the demo in the local CPU image (`make image`),
deployed, crashed and removed through the CLI; bad input refused before anything is created.

`make test` installs and starts the engine (scripts/dockerd-up.sh) and builds the image
(scripts/build-image.sh) before pytest runs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmnest.targets.aliyun import bootstrap
from llmnest.targets.aliyun.placement import AliyunPlacement
from llmnest.targets.aliyun.sizing import resolve
from llmnest.runtimes.docker import LOCAL_CPU_IMAGE, run_argv
from llmnest.spec import DeploymentSpec
from tests.conftest import cli_env, free_port, run_cli
from tests.e2e.conftest import Demo

pytestmark = pytest.mark.e2e

NAME = "demo-docker"


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


def _container_exists(name: str) -> bool:
    return name in _docker("ps", "-a", "--format", "{{.Names}}").stdout.split()


def _answers(demo: Demo) -> bool:
    try:
        return demo.chat("Hi", max_tokens=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def docker_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`llmnest up --runtime docker` of the demo in the local CPU image; `down` on teardown."""
    assert _docker("image", "inspect", LOCAL_CPU_IMAGE).returncode == 0, f"no {LOCAL_CPU_IMAGE}: run `make image`"
    home = tmp_path_factory.mktemp("llmnest-docker")
    env = cli_env(home)
    _docker("rm", "--force", NAME)  # a container left by an interrupted earlier run
    port = free_port()
    done = run_cli(env, "up", "--name", NAME, "--runtime", "docker", "--set", f"image={LOCAL_CPU_IMAGE}",
                   "--port", str(port), "--json", timeout=1200)
    assert done.returncode == 0, f"llmnest up --runtime docker failed:\n{done.stderr}"
    info = json.loads(done.stdout)
    demo = Demo(NAME, info["base_url"], info["api_key"], info["served_model_name"], home, env, port)
    try:
        yield demo
    finally:
        if _container_exists(NAME):  # a failed test must not leave the container running
            run_cli(env, "down", NAME)
            _docker("rm", "--force", NAME)


def test_answers_in_a_container_and_requires_the_key(docker_demo: Demo) -> None:
    reply = docker_demo.chat("What is the capital of France? Answer in one sentence.")
    assert reply.status_code == 200, reply.text
    assert "paris" in reply.json()["choices"][0]["message"]["content"].lower()
    assert docker_demo.chat("Hi", key="sk-wrong-key").status_code == 401
    no_key = httpx.post(f"{docker_demo.base_url}/chat/completions",
                        json={"model": docker_demo.model, "messages": []}, timeout=30)
    assert no_key.status_code == 401
    running = _docker("inspect", "--format", "{{.State.Running}} {{.Config.Image}}", NAME).stdout.split()
    assert running == ["true", LOCAL_CPU_IMAGE]


def test_the_container_runs_the_rendered_docker_run(docker_demo: Demo) -> None:
    """What the container runs is `run_argv` of the deployment's spec (its replica's, on the loopback port
    behind the gateway), option by option."""
    spec = _spec(docker_demo).listening_on("127.0.0.1", docker_demo.replica()["port"])
    argv, _ = run_argv(spec, spec.model_path or "", "key")
    fmt = ("{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{.HostConfig.RestartPolicy.Name}}|"
           "{{.HostConfig.NetworkMode}}|{{.HostConfig.IpcMode}}|{{json .HostConfig.Binds}}")
    entrypoint, cmd, restart, net, ipc, binds = _docker("inspect", "--format", fmt, NAME).stdout.strip().split("|")
    image_at = argv.index(LOCAL_CPU_IMAGE)
    assert json.loads(entrypoint) == [argv[argv.index("--entrypoint") + 1]]
    assert json.loads(cmd) == argv[image_at + 1:]
    assert restart == argv[argv.index("--restart") + 1] == "unless-stopped"
    assert f"--net={net}" in argv and f"--ipc={ipc}" in argv
    assert json.loads(binds) == [argv[argv.index("--volume") + 1]]


def test_cloud_bootstrap_runs_the_same_docker_run(docker_demo: Demo) -> None:
    """The instance bootstrap's `docker run` is `run_argv` too: for this deployment's spec placed on
    Alibaba Cloud, it has the container options of the container tested here, except the host weights
    path, the GPU (`--gpus all`) and device settings passed as `--env`; the engine flags tested here
    are all in it (the cloud adds GPU flags; the engine binds loopback behind the instance's gateway)."""
    local = _spec(docker_demo)
    cloud = resolve(local.model_copy(update={"target": "aliyun", "placement": AliyunPlacement(region="cn-hangzhou"),
                                             "gateway": False}))
    script = bootstrap.bootstrap_body(cloud).replace("\\\n", " ")
    runs = [shlex.split(line) for line in script.splitlines() if line.lstrip().startswith("docker run ")]
    assert len(runs) == 1, runs
    in_script = runs[0]
    behind_gateway = cloud.listening_on("127.0.0.1", bootstrap.engine_port(cloud))  # the gateway has the port
    expected, _ = run_argv(behind_gateway, bootstrap.host_model_dir(cloud), bootstrap.KEY_PLACEHOLDER)
    assert in_script == expected
    here, _ = run_argv(local, local.model_path or "", "key")
    assert _container_options(in_script) == _container_options(here)
    assert "VLLM_API_KEY" in in_script and "VLLM_API_KEY" in here  # by name: the value never in argv
    cloud_flags = {w for w in _engine_argv(in_script) if w.startswith("--")}
    assert {w for w in _engine_argv(here) if w.startswith("--")} <= cloud_flags
    assert _engine_argv(in_script)[:2] == _engine_argv(here)[:2] == ["-m", "vllm.entrypoints.openai.api_server"]


def _spec(demo: Demo) -> DeploymentSpec:
    shown = json.loads(demo.cli("show", demo.name, "--json").stdout)
    shown.pop("api_key")  # `show` says where the key is; it is not a spec field
    return DeploymentSpec.model_validate(shown)


def _container_options(argv: list[str]) -> list[str]:
    """`docker run` options up to the image, without `--gpus all` and `--env` pairs, with the
    weights' host directory left out of the volume."""
    options = argv[: argv.index("--entrypoint") + 2]
    out: list[str] = []
    skip = 0
    for i, word in enumerate(options):
        if skip:
            skip -= 1
            continue
        if word in {"--gpus", "--env"}:
            skip = 1
            continue
        out.append(word.split(":", 1)[1] if i and options[i - 1] == "--volume" else word)
    return out


def _engine_argv(argv: list[str]) -> list[str]:
    return argv[argv.index("--entrypoint") + 3:]


def test_a_crashed_engine_comes_back_by_itself(docker_demo: Demo) -> None:
    pid = int(_docker("inspect", "--format", "{{.State.Pid}}", NAME).stdout)
    assert pid > 0
    os.kill(pid, 9)  # a crash of the container's main process, seen from the host (not `docker kill`)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        restarted = _docker("inspect", "--format", "{{.RestartCount}} {{.State.Pid}}", NAME).stdout.split()
        if restarted and int(restarted[0]) >= 1 and _answers(docker_demo):
            break
        time.sleep(2)
    else:
        pytest.fail("the container did not restart and answer again within 600 s")
    assert int(restarted[1]) != pid
    info = docker_demo.wait_ready(timeout=120)  # the supervisor saw the restart and the engine answer again
    container = info["replicas"][0]["container"]
    assert container["restarts_by_docker"] >= 1 and container["state"] == "running"
    assert info["restarts"] >= 1 and "Docker restarted it" in (info["last_error"] or "")
    assert docker_demo.chat("Hi", key="sk-wrong-key").status_code == 401


def test_logs_show_the_container_log(docker_demo: Demo) -> None:
    done = docker_demo.cli("logs", NAME, "--tail", "500")
    assert done.returncode == 0, done.stderr
    container_log = _docker("logs", "--tail", "500", NAME)
    shown = (done.stdout + done.stderr).splitlines()  # docker logs keeps the engine's stdout and stderr apart
    assert shown and set(shown) <= set((container_log.stdout + container_log.stderr).splitlines())
    assert any("Uvicorn running" in line or "Application startup complete" in line for line in shown)


def test_down_removes_the_container(docker_demo: Demo) -> None:
    done = docker_demo.cli("down", NAME)
    assert done.returncode == 0, done.stderr
    assert not _container_exists(NAME)
    assert json.loads(docker_demo.cli("ls", "--json").stdout) == []


# -- bad input: one line, exit 2 or 3, nothing left behind --------------------------------------------

def _refused(home: Path, env_changes: dict[str, str], image: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(home) | env_changes
    name = "refused"
    done = run_cli(env, "up", "--name", name, "--runtime", "docker", "--set", f"image={image}",
                   "--port", str(free_port()), timeout=300)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()  # progress lines ("• pulling IMAGE"), then the one error line
    assert lines[-1].startswith("error: ") and all(line.startswith("• ") for line in lines[:-1]), done.stderr
    listed = run_cli(env, "ls", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    assert not _container_exists(name)
    return done


def test_engine_not_running_is_refused(tmp_path: Path) -> None:
    done = _refused(tmp_path / "home", {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}, LOCAL_CPU_IMAGE)
    assert done.returncode == 3
    assert "does not answer" in done.stderr and "no-docker.sock" in done.stderr and "start it" in done.stderr


def test_missing_image_is_refused(tmp_path: Path) -> None:
    done = _refused(tmp_path / "home", {}, "llmnest/no-such-image:never")
    assert done.returncode == 2
    assert "llmnest/no-such-image:never" in done.stderr and "make image" in done.stderr


def test_docker_cli_missing_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    done = _refused(tmp_path / "home", {"PATH": str(bare)}, LOCAL_CPU_IMAGE)
    assert done.returncode == 3 and "docker is not installed" in done.stderr


def test_a_container_name_in_use_is_refused(tmp_path: Path) -> None:
    _docker("create", "--name", "taken", LOCAL_CPU_IMAGE, "-c", "pass")
    try:
        env = cli_env(tmp_path / "home")
        done = run_cli(env, "up", "--name", "taken", "--runtime", "docker", "--set", f"image={LOCAL_CPU_IMAGE}",
                       "--port", str(free_port()), timeout=300)
        assert done.returncode == 3 and done.stderr.strip().splitlines() == [
            "error: a docker container named 'taken' exists and llmnest did not make it for this deployment; "
            "pick another --name, or remove it (`docker rm -f taken`)"], done.stderr
        assert json.loads(run_cli(env, "ls", "--json").stdout) == []
        assert _docker("inspect", "--format", "{{.State.Status}}", "taken").stdout.strip() == "created"  # untouched
    finally:
        _docker("rm", "--force", "taken")
