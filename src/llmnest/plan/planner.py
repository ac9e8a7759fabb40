"""Plans: does a model fit a target (the vLLM CPU build, N GPUs, a spec on this host), and how well."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from ..catalog import DTYPE_BYTES, CatalogModel
from ..engines import default_image
from ..errors import BadInput
from ..host import host_memory_bytes
from ..parallel import tp_divides, valid_tp_sizes
from . import memory as mem
from .confidence import CPU_PROVENANCE, gpu_provenance
from .hardware import GpuModel, cuda_total_estimate_mib, find_gpu
from .precision import kv_dtype as resolve_kv_dtype
from .precision import weight_dtype

if TYPE_CHECKING:
    from ..host import Gpu
    from ..spec import DeploymentSpec

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
    overhead_bytes: int  # per GPU: activation peak + non-torch memory + CUDA graphs (vLLM >= 0.21)
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


def _gib(n: float) -> str:
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
    return f"weights: {model.params:,} params x {DTYPE_BYTES[dtype]:g} B ({dtype}) = {weights:,} B ({_gib(weights)})"


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


def _gpu_figures(
    model: CatalogModel, gpu: GpuModel, memory_bytes: int, util: float, tp: int, pp: int,
    weights_dt: str, kv_dt: str, block: int, length: int, engine: mem.EngineSettings,
) -> dict[str, Any]:
    weights = mem.weights_bytes(model, weights_dt)
    budget = mem.gpu_budget(model, weights_dt, gpu.key, gpu.nvlink, memory_bytes, util, tp, pp, engine)
    usable, per_gpu_weights, overhead, kv_space = budget.usable, budget.weights, budget.overhead, budget.kv
    per_token = mem.kv_bytes_per_token(model, kv_dt, tp, pp)
    blocks = mem.kv_blocks(kv_space, block, per_token)
    where = f"{gpu.key} x {tp * pp}, {util:g} of {memory_bytes / 2**20:,.0f} MiB"
    if kv_space <= 0:
        fits, reason, tokens, largest, concurrent = Verdict(
            False,
            f"weights need {_gib(per_gpu_weights)} per GPU, more than the {_gib(usable - overhead)} left of "
            f"{_gib(usable)} usable after {_gib(overhead)} overhead ({where})",
            0, 0, 0,
        )
    else:
        fits, reason, tokens, largest, concurrent = _verdict(model, length, blocks, block, where)
    arithmetic = (
        _weights_line(model, weights_dt, weights) + f"; per GPU / {tp * pp} + buffers = {_gib(per_gpu_weights)}",
        _kv_arithmetic(model, kv_dt, tp, pp, per_token),
        f"usable per GPU: {memory_bytes / 2**20:,.0f} MiB (CUDA total) x {util:g} = {_gib(usable)}",
        f"overhead per GPU: activation peak {_gib(budget.activations)} ({budget.batched_tokens} batched tokens,"
        f" {budget.max_seqs} seqs) + non-torch {_gib(budget.non_torch)}"
        f" (tp {tp}, {'NVLink' if gpu.nvlink else 'PCIe'}) + CUDA graphs"
        f" {_gib(budget.cuda_graphs)} (vLLM {engine.vllm_version}) = {_gib(overhead)}",
        f"KV cache per GPU: {_gib(usable)} - {_gib(per_gpu_weights)} - {_gib(overhead)} = {_gib(max(kv_space, 0))}",
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


def _host_gpu(gpu: Gpu) -> GpuModel:
    """The catalog entry for an nvidia-smi name, or one assumed modern (bf16, fp8) when unknown."""
    known = find_gpu(gpu.name)
    if known is not None:
        return known
    return GpuModel(key=gpu.name, display_name=gpu.name, memory_gb=max(1, gpu.memory_mib // 1024),
                    memory_mib=gpu.memory_mib, cuda_total_mib=cuda_total_estimate_mib(gpu.memory_mib),
                    compute_capability=8.0)


def _within_host_memory(plan: Plan, ram: int | None) -> Plan:
    """The CPU build holds the weights and the KV space in RAM: both must fit in the host's memory."""
    need = plan.weights_bytes + plan.kv_cache_bytes
    if ram is None or need <= ram:
        return plan
    return replace(
        plan, fits=False,
        reason=f"does not fit: weights {_gib(plan.weights_bytes)} + KV space {_gib(plan.kv_cache_bytes)} "
               f"exceed this host's {_gib(ram)} of memory",
        suggestion="serve it on GPUs (`llmnest plan` ranks instance types), or pick a smaller model",
    )


def _int_flag(flags: dict[str, str], name: str) -> int | None:
    value = flags.get(name, "")
    return int(value) if value.isdigit() else None


def plan_for_spec(spec: DeploymentSpec, model: CatalogModel, gpus: Sequence[Gpu]) -> Plan:
    """Plan `spec` on this host: the CPU build's KV space, or the host's GPUs with the spec's settings.

    Honours the `kv-cache-dtype`, `block-size`, `dtype`, `max-num-seqs`, `max-num-batched-tokens` and
    `enforce-eager` engine flags in spec.engine_args, and takes the vLLM version from the engine image's tag
    (the spec's image or the engine's default), which decides whether CUDA graph memory is reserved.
    """
    flags = spec.engine_args
    block = int(flags["block-size"]) if flags.get("block-size", "").isdigit() else None
    dtype = flags.get("dtype") if flags.get("dtype", "auto") != "auto" else None
    kv = flags.get("kv-cache-dtype")
    length = spec.max_model_len or model.context_length
    image = spec.image or default_image(spec.engine)
    engine = mem.EngineSettings(
        max_num_batched_tokens=_int_flag(flags, "max-num-batched-tokens"),
        max_num_seqs=_int_flag(flags, "max-num-seqs"),
        enforce_eager=spec.enforce_eager or flags.get("enforce-eager", "false").lower() not in ("false", "0"),
        vllm_version=mem.image_vllm_version(image) or mem.DEPLOYED_VLLM,
    )
    if spec.device == "cpu":
        plan = plan_cpu(model, kv_cache_gib=spec.cpu_kv_cache_gib, max_model_len=length, dtype=dtype,
                        kv_dtype=kv, block_size=block, flag=up_flag)
        return _within_host_memory(plan, host_memory_bytes())
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
    from .picker import cheapest_fit  # late: the picker plans through this module

    cloud = cheapest_fit(model, length)
    if cloud is not None:
        extra = (f"or on Alibaba Cloud: --target aliyun --instance-type {cloud.instance.name} "
                 f"({cloud.instance.gpus} x {cloud.instance.gpu.key})")
        return replace(plan, suggestion=f"{plan.suggestion}; {extra}" if plan.suggestion else extra)
    return plan
