"""The memory planner: will a model fit, with what context, concurrency, tensor parallel and price.

Public API:
- plan_for_spec(spec, model, gpus) -> Plan: a spec on this host (CPU build or its GPUs)
- plan_cpu(model, kv_cache_gib=...), plan_gpus(model, gpu, count, ...) -> Plan
- instance_types(), instance(name), gpu_models(), gpu_model(name): the hardware catalogs
- rank_instances(model, max_model_len, ...) -> list[InstanceFit]: fitting types, cheapest first
- resolve_model(name): a catalog model or a local model directory
"""

from .hardware import GpuModel, InstanceType, Price, gpu_model, gpu_models, instance, instance_types
from .local import resolve_model
from .on_host import plan_for_spec
from .picker import InstanceFit, cheapest_fit, evaluate_instances, plan_instance, rank_instances
from .planner import Plan, plan_cpu, plan_gpus

__all__ = [
    "GpuModel",
    "InstanceFit",
    "InstanceType",
    "Plan",
    "Price",
    "cheapest_fit",
    "evaluate_instances",
    "gpu_model",
    "gpu_models",
    "instance",
    "instance_types",
    "plan_cpu",
    "plan_for_spec",
    "plan_gpus",
    "plan_instance",
    "rank_instances",
    "resolve_model",
]
