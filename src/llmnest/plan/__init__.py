"""The memory planner: will a model fit, with what context, concurrency and tensor parallel.

Public API:
- plan_for_spec(spec, model, gpus) -> Plan: a spec on this host (CPU build or its GPUs)
- plan_cpu(model, kv_cache_gib=...), plan_gpus(model, gpu, count, ...) -> Plan
- gpu_models(), gpu_model(name): the GPU catalog (a target's instance types and prices are the target's)
- resolve_model(name): a catalog model or a local model directory
"""

from .hardware import GpuModel, gpu_model, gpu_models
from .local import resolve_model
from .on_host import plan_for_spec
from .planner import Plan, plan_cpu, plan_gpus

__all__ = [
    "GpuModel",
    "Plan",
    "gpu_model",
    "gpu_models",
    "plan_cpu",
    "plan_for_spec",
    "plan_gpus",
    "resolve_model",
]
