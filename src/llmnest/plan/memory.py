"""The memory arithmetic of serving a model with vLLM: weights, KV cache per token, blocks, overhead.

All functions are pure. The rules mirror vLLM 0.32 (read in its source and measured on its CPU build):

- weights = params x bytes per parameter; `params` is the total count, so an MoE model counts every
  expert, not only the active ones.
- KV cache per token and layer = 2 (K and V) x KV heads x head_dim x bytes. Grouped-query attention
  stores only the KV heads. With tensor parallel each GPU holds kv_heads / tp heads, or one replicated
  head when tp exceeds kv_heads. MLA (DeepSeek V3/R1) stores one latent of kv_lora_rank +
  qk_rope_head_dim per token and layer, replicated on every GPU.
- The cache is cut into blocks of `block_size` tokens (128 on the CPU build, 16 on CUDA, 64 for MLA):
  blocks = floor(KV bytes / (block_size x bytes per token)), as vllm/v1/core/kv_cache_utils.py does.
- vLLM logs "KV cache size: N tokens" with N = int(blocks / ceil(max_model_len / block_size) x
  max_model_len): whole requests of max_model_len, scaled back to tokens.
- On a GPU, vLLM's memory profiler (gpu_worker.determine_available_memory) gives the KV cache `total x
  gpu_memory_utilization - weights - activation peak - non-torch memory [- CUDA graph estimate]`, where
  `total` is what CUDA reports (torch.cuda.mem_get_info), not the card's nominal size. Which terms a version
  subtracts and how (sampler path, NCCL buffers, CUDA graphs) is vllm_rules.py's, read in vLLM's source per
  version range; the sizes of the terms are estimated here, and the few fitted constants name their logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ..catalog import DTYPE_BYTES, CatalogModel
from .vllm_rules import GRAPH_SIZES_BLACKWELL_FROM, SORT_COPIES, TRITON_MIN_ROWS, VllmRules, vllm_rules

GIB = 1024**3
CPU_BLOCK_SIZE = 128  # vllm/platforms/cpu.py: cache_config.block_size = 128 unless the user sets one
GPU_BLOCK_SIZE = 16  # vllm/config/cache.py: CacheConfig.DEFAULT_BLOCK_SIZE
MLA_BLOCK_SIZE = 64  # FlashMLA's block size on CUDA
MIB = 1024**2
LOGITS_BYTES = 4  # the sampler works on fp32 logits
NON_TORCH_BASE = round(0.15 * GIB)  # cuBLAS workspace and allocator slack per GPU. Logs: 0.01 to 0.20 GiB.
# NCCL's buffers on each GPU once tp x pp > 1. NCCL allocates them per channel (a ring channel has one peer to
# send to and one to receive from whatever the tp size), and the channel count follows the link, not the rank
# count: many channels over NVLink / NVSwitch, a few over PCIe. So the term is one figure per link kind.
# vLLM < 0.11 takes its baseline snapshot before NCCL starts (vllm_rules.TERMS), so all of them and vLLM's
# custom all-reduce buffers land in non_torch_memory: NVLink 1.95 GiB above the base (8 x A100-SXM4 logged
# 2.10 at tp 8), PCIe 0.28 (the largest of 0.20 to 0.43 GiB logged at tp 2 to 4, docs/plan.md).
NCCL_NVLINK = round(1.95 * GIB)
NCCL_PCIE = round(0.28 * GIB)
# vLLM >= 0.11 snapshots after NCCL starts; what it still counts is what the profiling forward allocates: NCCL
# (>= 2.22) connects its channels lazily, at the first collective, so their buffers land there. Over NVLink that
# is a fraction of the start-up figure, and the largest logged is taken: 2 x H100 about 0.55 GiB in all (issue
# 20), 4 x B200 with expert parallel 0.95 GiB (docs/plan.md), so 0.80 above the base. Over PCIe the same few
# channels as before, so the PCIe figure stays.
NCCL_NVLINK_RUNTIME = round(0.80 * GIB)
# Hopper NVSwitch boards (H100/H200/H20/H800 SXM) before vLLM 0.11: DeepSeek-R1 at tp 8 on 8 x H200 with vLLM 0.7.3
# logged 7.16 GiB of non-torch memory per GPU (tests/data/vllm_gpu_logs_validation.yaml, refused for MLA; docs/plan.md
# round 3) where 8 x A100-SXM4 logged 2.10. NVLink SHARP (NVLS) buffers would account for it, but no source read sizes
# them. The largest Hopper run before 0.11 that checks the NVLink figure is tp 2 (2 x H200, vLLM 0.10.2, 1.38 GiB logged;
# a Qwen3-Next log cited in docs/plan.md, the model refused, so in no yaml); above HOPPER_CHECKED_RANKS GPUs the 8 x
# H200 log's figure is planned as the whole term, an upper bound from evidence (not a fit), and the plan says unsure.
HOPPER_LOGGED_NON_TORCH = round(7.16 * GIB)
HOPPER_CHECKED_RANKS = 2
LOADED_EXTRA = 32 * MIB  # "Model loading took" exceeds params x bytes by 5 to 31 MiB (rotary caches, buffers)
# vLLM's CUDA graph estimate (profile_cudagraph_memory, vllm_rules.TERMS): the first capture of the largest size
# holds that forward's intermediates in the graph pool (bounded by forward_bytes), every further graph adds what its
# second sample added: driver memory per captured kernel node and pool blocks it cannot reuse, which grows with the
# layers. Per layer and graph, as upper bounds from the logs (tests/data/vllm_gpu_logs_graphs.yaml): at tp 1 the V1
# runner (which extrapolates every mode from its second sample) logged up to 0.53 GiB for Qwen2.5-7B on vLLM 0.24
# (84 further graphs, 28 layers: 203 KiB), the V2 runner (which measures its piecewise graphs in full) 0.23 GiB for
# Llama-3.1-8B on 0.31 (67 KiB); both taken with a margin (256 and 96 KiB). With tp > 1 every layer's all-reduces are
# captured too: Qwen2.5-72B at tp 4 (NCCL over PCIe) logged 2.73 GiB, 419 KiB per layer and graph; 512 KiB planned.
GRAPH_LAYER_BYTES = {"v1": 256 * 1024, "v2": 96 * 1024}
GRAPH_LAYER_BYTES_TP = 512 * 1024
# MoE layers add the fused-MoE / all-to-all workspaces per graph. Issue 20 reports up to ~5 GiB per GPU for a large
# MoE model with FULL graphs; 850 KiB per layer and graph gives that for 61 layers over ~100 graphs, planned at tp > 1.
# At tp 1 the graphs gpt-oss captured (llm-d's H100 results: 1.03 GiB for the 120B's 36 layers over ~100 graphs, about
# 300 KiB per layer and graph) bound it lower: 256 KiB on top of the dense figure. No log of vLLM's own estimate for an
# MoE model checks either, so the plan says it is unsure (vllm_rules).
GRAPH_MOE_LAYER_BYTES = 256 * 1024
GRAPH_MOE_LAYER_BYTES_TP = 850 * 1024
GRAPH_SIZES_MAX = 512  # vllm/config/vllm.py: min(2 x max_num_seqs, 512, max_num_batched_tokens)
GRAPH_SIZES_MAX_BLACKWELL = 1024  # from vLLM 0.28 (0.31 read) on compute capability 10.x (B200, GB200, B300)
QUANTIZED = frozenset({"fp8", "int8", "int4"})  # weight dtypes vLLM's model config calls quantized
DEPLOYED_VLLM = "0.11.0"  # the GPU image cloud deployments run (targets/aliyun/images.py)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def weights_bytes(model: CatalogModel, dtype: str) -> int:
    """Bytes of all weights at `dtype` (every expert of an MoE model).

    fp8 checkpoints and on-the-fly fp8 keep the embedding and the LM head at 16 bits: one extra byte for each
    of their vocab x hidden parameters.
    """
    if dtype == "fp8":
        return model.params + 2 * model.vocab_size * model.hidden_size
    return round(model.params * DTYPE_BYTES[dtype])


def loaded_weights_per_gpu(model: CatalogModel, dtype: str, shards: int) -> int:
    """What vLLM logs as "Model loading took" on one GPU: the weights split over `shards`, plus buffers."""
    return cdiv(weights_bytes(model, dtype), shards) + LOADED_EXTRA


def is_mla(model: CatalogModel) -> bool:
    return model.kv_lora_rank is not None


def kv_bytes_per_token(model: CatalogModel, kv_dtype: str, tp: int = 1, pp: int = 1) -> int:
    """KV cache bytes one token takes on one GPU at tensor parallel `tp` and pipeline parallel `pp`.

    With tp = pp = 1 this is the whole model's figure: layers x 2 x kv_heads x head_dim x bytes.
    """
    layers = cdiv(model.layers, pp)
    size = DTYPE_BYTES[kv_dtype]
    if is_mla(model):
        return round(layers * (model.kv_lora_rank + (model.qk_rope_head_dim or 0)) * size)
    heads_per_gpu = max(1, model.kv_heads // tp)
    return round(layers * 2 * heads_per_gpu * model.head_dim * size)


def default_block_size(model: CatalogModel, device: str) -> int:
    if device == "cpu":
        return CPU_BLOCK_SIZE
    return MLA_BLOCK_SIZE if is_mla(model) else GPU_BLOCK_SIZE


def kv_blocks(kv_cache_bytes: int, block_size: int, bytes_per_token: int) -> int:
    """Whole blocks that fit in `kv_cache_bytes` (0 when nothing is left)."""
    return max(0, kv_cache_bytes) // (block_size * bytes_per_token)


def logged_kv_tokens(blocks: int, block_size: int, max_model_len: int) -> int:
    """The token count vLLM logs as 'KV cache size: N tokens' for this many blocks."""
    return int(blocks / cdiv(max_model_len, block_size) * max_model_len)


def concurrent_requests(blocks: int, block_size: int, max_model_len: int) -> int:
    """How many requests of the full max_model_len fit in the cache at once."""
    return blocks // cdiv(max_model_len, block_size)


def batch_defaults(gpu_name: str, gpu_memory_bytes: int) -> tuple[int, int]:
    """vLLM's OpenAI-server defaults (max_num_batched_tokens, max_num_seqs) for this GPU.

    Mirrors vllm/engine/arg_utils.py: larger batches on >= 70 GiB GPUs other than the A100.
    """
    if gpu_memory_bytes >= 160 * GIB:
        return 16384, 1024
    if gpu_memory_bytes >= 70 * GIB and "a100" not in gpu_name.lower():
        return 8192, 1024
    return 2048, 256


def image_vllm_version(image: str) -> str | None:
    """'vllm/vllm-openai:v0.33.0' -> '0.33.0'; None when the tag names no version."""
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    match = re.match(r"v?(\d+\.\d+(?:\.\d+)?)", tag)
    return match.group(1) if match else None


def forward_bytes(model: CatalogModel, act_bytes: float, batched_tokens: int, tp: int) -> int:
    """Peak of one forward of `batched_tokens` tokens beyond the weights, on one GPU.

    Per token: 3 hidden-wide tensors (residual, normed input, attention output) and the MLP's gate-up
    output plus its activation (3 x MLP width / tp). An MoE layer instead holds, for each routed expert,
    the fused-MoE caches: gate-up and activation (3 x expert width / tp) and the expert's hidden-wide output.
    """
    hidden = model.hidden_size
    if model.experts and model.moe_intermediate_size:
        mlp = (model.experts_per_token or 1) * (3 * model.moe_intermediate_size / tp + hidden)
    else:
        mlp = 3 * model.intermediate_size / tp
    return round(batched_tokens * (3 * hidden + mlp) * act_bytes)


def sampler_bytes(model: CatalogModel, max_seqs: int, batched_tokens: int, copies: float, buffer_rows: int = 0) -> int:
    """Peak of the profiling pass's sampler: `copies` fp32 rows of vocab logits for every request it samples, plus
    the Triton top-k/top-p kernel's buffer of at most `buffer_rows` rows (the copies per sampler path: vllm_rules)."""
    rows = min(max_seqs, batched_tokens)
    return round((copies * rows + min(rows, buffer_rows)) * model.vocab_size * LOGITS_BYTES)


def activation_bytes(
    model: CatalogModel, act_bytes: float, batched_tokens: int, max_seqs: int, tp: int, sampler_copies: float,
    buffer_rows: int = 0,
) -> int:
    """vLLM's "PyTorch activation peak": the larger of the forward and the sampler, plus the hidden states
    the sampler reads (the forward's intermediates are freed before it runs)."""
    sampler = sampler_bytes(model, max_seqs, batched_tokens, sampler_copies, buffer_rows)
    peak = max(forward_bytes(model, act_bytes, batched_tokens, tp), sampler)
    return peak + round(batched_tokens * model.hidden_size * act_bytes)


def capture_sizes(max_seqs: int, batched_tokens: int, largest: int = GRAPH_SIZES_MAX) -> list[int]:
    """The token counts vLLM captures graphs for by default (vllm/config/vllm.py _set_cudagraph_sizes, 0.18 - 0.34):
    1, 2, 4, every 8 to 248, every 16 from 256, up to min(2 x max_num_seqs, 512, max_num_batched_tokens)."""
    top = min(2 * max_seqs, largest, batched_tokens)
    return [n for n in (1, 2, 4) if n <= top] + list(range(8, min(top + 1, 256), 8)) + list(range(256, top + 1, 16))


def cuda_graph_bytes(
    model: CatalogModel, act_bytes: float, rules: VllmRules, gpu_name: str, batched_tokens: int, max_seqs: int, tp: int,
) -> int:
    """vLLM's CUDA graph estimate on one GPU under the default FULL_AND_PIECEWISE mode (the most graphs): a
    piecewise graph per capture size and a FULL decode graph per size up to max_num_seqs; the first capture's
    pool (the largest size's forward) plus, for every further graph, a per-layer cost (GRAPH_LAYER_BYTES)."""
    blackwell = rules.version >= GRAPH_SIZES_BLACKWELL_FROM and any(
        tag in gpu_name.upper() for tag in ("B200", "B300", "GB200"))
    sizes = capture_sizes(max_seqs, batched_tokens, GRAPH_SIZES_MAX_BLACKWELL if blackwell else GRAPH_SIZES_MAX)
    if not sizes:
        return 0
    graphs = len(sizes) + sum(1 for n in sizes if n <= max_seqs)
    if tp > 1:
        per_layer = GRAPH_LAYER_BYTES_TP + (GRAPH_MOE_LAYER_BYTES_TP if model.experts else 0)
    else:
        per_layer = GRAPH_LAYER_BYTES[rules.runner] + (GRAPH_MOE_LAYER_BYTES if model.experts else 0)
    return forward_bytes(model, act_bytes, sizes[-1], tp) + (graphs - 2) * model.layers * per_layer


def nccl_bytes(link: str, init_counted: bool) -> int:
    """NCCL's buffers vLLM counts on one GPU over `link` ('nvlink' or 'pcie')."""
    if link == "pcie":
        return NCCL_PCIE
    return NCCL_NVLINK if init_counted else NCCL_NVLINK_RUNTIME


def non_torch_bytes(ranks: int, link: str | None, init_counted: bool) -> int:
    """vLLM's non-torch memory on one GPU: a base, plus NCCL's buffers once there is a peer to talk to.
    An unknown link (None) takes the larger of the two link kinds' figures."""
    if ranks <= 1:
        return NON_TORCH_BASE
    links = (link,) if link else ("nvlink", "pcie")
    return NON_TORCH_BASE + max(nccl_bytes(kind, init_counted) for kind in links)


def hopper_non_torch_unsure(compute_capability: float, ranks: int, link: str | None, init_counted: bool) -> str:
    """Why the non-torch term is unsure on a Hopper NVSwitch board (empty: it is not): NCCL counted from before it
    started (vLLM < 0.11), over NVLink or an unknown link, on more GPUs than any Hopper log of those versions checks."""
    if not (9.0 <= compute_capability < 10.0 and init_counted and link != "pcie" and ranks > HOPPER_CHECKED_RANKS):
        return ""
    return (f"no log checks the non-torch memory of {ranks} Hopper GPUs over NVLink before vLLM 0.11; 8 x H200 on "
            f"vLLM 0.7.3 logged {HOPPER_LOGGED_NON_TORCH / GIB:.2f} GiB per GPU (NVLink SHARP buffers would account "
            "for it, no source read sizes them): that figure is planned, an upper bound")


@dataclass(frozen=True)
class EngineSettings:
    """The vLLM settings the overhead depends on; None means vLLM's default (or: not known)."""

    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    enforce_eager: bool = False
    vllm_version: str | None = DEPLOYED_VLLM
    env: Mapping[str, str] = field(default_factory=dict)  # the engine's environment (VLLM_USE_FLASHINFER_SAMPLER)
    interconnect: str | None = None  # "nvlink" or "pcie"; None: the card's, or unknown
    flashinfer_installed: bool | None = True  # the vllm/vllm-openai images ship FlashInfer; None: not known

    def rules(self, model: CatalogModel, weights_dtype: str) -> VllmRules:
        return vllm_rules(self.vllm_version, self.env, self.enforce_eager, model_type=model.arch,
                          moe=bool(model.experts), quantized=weights_dtype in QUANTIZED,
                          flashinfer_installed=self.flashinfer_installed, mla=is_mla(model))


@dataclass(frozen=True)
class GpuBudget:
    """One GPU's memory as vLLM's profiler splits it; `kv` may be negative (the weights do not fit)."""

    total: int
    usable: int
    weights: int
    activations: int
    non_torch: int
    cuda_graphs: int
    batched_tokens: int
    max_seqs: int
    link: str | None
    rules: VllmRules

    @property
    def overhead(self) -> int:
        return self.activations + self.non_torch + self.cuda_graphs

    @property
    def kv(self) -> int:
        return self.usable - self.weights - self.overhead


def _sampler_terms(rules: VllmRules, max_seqs: int, batched_tokens: int) -> tuple[float, int]:
    """(copies, buffer rows) of the profiling sampler: the Triton top-k/top-p only runs on >= 8 rows
    (apply_top_k_top_p), fewer take PyTorch's sort."""
    if rules.sampler == "triton" and min(max_seqs, batched_tokens) < TRITON_MIN_ROWS:
        return SORT_COPIES, 0
    return rules.sampler_copies, rules.sampler_buffer_rows


def gpu_budget(
    model: CatalogModel, weights_dtype: str, gpu_name: str, link: str | None, total: int, util: float, tp: int,
    pp: int, engine: EngineSettings, compute_capability: float = 0.0,
) -> GpuBudget:
    """KV bytes per GPU = CUDA total x utilization - loaded weights - activation peak - non-torch - graphs,
    each term as the engine's vLLM version computes it (vllm_rules)."""
    rules = engine.rules(model, weights_dtype)
    non_torch = non_torch_bytes(tp * pp, link, rules.nccl_init_counted)
    if why := hopper_non_torch_unsure(compute_capability, tp * pp, link, rules.nccl_init_counted):
        non_torch = max(non_torch, HOPPER_LOGGED_NON_TORCH)
        rules = replace(rules, unsure=(*rules.unsure, why))
    default_tokens, default_seqs = batch_defaults(gpu_name, total)
    batched = engine.max_num_batched_tokens or default_tokens
    seqs = engine.max_num_seqs or default_seqs
    act_bytes = max(DTYPE_BYTES[weights_dtype], 2)  # activations are 16-bit for 8- and 4-bit weights
    return GpuBudget(
        total=total, usable=int(total * util), weights=loaded_weights_per_gpu(model, weights_dtype, tp * pp),
        activations=activation_bytes(model, act_bytes, batched, seqs, tp, *_sampler_terms(rules, seqs, batched)),
        non_torch=non_torch,
        cuda_graphs=cuda_graph_bytes(model, act_bytes, rules, gpu_name, batched, seqs, tp) if rules.cuda_graphs else 0,
        batched_tokens=batched, max_seqs=seqs,
        link=link, rules=rules,
    )


def architecture_params(model: CatalogModel, tied_embeddings: bool) -> int:
    """Parameter count derived from the architecture figures, to cross-check the catalog's `params`.

    Counts embeddings (and an untied LM head), per layer the attention projections (Qwen2's q/k/v
    biases, Qwen3's q/k norms), the MLP or every MoE expert plus its router, two RMSNorms, and the
    final norm. MLA models are not covered (their projections differ) and return 0.
    """
    if is_mla(model):
        return 0
    h, hd = model.hidden_size, model.head_dim
    q, kv = model.attention_heads * hd, model.kv_heads * hd
    attention = h * q + 2 * h * kv + q * h
    if model.arch == "qwen2":
        attention += q + 2 * kv
    if model.arch.startswith("qwen3"):
        attention += 2 * hd
    if model.experts and model.moe_intermediate_size:
        mlp = model.experts * 3 * h * model.moe_intermediate_size + h * model.experts
    else:
        mlp = 3 * h * model.intermediate_size
    layer = attention + mlp + 2 * h
    embeddings = model.vocab_size * h * (1 if tied_embeddings else 2)
    return model.layers * layer + embeddings + h
