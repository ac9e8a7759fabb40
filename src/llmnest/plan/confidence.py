"""What in a plan is a measured fact, what is derived exactly, what is an estimate, and how sure it is.

The error band comes from the held-out published vLLM logs (tests/data/vllm_gpu_logs_heldout.yaml,
the table in docs/plan.md): the predicted KV cache fell within HELD_OUT_ERROR of what vLLM logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hardware import GpuModel
    from .memory import GpuBudget

from .memory import HOPPER_LOGGED_NON_TORCH, NON_TORCH_BASE

GIB = 1024**3
# The KV cache's lowest and highest error on the held-out logs, percent (tests/unit/test_plan_calibration.py
# recomputes both from the logs, so this cannot drift from them).
HELD_OUT_ERROR = (-2.6, -0.3)
# The same on the logs first read after a version of the model was committed (vllm_gpu_logs_validation.yaml).
VALIDATION_ERROR = (-2.3, 0.2)
OVERHEAD_SPREAD = round(0.4 * GIB)  # the largest miss, per GPU, on any calibration or held-out log

CPU_PROVENANCE = (
    "exact: weights and KV bytes per token from the architecture figures (config.json / catalog)",
    "exact: the CPU build's KV cache is VLLM_CPU_KVCACHE_SPACE itself, cut into blocks as vLLM 0.32 does;"
    " its logged capacity matched vLLM on this machine with 0% error (docs/plan.md)",
)


def _gib(n: float) -> str:
    return f"{n / GIB:,.2f} GiB"


def _nccl(budget: GpuBudget) -> str:
    """What of the non-torch term is NCCL's, and over which link (nothing on one GPU)."""
    nccl = budget.non_torch - NON_TORCH_BASE
    if not nccl:
        return ""
    if budget.non_torch == HOPPER_LOGGED_NON_TORCH:
        return " (the figure 8 x H200 logged before vLLM 0.11: unsure, below)"
    link = {"nvlink": "NVLink", "pcie": "PCIe"}.get(budget.link or "", "an unknown link (the larger figure)")
    return f" (of which NCCL's buffers over {link} {_gib(nccl)}, whatever the tp size)"


def gpu_provenance(gpu: GpuModel, total: int, budget: GpuBudget) -> tuple[str, ...]:
    """Lines for `llmnest plan`: each figure's kind (measured, exact, estimate), how sure, and what is unsure."""
    if total == gpu.cuda_total_bytes and gpu.cuda_total_measured:
        memory = f"measured: {gpu.key} total {gpu.cuda_total_mib:,} MiB as CUDA reports it ({gpu.cuda_total_source})"
    elif total == gpu.cuda_total_bytes:
        memory = (f"estimate: {gpu.key} total {gpu.cuda_total_mib:,} MiB as CUDA would report it"
                  f" ({gpu.cuda_total_source}); conservative")
    else:
        memory = f"given: GPU total {total / 2**20:,.0f} MiB"
    kv = max(budget.kv, 0)
    spread = f"{OVERHEAD_SPREAD / GIB:.2f} GiB"
    band = f" ({100 * OVERHEAD_SPREAD / kv:.0f}% of this KV cache)" if kv else ""
    rules = budget.rules
    return (
        memory,
        "exact: weights from the parameter count (every expert), KV bytes per token from the architecture,"
        " blocks and the logged capacity rounded as vLLM does",
        f"estimate: activation peak {_gib(budget.activations)} (the larger of a {budget.batched_tokens}-token"
        f" forward and a {budget.max_seqs}-request {rules.sampler} sampler), non-torch {_gib(budget.non_torch)}"
        f"{_nccl(budget)}, CUDA graphs {_gib(budget.cuda_graphs)}: the terms vLLM {rules.label}'s profiler"
        " subtracts (docs/plan.md lists them per version and the source each was read in)",
        f"how sure: on held-out published logs the KV cache came out {HELD_OUT_ERROR[0]:+.1f}% to"
        f" {HELD_OUT_ERROR[1]:+.1f}% of what vLLM logged ({VALIDATION_ERROR[0]:+.1f}% to {VALIDATION_ERROR[1]:+.1f}% on"
        f" logs read after a model change); the overhead terms missed by up to {spread} per GPU{band}",
        *(f"unsure, so the lower KV figure is planned: {why}" for why in rules.unsure),
    )
