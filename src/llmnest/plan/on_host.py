"""A deployment spec planned on this host (its CPU build or its GPUs), with another target's instance as the way
out when the caller says where to look (`elsewhere`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from ..catalog import CatalogModel
from ..engines import default_image
from ..errors import BadInput
from ..host import host_memory_bytes
from . import memory as mem
from .hardware import GpuModel, cuda_total_estimate_mib, find_gpu
from .planner import Plan, gib_text, plan_cpu, plan_gpus, up_flag

if TYPE_CHECKING:
    from ..host import Gpu
    from ..spec import DeploymentSpec

# (model, max_model_len, the engine planned) -> "on Alibaba Cloud: --target ... --instance-type ..." or None
Elsewhere = Callable[[CatalogModel, int, "mem.EngineSettings"], "str | None"]


def _host_gpu(gpu: Gpu) -> GpuModel:
    """The catalog entry for an nvidia-smi name, or one assumed modern (bf16, fp8) when unknown."""
    known = find_gpu(gpu.name)
    if known is not None:
        return known
    return GpuModel(key=gpu.name, display_name=gpu.name, memory_gb=max(1, gpu.memory_mib // 1024),
                    memory_mib=gpu.memory_mib, cuda_total_mib=cuda_total_estimate_mib(gpu.memory_mib),
                    compute_capability=8.0)


def _within_host_memory(plan: Plan, ram: int | None, replicas: int = 1) -> Plan:
    """The CPU build holds the weights and the KV space in RAM: both, for every replica, must fit in the
    host's memory."""
    need = replicas * (plan.weights_bytes + plan.kv_cache_bytes)
    if ram is None or need <= ram:
        return plan
    times = f"{replicas} x (" if replicas > 1 else ""
    return replace(
        plan, fits=False,
        reason=f"does not fit: {times}weights {gib_text(plan.weights_bytes)} + KV space "
               f"{gib_text(plan.kv_cache_bytes)}{')' if replicas > 1 else ''} exceed this host's {gib_text(ram)} of memory",
        suggestion="serve it on GPUs (`llmnest plan` ranks instance types), or pick a smaller model",
    )


def _int_flag(flags: dict[str, str], name: str) -> int | None:
    value = flags.get(name, "")
    return int(value) if value.isdigit() else None


def engine_settings(spec: DeploymentSpec, image: str) -> mem.EngineSettings:
    """The vLLM settings a spec runs with: its `max-num-seqs`, `max-num-batched-tokens` and `enforce-eager`
    engine flags, its environment (VLLM_USE_FLASHINFER_SAMPLER, ...), and the vLLM version `image`'s tag names
    (None when it names none: the plan then says it is unsure)."""
    flags = spec.engine_args
    return mem.EngineSettings(
        max_num_batched_tokens=_int_flag(flags, "max-num-batched-tokens"),
        max_num_seqs=_int_flag(flags, "max-num-seqs"),
        enforce_eager=spec.enforce_eager or flags.get("enforce-eager", "false").lower() not in ("false", "0"),
        vllm_version=mem.image_vllm_version(image), env=dict(spec.env),
    )


def plan_for_spec(spec: DeploymentSpec, model: CatalogModel, gpus: Sequence[Gpu],
                  elsewhere: Elsewhere | None = None) -> Plan:
    """Plan `spec` on this host: the CPU build's KV space, or the host's GPUs with the spec's settings; a GPU
    plan that does not fit also suggests what `elsewhere` names (another target's instance that fits).

    Honours the `kv-cache-dtype`, `block-size` and `dtype` engine flags and what `engine_settings` reads, with
    the vLLM version of the engine image (the spec's or the engine's default).
    """
    flags = spec.engine_args
    block = int(flags["block-size"]) if flags.get("block-size", "").isdigit() else None
    dtype = flags.get("dtype") if flags.get("dtype", "auto") != "auto" else None
    kv = flags.get("kv-cache-dtype")
    length = spec.max_model_len or model.context_length
    engine = engine_settings(spec, spec.image or default_image(spec.engine))
    if spec.device == "cpu":
        plan = plan_cpu(model, kv_cache_gib=spec.cpu_kv_cache_gib, max_model_len=length, dtype=dtype,
                        kv_dtype=kv, block_size=block, flag=up_flag)
        return _within_host_memory(plan, host_memory_bytes(), spec.replicas)
    used = spec.tensor_parallel_size * spec.pipeline_parallel_size
    if not gpus:
        raise BadInput("the spec asks for CUDA but this host has no NVIDIA GPU; use --set device=cpu")
    chosen = list(gpus)[:used]
    smallest = min(chosen, key=lambda g: g.memory_mib)
    card = _host_gpu(smallest)
    plan = plan_gpus(
        model, card, len(gpus), max_model_len=length,
        gpu_memory_utilization=spec.gpu_memory_utilization, tensor_parallel_size=spec.tensor_parallel_size,
        pipeline_parallel_size=spec.pipeline_parallel_size, dtype=dtype, kv_dtype=kv, block_size=block,
        target=f"this host: {len(gpus)} x {smallest.name}", engine=engine, flag=up_flag,
    )
    if plan.fits:
        return plan
    if elsewhere is not None and (hint := elsewhere(model, length, engine)):
        extra = f"or {hint}"
        return replace(plan, suggestion=f"{plan.suggestion}; {extra}" if plan.suggestion else extra)
    return plan
