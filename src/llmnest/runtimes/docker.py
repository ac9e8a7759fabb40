"""The docker runtime: the engine in a container, the way the seed runs it on a GPU host.

`run_argv` is a pure function of the spec; the functions below it are the thin edge that calls the
docker CLI. `check_can_run` refuses, before anything is recorded, what would fail at `docker run`.
On a machine without a GPU, `make image` builds a local CPU image (llmnest/vllm-cpu:local) to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..engines import default_image, render_launch
from ..engines.vllm import API_KEY_ENV
from ..errors import BadInput, Conflict, LlmnestError
from ..spec import DeploymentSpec

CONTAINER_MODEL_ROOT = PurePosixPath("/root/llm-model")
LOCAL_CPU_IMAGE = "llmnest/vllm-cpu:local"  # built by `make image` (scripts/build-image.sh)
NO_DOCKER = "docker is not installed; install Docker (Debian: apt-get install docker.io) or use --runtime process"


def container_model_path(spec: DeploymentSpec) -> str:
    """Where the weights appear inside the container: /root/llm-model/<model id>, as in the seed."""
    name = spec.model if "/" in spec.model and not spec.model.startswith("/") else PurePosixPath(spec.model).name
    return str(CONTAINER_MODEL_ROOT / name)


def image_of(spec: DeploymentSpec) -> str:
    """The image the container runs: `--set image=...`, else the engine's public image."""
    return spec.image or default_image(spec.engine)


def container_name(name: str, replica: int = 0) -> str:
    """The container of a deployment's replica: NAME, then NAME.r1, NAME.r2 (a dot no deployment name has)."""
    return name if replica == 0 else f"{name}.r{replica}"


def run_argv(spec: DeploymentSpec, host_model_path: str, api_key: str | None,
             container: str | None = None) -> tuple[list[str], dict[str, str]]:
    """`docker run` for `spec` (as container `container`, default the spec's name) and the environment the
    docker CLI needs (the API key, by reference).

    The key reaches the container as `-e VLLM_API_KEY` (the value is taken from the caller's
    environment, so it never appears in the command line); SGLang takes it as a flag.
    """
    inner = container_model_path(spec)
    launch = render_launch(spec, inner, api_key)
    argv = [
        "docker", "run", "--detach",
        "--name", container or spec.name,
        "--restart", "unless-stopped",
        "--net=host", "--ipc=host",
        "--shm-size", "16g",
    ]
    if spec.device == "cuda":
        argv += ["--gpus", "all"]
    argv += ["--volume", f"{host_model_path}:{inner}:ro"]
    cli_env: dict[str, str] = {}
    for key, value in launch.env.items():
        if key == API_KEY_ENV:
            argv += ["--env", key]
            cli_env[key] = value
        else:
            argv += ["--env", f"{key}={value}"]
    argv += ["--entrypoint", "python3", image_of(spec), "-m", launch.module, *launch.args]
    return argv, cli_env


@dataclass(frozen=True)
class ContainerState:
    status: str  # created, running, restarting, exited, dead, paused
    restarts: int
    exit_code: int
    pid: int
    started_at: str
    error: str


def call(*args: str, env: dict[str, str] | None = None, timeout: float | None = 120, check: bool = True) -> str:
    """`docker ARGS`; its stdout. A failure (with check) is one line from docker's own stderr."""
    done = _run(*args, env=env, timeout=timeout)
    if done.returncode != 0 and check:
        raise LlmnestError(f"docker {args[0]} failed: {_last_line(done.stderr)}")
    return done.stdout.strip()


def _run(*args: str, env: dict[str, str] | None = None, timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
        )
    except FileNotFoundError:
        raise Conflict(NO_DOCKER) from None
    except subprocess.TimeoutExpired:
        raise Conflict(f"docker {args[0]} did not answer within {timeout:.0f} s; is the Docker engine healthy?") from None


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def check_can_run(spec: DeploymentSpec, say: Callable[[str], None]) -> None:
    """Before anything is recorded: the docker CLI, an engine that answers, and the image (pulled if
    missing). Each refusal is one line: what is missing and how to get it."""
    if shutil.which("docker") is None:
        raise Conflict(NO_DOCKER)
    info = _run("info", "--format", "{{.ServerVersion}}", timeout=30)
    if info.returncode != 0 or not info.stdout.strip():
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise Conflict(f"the Docker engine does not answer at {where}; start it (`systemctl start docker`, "
                       "or `scripts/dockerd-up.sh` in the llmnest repository) or use --runtime process")
    image = image_of(spec)
    if _run("image", "inspect", "--format", "{{.Id}}", image, timeout=30).returncode == 0:
        return
    say(f"pulling {image} (it is not on this machine yet; large engine images take minutes)")
    pulled = _run("pull", "--quiet", image, timeout=None)
    if pulled.returncode != 0:
        build = "`make image` builds it" if image == LOCAL_CPU_IMAGE else f"`make image` builds {LOCAL_CPU_IMAGE}"
        raise BadInput(f"image {image} is not on this machine and cannot be pulled ({_last_line(pulled.stderr)}); "
                       f"{build}, or pass --set image=IMAGE with one that exists")


def start(spec: DeploymentSpec, host_model_path: str, api_key: str | None, container: str) -> str:
    """Start the container; returns its id."""
    argv, env = run_argv(spec, host_model_path, api_key, container)
    return call(*argv[1:], env=env)


def remove(name: str) -> None:
    """Remove the container, running or not; a container that is already gone is fine."""
    call("rm", "--force", name, check=False)


def inspect(name: str, missing_ok: bool = False) -> ContainerState | None:
    """State, restart count, exit code and main pid of the container (None when it does not exist)."""
    fmt = "{{.State.Status}}|{{.RestartCount}}|{{.State.ExitCode}}|{{.State.Pid}}|{{.State.StartedAt}}|{{.State.Error}}"
    try:
        out = call("inspect", "--format", fmt, name)
    except LlmnestError:
        if missing_ok:
            return None
        raise
    status, restarts, code, pid, started, error = out.split("|", 5)
    return ContainerState(status, int(restarts), int(code), int(pid), started, error)


def log_lines(name: str, tail: int) -> list[str]:
    """The container's last `tail` log lines (stdout and stderr)."""
    done = subprocess.run(["docker", "logs", "--tail", str(tail), name], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace", timeout=60)
    return done.stdout.splitlines()


def logs_argv(name: str, follow: bool, tail: int) -> list[str]:
    return ["docker", "logs", "--tail", str(tail), *(["--follow"] if follow else []), name]
