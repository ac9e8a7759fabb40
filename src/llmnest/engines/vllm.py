"""vLLM's OpenAI-compatible server, rendered from a spec (GPU build and CPU build)."""

from __future__ import annotations

from ..spec import DeploymentSpec
from .base import Launch, flag_args

MODULE = "vllm.entrypoints.openai.api_server"
DEFAULT_IMAGE = "vllm/vllm-openai:v0.33.0"
REASONING_PARSERS = {"qwen3": "qwen3", "deepseek_r1": "deepseek_r1"}
API_KEY_ENV = "VLLM_API_KEY"  # read by vLLM at start: keeps the key out of `ps`


def launch(spec: DeploymentSpec, model_path: str, api_key: str | None) -> Launch:
    """The vLLM server for `spec`, serving the weights at `model_path`."""
    args = [
        "--model", model_path,
        "--served-model-name", spec.served_model_name,
        "--host", spec.host,
        "--port", str(spec.port),
    ]
    if spec.max_model_len:
        args += ["--max-model-len", str(spec.max_model_len)]
    if spec.trust_remote_code:
        args.append("--trust-remote-code")
    if spec.enable_chunked_prefill:
        args.append("--enable-chunked-prefill")
    if spec.enforce_eager:
        args.append("--enforce-eager")
    if spec.device == "cuda":
        args += ["--gpu-memory-utilization", str(spec.gpu_memory_utilization)]
        args += ["--tensor-parallel-size", str(spec.tensor_parallel_size)]
        if spec.pipeline_parallel_size > 1:
            args += ["--pipeline-parallel-size", str(spec.pipeline_parallel_size)]
    if spec.reasoning_parser:
        args += ["--reasoning-parser", REASONING_PARSERS.get(spec.reasoning_parser, spec.reasoning_parser)]
    args += flag_args(spec.engine_args)

    env = dict(spec.env)
    if spec.device == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(spec.cpu_kv_cache_gib))
    if api_key:
        env[API_KEY_ENV] = api_key
    return Launch(MODULE, tuple(args), env)
