"""How each vLLM version sizes its GPU KV cache: which terms its profiler subtracts, and its defaults. Pure.

Every rule names the version range it holds for and the vLLM source it was read in (`TERMS`, rendered into
docs/plan.md). A version the rules were not read for, or a setting whose effect no source or log fixed,
makes the plan take the lower KV figure and say so (`VllmRules.unsure`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

Version = tuple[int, int, int]

NEWEST_READ: Version = (0, 34, 0)  # the newest vLLM whose source was read (its sdist)
V1_DEFAULT_FROM: Version = (0, 8, 0)  # VLLM_USE_V1 defaults to 1 (vllm/envs.py)
FLASHINFER_PIP_FROM: Version = (0, 11, 1)  # flashinfer-python in requirements/cuda.txt; before, only the images
TRITON_TOPK_FROM: Version = (0, 17, 0)  # apply_top_k_top_p: the Triton kernel for >= 8 rows (topk_topp_triton.py)
FLASHINFER_DEFAULT_FROM: Version = (0, 21, 0)  # VLLM_USE_FLASHINFER_SAMPLER defaults to True; the native path warmed too
NCCL_BEFORE_SNAPSHOT_FROM: Version = (0, 11, 0)  # PR #25359: baseline snapshot taken after NCCL starts
CUDA_GRAPH_ENV_FROM: Version = (0, 18, 0)  # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS exists, default 0
CUDA_GRAPHS_PROFILED_FROM: Version = (0, 20, 0)  # ... and defaults to 1
GRAPH_SIZES_BLACKWELL_FROM: Version = (0, 28, 0)  # capture sizes up to 1024 on compute capability 10.x (absent in 0.27)
UTILIZATION_092_FROM: Version = (0, 20, 0)  # CacheConfig.gpu_memory_utilization = 0.92 (0.9 before)
V2_RUNNER_ENV_FROM: Version = (0, 12, 0)  # VLLM_USE_V2_MODEL_RUNNER exists (default off)
V2_RUNNER_ONLY_FROM: Version = (0, 34, 0)  # vllm/v1/worker/gpu_model_runner.py is gone: V2 is the only runner
V2_SKIPS_TOP_K_TOP_P = "the V2 model runner's profiling sampler skips top-k/top-p"
# V0's MLA backend (vllm/attention/backends/mla/utils.py process_weights_after_loading, read in 0.7.3) keeps the
# absorbed decode projections W_Q_UK and W_UV_O (per layer q_lora_rank x heads x kv_lora_rank and heads x kv_lora_rank x
# hidden, requantized to fp8 or kept 16-bit) beside the checkpoint's raw weights unless
# VLLM_MLA_PERFORM_MATRIX_ABSORPTION=0 (envs.py, default 1): "model weights take" grows by gigabytes the plan does not
# count (DeepSeek-R1 on 8 x H200: 83.88 GiB logged per GPU, 79.9 planned). Refused before the V1 engine's default.
MLA_ABSORBED_BEFORE: Version = (0, 8, 0)
MLA_ABSORBED = ("vLLM before 0.8 (V0) keeps MLA's absorbed decode projections beside the raw weights "
                "(VLLM_MLA_PERFORM_MATRIX_ABSORPTION=1), which is not modelled; plan vLLM 0.8 or later")

# fp32 [rows x vocab] copies alive at the profiling sampler's peak, per path (rows = min(max_num_seqs, max_num_batched
# tokens)). PyTorch's own top-k/top-p (apply_top_k_top_p_pytorch) sorts the fp32 logits: the 16-bit logits (0.5) and
# their fp32 copy (1) stay alive, and the segmented sort holds the sorted values (1), an int64 index iota as input (2),
# the int64 indices out (2) and cub's alternate key and value buffers (1 + 2): 9.5; the calibration logs imply 9.1 to 9.6.
SORT_COPIES = 9.5
FLASHINFER_COPIES = 3.0  # fp32 logits, masked logits, probabilities; one vLLM 0.11 log gives 3.0
# The Triton top-k/top-p (0.17+) masks the fp32 logits in place; alive at the peak: the 16-bit logits (0.5), the fp32
# logits (1), the probabilities (1) and random_sample's exponential noise (1), plus the kernel's cached per-program
# buffer of min(SMs, rows) x vocab fp32 rows; TRITON_BUFFER_ROWS bounds the SM count (148, a B200; a 4090 has 128).
TRITON_COPIES = 3.5
TRITON_BUFFER_ROWS = 148
TRITON_MIN_ROWS = 8  # apply_top_k_top_p sorts in PyTorch below this many rows
# Model types the V2 model runner is the default for (vllm/config/vllm.py _is_default_v2_model_runner_model), per
# version: (from, model types, dense and unquantized only); from 0.25 every dense model too, from 0.29 every model.
V2_DEFAULT_TYPES: tuple[tuple[Version, frozenset[str], bool], ...] = (
    ((0, 22, 0), frozenset({"qwen3"}), True),
    ((0, 23, 0), frozenset({"qwen3", "llama", "mistral"}), True),
    ((0, 24, 0), frozenset({"qwen3", "llama", "mistral", "deepseek_v2", "qwen2_moe", "granitemoe"}), False),
)
V2_EVERY_DENSE_FROM: Version = (0, 25, 0)
V2_EVERY_MODEL_FROM: Version = (0, 29, 0)


@dataclass(frozen=True)
class Term:
    """One rule of vLLM's KV sizing, the versions it holds for, and where it was read."""

    term: str
    versions: str
    rule: str
    source: str


SAMPLER_SRC = "vllm/v1/sample/ops/topk_topp_sampler.py"
TERMS: tuple[Term, ...] = (
    Term("budget", "0.8 - 0.34", "CUDA total (torch.cuda.mem_get_info) x gpu_memory_utilization",
         "vllm/v1/worker/gpu_worker.py determine_available_memory; v1/worker/utils.py request_memory (0.24+)"),
    Term("default gpu_memory_utilization", "< 0.20 / >= 0.20", "0.9 / 0.92 (llmnest always passes its own)",
         "vllm/config/cache.py CacheConfig.gpu_memory_utilization"),
    Term("weights", "0.8 - 0.34", "what loading took on the GPU (model_runner.model_memory_usage)",
         "vllm/v1/worker/gpu_model_runner.py load_model; v1/worker/gpu/model_runner.py (V2)"),
    Term("non-torch memory", "0.8 - 0.10", "everything outside torch since before NCCL started: cuBLAS workspace, "
         "NCCL's buffers (many channels over NVLink, few over PCIe), custom all-reduce buffers",
         "vllm/v1/worker/gpu_worker.py init_device (MemorySnapshot before init_worker_distributed_environment)"),
    Term("non-torch memory", "0.11 - 0.34", "only what appears after NCCL started: cuBLAS workspace and the "
         "communication buffers the profiling forward allocates",
         "vllm/v1/worker/gpu_worker.py init_device (MemorySnapshot after init_worker_distributed_environment)"),
    Term("MLA weights", "< 0.8 (V0; read in 0.7.3)", "the absorbed decode projections (W_Q_UK, W_UV_O) kept beside the "
         "raw weights unless VLLM_MLA_PERFORM_MATRIX_ABSORPTION=0: not modelled, an MLA model is refused",
         "vllm/attention/backends/mla/utils.py process_weights_after_loading; vllm/envs.py"),
    Term("activation peak", "0.8 - 0.34", "torch peak of one dummy forward of max_num_batched_tokens and of the "
         "dummy sampler over min(max_num_seqs, max_num_batched_tokens) rows with top-k = vocab - 1, top-p 0.9",
         "vllm/v1/worker/gpu_model_runner.py profile_run, _dummy_sampler_run; utils/mem_utils.py memory_profiling"),
    Term("sampler path", "< 0.8 (V0)", "PyTorch sort (top-k/top-p)", "vllm/model_executor/layers/sampler.py"),
    Term("sampler path", "0.8 - 0.11.0", "FlashInfer where it is installed, unless VLLM_USE_FLASHINFER_SAMPLER=0: the "
         "vllm/vllm-openai images ship it (0.2.1 for 0.8, 0.2.5 to 0.3.1 after), a pip install does not (only an "
         "extra), so a version not from an image plans the sort (unsure)",
         f"{SAMPLER_SRC} TopKTopPSampler.__init__; docker/Dockerfile; setup.py extras"),
    Term("sampler path", "0.11.1 - 0.20", "PyTorch's own top-k/top-p unless VLLM_USE_FLASHINFER_SAMPLER=1; that is "
         "the sort up to 0.16, and from 0.17 the in-place Triton top-k/top-p for >= 8 rows",
         f"{SAMPLER_SRC} __init__, apply_top_k_top_p; v1/sample/ops/topk_topp_triton.py"),
    Term("sampler path", "0.21 - 0.34", "FlashInfer by default (VLLM_USE_FLASHINFER_SAMPLER defaults to 1), and the "
         "profile also warms the native path (a seeded request), the in-place Triton top-k/top-p: the peak is the "
         "larger, the Triton path's", f"vllm/envs.py; {SAMPLER_SRC}; gpu_model_runner.py _dummy_sampler_run"),
    Term("model runner", "0.22 - 0.34", "the V2 runner by default for qwen3 (0.22), llama and mistral (0.23), some MoE "
         "types (0.24), every dense model (0.25), every model (0.29; unless a feature it lacks), the only runner "
         "(0.34); VLLM_USE_V2_MODEL_RUNNER overrides. Its profile samples without top-k/top-p, but its peak is not "
         "modelled: the sort's larger sampler peak is planned (unsure)",
         "vllm/config/vllm.py use_v2_model_runner; v1/worker/gpu/model_runner.py _dummy_sampler_run"),
    Term("CUDA graphs", "< 0.18 / 0.18 - 0.19", "not subtracted (captured after the KV cache is sized) / only with "
         "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1", "vllm/v1/worker/gpu_worker.py determine_available_memory; vllm/envs.py"),
    Term("CUDA graphs", "0.20 - 0.34", "profile_cudagraph_memory's estimate subtracted unless "
         "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0 or --enforce-eager",
         "vllm/v1/worker/gpu_worker.py determine_available_memory; vllm/envs.py"),
    Term("CUDA graph estimate", "0.18 - 0.33 (V1 runner)", "per mode (FULL, PIECEWISE) capture the two largest sizes "
         "into a throwaway pool; the first capture's growth once (the larger mode's) plus the second's growth (at "
         "least 1 MiB) x the mode's remaining graphs", "vllm/v1/worker/gpu_model_runner.py profile_cudagraph_memory"),
    Term("CUDA graph estimate", "0.22 - 0.34 (V2 runner; read in 0.31, 0.34)", "capture every PIECEWISE graph (measured in full) and the "
         "two largest FULL ones, extrapolated like V1", "vllm/v1/worker/gpu/cudagraph_utils.py profile_cudagraph_memory"),
    Term("capture sizes", "0.18 - 0.34", "1, 2, 4, every 8 to 248, every 16 from 256 up to min(2 x max_num_seqs, "
         "512, max_num_batched_tokens); 1024 instead of 512 on compute capability 10.x from 0.28 (0.31 read); mode "
         "FULL_AND_PIECEWISE: a PIECEWISE graph per size, a FULL decode graph per size up to max_num_seqs",
         "vllm/config/vllm.py _set_cudagraph_sizes, default optimization levels; config/compilation.py"),
    Term("max_num_seqs / max_num_batched_tokens", "0.8 - 0.34", ">= 160 GiB: 1024 / 16384; >= 70 GiB and not an "
         "A100: 1024 / 8192; else 256 / 2048 (the OpenAI server)",
         "vllm/engine/arg_utils.py _set_default_args / get_batch_defaults"),
)


def parse_version(text: str) -> Version | None:
    """'v0.11.0' -> (0, 11, 0); '0.10.1.1' -> (0, 10, 1); None when it names no version."""
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    """An environment switch as vLLM reads it (int(value) != 0); None when unset or unreadable."""
    value = env.get(name)
    if value is None:
        return None
    try:
        return int(value) != 0
    except ValueError:
        return None


@dataclass(frozen=True)
class VllmRules:
    """What one vLLM version's profiler subtracts, as the planner models it."""

    version: Version
    sampler: str  # "sort", "flashinfer" or "triton"
    sampler_copies: float
    sampler_buffer_rows: int  # the Triton kernel's cached buffer rows (0 on the other paths)
    runner: str  # "v1" or "v2"
    nccl_init_counted: bool  # NCCL's start-up buffers land in non-torch memory
    cuda_graphs: bool  # the CUDA graph estimate is subtracted
    default_utilization: float
    unsure: tuple[str, ...]
    refusal: str = ""  # why this version's profile of the model is not modelled (the plan refuses); empty: modelled

    @property
    def label(self) -> str:
        return ".".join(map(str, self.version))


def _native(version: Version) -> str:
    """PyTorch's own top-k/top-p path for the profile's rows (>= 8 in every default)."""
    return "triton" if version >= TRITON_TOPK_FROM else "sort"


def _sampler(version: Version, env: Mapping[str, str], flashinfer_installed: bool | None) -> tuple[str, str | None]:
    """(path, why unsure) of the V1 runner's profiling sampler peak for `version` under `env`."""
    flashinfer = _flag(env, "VLLM_USE_FLASHINFER_SAMPLER")
    if version < V1_DEFAULT_FROM:
        return "sort", None
    if version < FLASHINFER_PIP_FROM:
        if flashinfer is False:
            return "sort", None
        if flashinfer or flashinfer_installed:
            return "flashinfer", None
        if flashinfer_installed is None:
            return "sort", (f"vLLM {version[0]}.{version[1]} uses FlashInfer's sampler only where it is installed (its "
                            "images ship it, a pip install does not): planned with the sort's larger peak")
        return "sort", None
    if version < FLASHINFER_DEFAULT_FROM:
        return ("flashinfer" if flashinfer else _native(version)), None
    return "triton", None  # FlashInfer's peak is the smaller, and the profile warms the Triton path after it


def _runner(version: Version, env: Mapping[str, str], model_type: str, moe: bool, quantized: bool) -> str:
    """The model runner vLLM picks for this model (vllm/config/vllm.py use_v2_model_runner)."""
    chosen = _flag(env, "VLLM_USE_V2_MODEL_RUNNER")
    if version >= V2_RUNNER_ONLY_FROM:
        return "v2"
    if version < V2_RUNNER_ENV_FROM:
        return "v1"
    if chosen is not None:
        return "v2" if chosen else "v1"
    if version >= V2_EVERY_MODEL_FROM or (version >= V2_EVERY_DENSE_FROM and not moe):
        return "v2"
    listed = [(types, dense_only) for since, types, dense_only in V2_DEFAULT_TYPES if version >= since]
    if listed:
        types, dense_only = listed[-1]
        if model_type in types and not (dense_only and (moe or quantized)):
            return "v2"
    return "v1"


def vllm_rules(
    version: str | None, env: Mapping[str, str] | None = None, enforce_eager: bool = False, *,
    model_type: str = "", moe: bool = False, quantized: bool = False, flashinfer_installed: bool | None = None,
    mla: bool = False,
) -> VllmRules:
    """The rules for `version` (None or unparsable: unknown, planned as the newest read, unsure) serving a model of
    `model_type`. `flashinfer_installed`: True for the vllm/vllm-openai images, None when not known."""
    env = env or {}
    parsed = parse_version(version) if version else None
    unsure: list[str] = []
    if parsed is None:
        parsed = NEWEST_READ
        unsure.append(f"no vLLM version known ({version or 'none given'}); planned as 0.{NEWEST_READ[1]}.x, "
                      "with the larger sampler peak")
    elif parsed[:2] > NEWEST_READ[:2]:
        unsure.append(f"vLLM {version} is newer than the newest source read ({'.'.join(map(str, NEWEST_READ))}); "
                      "planned with the larger sampler peak")
    sampler, why = _sampler(parsed, env, flashinfer_installed)
    if why:
        unsure.append(why)
    runner = _runner(parsed, env, model_type, moe, quantized)
    if runner == "v2":
        unsure.append(f"{V2_SKIPS_TOP_K_TOP_P}, but its profiling peak is not modelled: planned with the sort's "
                      "larger sampler peak")
    if unsure:
        sampler = "sort"
    graphs_env = _flag(env, "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS")
    graphs = not enforce_eager and (
        (parsed >= CUDA_GRAPHS_PROFILED_FROM and graphs_env is not False)
        or (parsed >= CUDA_GRAPH_ENV_FROM and graphs_env is True))
    if graphs and moe:
        unsure.append("vLLM's CUDA graph estimate for an MoE model is checked against no log: planned with an upper "
                      "bound")
    copies = {"sort": SORT_COPIES, "flashinfer": FLASHINFER_COPIES, "triton": TRITON_COPIES}[sampler]
    absorbed = mla and parsed < MLA_ABSORBED_BEFORE and _flag(env, "VLLM_MLA_PERFORM_MATRIX_ABSORPTION") is not False
    return VllmRules(
        version=parsed, sampler=sampler, sampler_copies=copies,
        sampler_buffer_rows=TRITON_BUFFER_ROWS if sampler == "triton" else 0, runner=runner,
        nccl_init_counted=parsed < NCCL_BEFORE_SNAPSHOT_FROM, cuda_graphs=graphs,
        default_utilization=0.92 if parsed >= UTILIZATION_092_FROM else 0.9, unsure=tuple(unsure),
        refusal=MLA_ABSORBED if absorbed else "",
    )
