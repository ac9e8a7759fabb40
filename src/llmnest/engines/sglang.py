"""SGLang's server, rendered from a spec (NVIDIA GPUs only)."""

from __future__ import annotations

from ..spec import DeploymentSpec
from .base import Launch, flag_args

MODULE = "sglang.launch_server"
DEFAULT_IMAGE = "lmsysorg/sglang:v0.5.23-cu129"
REASONING_PARSERS = {"qwen3": "qwen3", "deepseek_r1": "deepseek-r1"}


def launch(spec: DeploymentSpec, model_path: str, api_key: str | None) -> Launch:
    """The SGLang server for `spec`.

    No `--mem-fraction-static`: SGLang sizes it itself from the GPU's memory, TP and its CUDA graph and
    activation reserve (0.79-0.88 on A10/A100/H20; vLLM's utilization is another quantity). A user
    who wants a value passes it as an engine flag (`--set mem-fraction-static=0.85`)."""
    args = [
        "--model-path", model_path,
        "--served-model-name", spec.served_model_name,
        "--host", spec.host,
        "--port", str(spec.port),
        "--tp", str(spec.tensor_parallel_size),
    ]
    if spec.pipeline_parallel_size > 1:
        args += ["--pp-size", str(spec.pipeline_parallel_size)]
    if spec.max_model_len:
        args += ["--context-length", str(spec.max_model_len)]
    if spec.trust_remote_code:
        args.append("--trust-remote-code")
    if spec.enforce_eager:
        args.append("--disable-cuda-graph")
    if spec.reasoning_parser:
        args += ["--reasoning-parser", REASONING_PARSERS.get(spec.reasoning_parser, spec.reasoning_parser)]
    if api_key:
        args += ["--api-key", api_key]
    args += flag_args(spec.engine_args)
    return Launch(MODULE, tuple(args), dict(spec.env))
