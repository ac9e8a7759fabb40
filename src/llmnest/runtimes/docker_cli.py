"""The docker CLI on this machine: the thin edge that runs what `docker` renders, and reads containers back.

`check_can_run` refuses, before anything is recorded, what would fail at `docker run`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BadInput, Conflict, LlmnestError
from ..spec import DeploymentSpec
from .docker import LOCAL_CPU_IMAGE, image_of, run_argv

NO_DOCKER = "docker is not installed; install Docker (Debian: apt-get install docker.io) or use --runtime process"


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
