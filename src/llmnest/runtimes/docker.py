"""The docker runtime, rendered: the engine in a container the way the seed runs it on a GPU host.

Pure functions of the spec (`run_argv`, the image, the container's name and model path), used on this
machine (`docker_cli` runs them) and by the cloud bootstrap, which prints the same `docker run`.
On a machine without a GPU, `make image` builds a local CPU image (llmnest/vllm-cpu:local) to run.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from ..engines import default_image, render_launch
from ..engines.vllm import API_KEY_ENV
from ..spec import DeploymentSpec

CONTAINER_MODEL_ROOT = PurePosixPath("/root/llm-model")
LOCAL_CPU_IMAGE = "llmnest/vllm-cpu:local"  # built by `make image` (scripts/build-image.sh)


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


def logs_argv(name: str, follow: bool, tail: int) -> list[str]:
    """`docker logs` of a container: its last `tail` lines, then (with follow) new ones until stopped."""
    return ["docker", "logs", "--tail", str(tail), *(["--follow"] if follow else []), name]
