"""Plans: does a model fit a target (the vLLM CPU build, N GPUs), and how well. A spec on this host: on_host.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from ..catalog import DTYPE_BYTES, CatalogModel
from ..errors import BadInput
from ..parallel import tp_divides, valid_tp_sizes
from . import memory as mem
from .confidence import CPU_PROVENANCE, gpu_provenance
from .hardware import GpuModel
from .precision import kv_dtype as resolve_kv_dtype
from .precision import weight_dtype

GIB = mem.GIB


@dataclass(frozen=True)
class Plan:
    """The verdict and the figures behind it. Byte and token figures are per GPU where GPUs differ."""

    fits: bool
    reason: str
    model: str
    target: str
    device: str
    dtype: str
    kv_dtype: str
    weights_bytes: int  # all weights, every expert
    kv_bytes_per_token: int  # whole model, all layers (per GPU: kv_bytes_per_token_per_gpu)
    kv_bytes_per_token_per_gpu: int
    kv_cache_bytes: int  # per GPU, or the CPU build's KV space
    kv_cache_blocks: int
    block_size: int
    kv_cache_tokens: int  # what vLLM logs as "KV cache size: N tokens" for requested_max_model_len
    requested_max_model_len: int
    max_model_len: int  # the largest feasible (0: none)
    max_concurrent_requests: int  # full-length requests at once
    tensor_parallel_size: int
    pipeline_parallel_size: int
    valid_tensor_parallel_sizes: tuple[int, ...]
    gpu: str | None
    gpu_count: int
    gpu_memory_bytes: int | None
    gpu_memory_utilization: float | None
    overhead_bytes: int  # per GPU: activation peak + non-torch memory + CUDA graphs (vLLM >= 0.20)
    suggestion: str | None
    arithmetic: tuple[str, ...]
    provenance: tuple[str, ...]  # which figures are measured facts, which estimates, and how sure

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["valid_tensor_parallel_sizes"] = list(self.valid_tensor_parallel_sizes)
        data["arithmetic"] = list(self.arithmetic)
        data["provenance"] = list(self.provenance)
        return data


SettingFlag = Callable[[str, Any], str]  # (spec field, value) -> how the calling command sets it


def plan_flag(field: str, value: Any) -> str:
    """A setting in `llmnest plan`'s own flags."""
    names = {"cpu_kv_cache_gib": "--cpu-kv-gib", "max_model_len": "--max-model-len",
             "tensor_parallel_size": "--tensor-parallel-size"}
    return f"{names[field]} {value:,}" if isinstance(value, int) else f"{names[field]} {value}"


def up_flag(field: str, value: Any) -> str:
    """A setting as `llmnest up` / `redeploy` take it (`--set FIELD=VALUE`; context has its own flag)."""
    return f"--max-model-len {value}" if field == "max_model_len" else f"--set {field}={value}"


def gib_text(n: float) -> str:
    return f"{n / GIB:,.2f} GiB"


def _labelled(fits: bool, reason: str) -> str:
    return f"{'fits' if fits else 'does not fit'}: {reason}"


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise BadInput(f"{name} must be positive, got {value}")


def _requested_len(model: CatalogModel, max_model_len: int | None) -> int:
    _positive("--max-model-len", max_model_len)
    return max_model_len or model.max_model_len


def _kv_arithmetic(model: CatalogModel, kv: str, tp: int, pp: int, per_gpu: int) -> str:
    size = DTYPE_BYTES[kv]
    if mem.is_mla(model):
        latent = f"({model.kv_lora_rank} + {model.qk_rope_head_dim}) MLA latent"
        head = f"{model.layers} layers x {latent} x {size:g} B ({kv})"
    else:
        head = f"{model.layers} layers x 2 x {model.kv_heads} KV heads x {model.head_dim} x {size:g} B ({kv})"
    line = f"KV per token: {head} = {mem.kv_bytes_per_token(model, kv):,} B"
    return line + (f"; per GPU at tp {tp}, pp {pp}: {per_gpu:,} B" if tp * pp > 1 else "")


class Verdict(NamedTuple):
    fits: bool
    reason: str
    tokens: int  # as vLLM logs them
    largest: int  # the largest feasible max-model-len
    concurrent: int  # full-length requests at once


def _verdict(model: CatalogModel, length: int, blocks: int, block_size: int, kv_space: str) -> Verdict:
    tokens = mem.logged_kv_tokens(blocks, block_size, length)
    largest = min(model.context_length, blocks * block_size)
    concurrent = mem.concurrent_requests(blocks, block_size, length)
    if length > model.context_length:
        why = f"max-model-len {length:,} exceeds {model.key}'s context length {model.context_length:,}"
        return Verdict(False, why, tokens, largest, 0)
    if blocks == 0:
        return Verdict(False, f"no room for a single KV block ({kv_space})", 0, 0, 0)
    if concurrent == 0:
        need = mem.cdiv(length, block_size)
        why = f"max-model-len {length:,} needs {need:,} KV blocks of {block_size} tokens; only {blocks:,} fit"
        return Verdict(False, f"{why} ({kv_space})", tokens, largest, 0)
    why = f"{tokens:,} tokens of KV cache hold {concurrent:,} requests of {length:,} tokens ({kv_space})"
    return Verdict(True, why, tokens, largest, concurrent)


def _weights_line(model: CatalogModel, dtype: str, weights: int) -> str:
    return f"weights: {model.params:,} params x {DTYPE_BYTES[dtype]:g} B ({dtype}) = {weights:,} B ({gib_text(weights)})"


def plan_cpu(
    model: CatalogModel,
    *,
    kv_cache_gib: float,
    max_model_len: int | None = None,
    dtype: str | None = None,
    kv_dtype: str | None = None,
    block_size: int | None = None,
    flag: SettingFlag = plan_flag,
) -> Plan:
    """The vLLM CPU build with VLLM_CPU_KVCACHE_SPACE = kv_cache_gib: the space is exactly the KV cache."""
    _positive("--cpu-kv-gib", kv_cache_gib)
    _positive("block size", block_size)
    length = _requested_len(model, max_model_len)
    weights_dt = weight_dtype(model, dtype, None)
    kv_dt = resolve_kv_dtype(weights_dt, kv_dtype, None)
    block = block_size or mem.default_block_size(model, "cpu")
    per_token = mem.kv_bytes_per_token(model, kv_dt)
    space = round(kv_cache_gib * GIB)
    blocks = mem.kv_blocks(space, block, per_token)
    space_label = f"KV space {kv_cache_gib:g} GiB"
    fits, reason, tokens, largest, concurrent = _verdict(model, length, blocks, block, space_label)
    weights = mem.weights_bytes(model, weights_dt)
    suggestion = None
    if not fits and length <= model.context_length:
        need_gib = mem.cdiv(mem.cdiv(length, block) * block * per_token, GIB)
        suggestion = f"set {flag('cpu_kv_cache_gib', need_gib)} (VLLM_CPU_KVCACHE_SPACE)" + (
            f" or {flag('max_model_len', largest)}" if largest else ""
        )
    elif not fits:
        suggestion = f"use {flag('max_model_len', min(largest, model.context_length))} or less"
    return Plan(
        fits=fits, reason=_labelled(fits, reason), model=model.key, device="cpu",
        target=f"vLLM CPU build, {space_label}", dtype=weights_dt, kv_dtype=kv_dt, weights_bytes=weights,
        kv_bytes_per_token=per_token, kv_bytes_per_token_per_gpu=per_token, kv_cache_bytes=space,
        kv_cache_blocks=blocks, block_size=block, kv_cache_tokens=tokens, requested_max_model_len=length,
        max_model_len=largest, max_concurrent_requests=concurrent, tensor_parallel_size=1,
        pipeline_parallel_size=1, valid_tensor_parallel_sizes=(1,), gpu=None, gpu_count=0,
        gpu_memory_bytes=None, gpu_memory_utilization=None, overhead_bytes=0, suggestion=suggestion,
        provenance=CPU_PROVENANCE, arithmetic=(
            _weights_line(model, weights_dt, weights) + ", held in RAM beside the KV space",
            _kv_arithmetic(model, kv_dt, 1, 1, per_token),
            f"blocks: floor({space:,} B / ({block} tokens x {per_token:,} B)) = {blocks:,}",
            f"vLLM logs: int({blocks:,} / ceil({length:,} / {block}) x {length:,}) = {tokens:,} tokens",
        ),
    )


LINK_NAMES = {"nvlink": "NVLink", "pcie": "PCIe", None: "link unknown: the larger figure"}


def link_of(gpu: GpuModel, engine: mem.EngineSettings) -> str | None:
    """The interconnect to plan: the one given, PCIe for PCIe-only cards, else unknown (None)."""
    if engine.interconnect:
        return engine.interconnect
    return None if gpu.nvlink else "pcie"


def _gpu_figures(
    model: CatalogModel, gpu: GpuModel, memory_bytes: int, util: float, tp: int, pp: int,
    weights_dt: str, kv_dt: str, block: int, length: int, engine: mem.EngineSettings,
) -> dict[str, Any]:
    weights = mem.weights_bytes(model, weights_dt)
    budget = mem.gpu_budget(model, weights_dt, gpu.key, link_of(gpu, engine), memory_bytes, util, tp, pp, engine,
                            gpu.compute_capability)
    usable, per_gpu_weights, overhead, kv_space = budget.usable, budget.weights, budget.overhead, budget.kv
    per_token = mem.kv_bytes_per_token(model, kv_dt, tp, pp)
    blocks = mem.kv_blocks(kv_space, block, per_token)
    where = f"{gpu.key} x {tp * pp}, {util:g} of {memory_bytes / 2**20:,.0f} MiB"
    if kv_space <= 0:
        fits, reason, tokens, largest, concurrent = Verdict(
            False,
            f"weights need {gib_text(per_gpu_weights)} per GPU, more than the {gib_text(usable - overhead)} left of "
            f"{gib_text(usable)} usable after {gib_text(overhead)} overhead ({where})",
            0, 0, 0,
        )
    else:
        fits, reason, tokens, largest, concurrent = _verdict(model, length, blocks, block, where)
    arithmetic = (
        _weights_line(model, weights_dt, weights) + f"; per GPU / {tp * pp} + buffers = {gib_text(per_gpu_weights)}",
        _kv_arithmetic(model, kv_dt, tp, pp, per_token),
        f"usable per GPU: {memory_bytes / 2**20:,.0f} MiB (CUDA total) x {util:g} = {gib_text(usable)}",
        f"overhead per GPU: activation peak {gib_text(budget.activations)} ({budget.batched_tokens} batched tokens,"
        f" {budget.max_seqs} seqs) + non-torch {gib_text(budget.non_torch)}"
        f" (tp {tp}{', ' + LINK_NAMES[budget.link] if tp * pp > 1 else ''}) + CUDA graphs {gib_text(budget.cuda_graphs)}"
        f" (vLLM {budget.rules.label}, {budget.rules.sampler} sampler) = {gib_text(overhead)}",
        f"KV cache per GPU: {gib_text(usable)} - {gib_text(per_gpu_weights)} - {gib_text(overhead)} = {gib_text(max(kv_space, 0))}",
        f"blocks: floor({max(kv_space, 0):,} B / ({block} tokens x {per_token:,} B)) = {blocks:,}",
        f"vLLM logs: int({blocks:,} / ceil({length:,} / {block}) x {length:,}) = {tokens:,} tokens",
    )
    return dict(
        fits=fits, reason=reason, weights_bytes=weights, kv_bytes_per_token=mem.kv_bytes_per_token(model, kv_dt),
        kv_bytes_per_token_per_gpu=per_token, kv_cache_bytes=max(kv_space, 0), kv_cache_blocks=blocks,
        kv_cache_tokens=tokens, max_model_len=largest, max_concurrent_requests=concurrent,
        overhead_bytes=overhead, arithmetic=arithmetic, provenance=gpu_provenance(gpu, memory_bytes, budget),
    )


def plan_gpus(
    model: CatalogModel,
    gpu: GpuModel,
    count: int,
    *,
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
    tensor_parallel_size: int | None = None,
    pipeline_parallel_size: int = 1,
    dtype: str | None = None,
    kv_dtype: str | None = None,
    block_size: int | None = None,
    memory_bytes: int | None = None,
    target: str | None = None,
    engine: mem.EngineSettings | None = None,
    flag: SettingFlag = plan_flag,
) -> Plan:
    """`count` GPUs of one model (the CUDA-reported total from the catalog unless `memory_bytes` is given).

    Tensor parallel defaults to the largest size the model allows on `count` GPUs (most memory).
    """
    for name, value in (("--gpus", count), ("--tensor-parallel-size", tensor_parallel_size),
                        ("--pipeline-parallel-size", pipeline_parallel_size), ("block size", block_size),
                        ("--gpu-memory-utilization", gpu_memory_utilization)):
        _positive(name, value)
    util = gpu_memory_utilization or model.gpu_memory_utilization
    if util > 1:
        raise BadInput(f"--gpu-memory-utilization is a fraction of GPU memory in (0, 1], got {util}")
    length = _requested_len(model, max_model_len)
    weights_dt = weight_dtype(model, dtype, gpu)
    kv_dt = resolve_kv_dtype(weights_dt, kv_dtype, gpu)
    block = block_size or mem.default_block_size(model, "cuda")
    memory = memory_bytes or gpu.cuda_total_bytes
    engine = engine or mem.EngineSettings()
    if refusal := engine.rules(model, weights_dt).refusal:
        raise BadInput(f"{model.key}: {refusal}")
    pp = pipeline_parallel_size
    per_stage = max(1, count // pp)
    divisible = valid_tp_sizes(model, per_stage)
    tp = tensor_parallel_size or (max(divisible) if divisible else 1)

    def figures(size: int) -> dict[str, Any]:
        return _gpu_figures(model, gpu, memory, util, size, pp, weights_dt, kv_dt, block, length, engine)

    fitting = tuple(size for size in divisible if figures(size)["fits"])
    found = figures(tp)
    suggestion = None
    if tp * pp > count:
        why = f"tensor x pipeline parallel {tp} x {pp} needs {tp * pp} GPUs; there are {count}"
        found.update(fits=False, reason=why)
    elif not tp_divides(model, tp):
        found.update(
            fits=False,
            reason=f"tensor parallel {tp} does not divide {model.key}'s {model.attention_heads} attention heads"
            f" / {model.kv_heads} KV heads / MLP width; valid sizes up to {per_stage}: "
            + ", ".join(map(str, divisible)),
        )
    found["reason"] = _labelled(found["fits"], found["reason"])
    if not found["fits"]:
        suggestion = _gpu_suggestion(model, gpu, memory, util, length, found, fitting, weights_dt, kv_dt, block, pp,
                                     engine, flag)
    return Plan(
        model=model.key, target=target or f"{count} x {gpu.key}", device="cuda", dtype=weights_dt, kv_dtype=kv_dt,
        block_size=block, requested_max_model_len=length, tensor_parallel_size=tp, pipeline_parallel_size=pp,
        valid_tensor_parallel_sizes=fitting, gpu=gpu.key, gpu_count=count, gpu_memory_bytes=memory,
        gpu_memory_utilization=util, suggestion=suggestion, **found,
    )


def _gpu_suggestion(
    model: CatalogModel, gpu: GpuModel, memory: int, util: float, length: int, found: dict[str, Any],
    fitting: tuple[int, ...], weights_dt: str, kv_dt: str, block: int, pp: int, engine: mem.EngineSettings,
    flag: SettingFlag,
) -> str:
    if fitting:
        return f"use {flag('tensor_parallel_size', max(fitting))}"
    if found["max_model_len"] and found["kv_cache_bytes"] > 0:
        return f"use {flag('max_model_len', found['max_model_len'])} or less, or more GPUs"
    for size in valid_tp_sizes(model, 16):
        if _gpu_figures(model, gpu, memory, util, size, pp, weights_dt, kv_dt, block, length, engine)["fits"]:
            return f"needs {size * pp} x {gpu.key} (tensor parallel {size}) at max-model-len {length:,}"
    return f"does not fit on up to 16 x {gpu.key}; run `llmnest plan {model.key}` to rank instance types"

