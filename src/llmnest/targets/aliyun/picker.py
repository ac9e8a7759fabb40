"""The model-aware instance picker: which Alibaba Cloud GPU instance types fit a model, cheapest first.

The one instance-fitting routine: `llmnest plan` ranks with it (through the target), a deployment picks and
checks its instance type with it (sizing), and a plan on this machine that does not fit names the cheapest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...catalog import CatalogModel
from ...errors import BadInput
from ...plan.memory import EngineSettings
from ...plan.planner import Plan, plan_gpus
from .catalog import InstanceType, instance_types


@dataclass(frozen=True)
class InstanceFit:
    """One instance type and the plan of the model on it."""

    instance: InstanceType
    plan: Plan

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_type": self.instance.name,
            "gpu": self.instance.gpu.key,
            "gpus": self.instance.gpus,
            "vcpus": self.instance.vcpus,
            "memory_gib": self.instance.memory_gib,
            "price": self.instance.price.model_dump(),
            "plan": self.plan.to_dict(),
        }


def plan_instance(
    model: CatalogModel,
    itype: InstanceType,
    max_model_len: int | None = None,
    *,
    nodes: int = 1,
    gpu_memory_utilization: float | None = None,
    tensor_parallel_size: int | None = None,
    dtype: str | None = None,
    kv_dtype: str | None = None,
    engine: EngineSettings | None = None,
) -> Plan:
    """The model on the GPUs of `nodes` instances of `itype`: pipeline parallel across the nodes,
    tensor parallel within one (by default as large as the model allows). `engine` is the vLLM the
    instances will run (by default the image cloud deployments pull in mainland China)."""
    return plan_gpus(
        model, itype.gpu, itype.gpus * nodes, max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
        pipeline_parallel_size=nodes, dtype=dtype, kv_dtype=kv_dtype, target=itype.name, engine=engine,
    )


def evaluate_instances(
    model: CatalogModel,
    max_model_len: int | None = None,
    *,
    nodes: int = 1,
    gpu_memory_utilization: float | None = None,
    dtype: str | None = None,
    kv_dtype: str | None = None,
    engine: EngineSettings | None = None,
) -> list[InstanceFit]:
    """Every catalog instance type with its plan on `nodes` instances; a type whose GPU cannot run
    the requested dtype is left out."""
    out = []
    for itype in instance_types():
        try:
            plan = plan_instance(model, itype, max_model_len, nodes=nodes,
                                 gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, kv_dtype=kv_dtype,
                                 engine=engine)
        except BadInput:
            if dtype is None and kv_dtype is None:
                raise
            continue
        out.append(InstanceFit(itype, plan))
    return out


def rank_instances(
    model: CatalogModel,
    max_model_len: int | None = None,
    *,
    nodes: int = 1,
    gpu_memory_utilization: float | None = None,
    dtype: str | None = None,
    kv_dtype: str | None = None,
    engine: EngineSettings | None = None,
) -> list[InstanceFit]:
    """The instance types that fit on `nodes` instances, cheapest first (ties: more KV cache first)."""
    fits = [f for f in evaluate_instances(model, max_model_len, nodes=nodes, gpu_memory_utilization=gpu_memory_utilization,
                                          dtype=dtype, kv_dtype=kv_dtype, engine=engine) if f.plan.fits]
    return sorted(fits, key=lambda f: (f.instance.price.cny_per_hour, -f.plan.kv_cache_tokens, f.instance.name))


def cheapest_fit(
    model: CatalogModel, max_model_len: int | None = None, engine: EngineSettings | None = None,
) -> InstanceFit | None:
    ranked = rank_instances(model, max_model_len, engine=engine)
    return ranked[0] if ranked else None
