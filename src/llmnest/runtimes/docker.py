"""The docker runtime: the engine in a container, the way the seed runs it on a GPU host.

`run_argv` is a pure function of the spec; the functions below it are the thin edge that calls the
docker CLI. No Docker engine runs on a CPU-only development machine: the rendering is unit-tested.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import PurePosixPath

from ..engines import default_image, render_launch
from ..engines.vllm import API_KEY_ENV
from ..errors import LlmnestError
from ..spec import DeploymentSpec

CONTAINER_MODEL_ROOT = PurePosixPath("/root/llm-model")


def container_model_path(spec: DeploymentSpec) -> str:
    """Where the weights appear inside the container: /root/llm-model/<model id>, as in the seed."""
    name = spec.model if "/" in spec.model and not spec.model.startswith("/") else PurePosixPath(spec.model).name
    return str(CONTAINER_MODEL_ROOT / name)


def run_argv(spec: DeploymentSpec, host_model_path: str, api_key: str | None) -> tuple[list[str], dict[str, str]]:
    """`docker run` for `spec` and the environment the docker CLI needs (the API key, by reference).

    The key reaches the container as `-e VLLM_API_KEY` (the value is taken from the caller's
    environment, so it never appears in the command line); SGLang takes it as a flag.
    """
    inner = container_model_path(spec)
    launch = render_launch(spec, inner, api_key)
    argv = [
        "docker", "run", "--detach",
        "--name", spec.name,
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
    argv += ["--entrypoint", "python3", spec.image or default_image(spec.engine), "-m", launch.module, *launch.args]
    return argv, cli_env


def _docker(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    try:
        done = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
        )
    except FileNotFoundError:
        raise LlmnestError("docker is not installed; use --runtime process") from None
    if done.returncode != 0:
        raise LlmnestError(f"docker {args[0]} failed: {done.stderr.strip().splitlines()[-1] if done.stderr else ''}")
    return done.stdout.strip()


def start(spec: DeploymentSpec, host_model_path: str, api_key: str | None) -> str:
    """Start the container; returns its id."""
    argv, env = run_argv(spec, host_model_path, api_key)
    return _docker(*argv[1:], env=env)


def stop(name: str) -> None:
    _docker("rm", "--force", name)


def inspect(name: str) -> dict[str, str]:
    """Running state, restart count and start time of the container."""
    fmt = "{{.State.Status}}|{{.RestartCount}}|{{.State.StartedAt}}|{{.State.Error}}"
    status, restarts, started, error = _docker("inspect", "--format", fmt, name).split("|", 3)
    return {"status": status, "restarts": restarts, "started_at": started, "error": error}


def logs_argv(name: str, follow: bool, tail: int) -> list[str]:
    return ["docker", "logs", "--tail", str(tail), *(["--follow"] if follow else []), name]
