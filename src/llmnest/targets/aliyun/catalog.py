"""The Alibaba Cloud ECS GPU instance types and their CNY prices (instances.yaml, beside this module)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...errors import BadInput, LlmnestError
from ...plan.hardware import GpuModel, gpu_models
from ...suggest import did_you_mean


class Price(BaseModel):
    """A pay-as-you-go hourly price, where and when it holds, and where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cny_per_hour: float = Field(gt=0)
    region: str
    date: str
    source: str
    estimate: bool

    def label(self) -> str:
        return f"{'~' if self.estimate else ''}{self.cny_per_hour:,.2f} CNY/h"


class InstanceType(BaseModel):
    """One ECS GPU instance type and its price."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    gpu: GpuModel
    gpus: int = Field(gt=0)
    vcpus: int = Field(gt=0)
    memory_gib: int = Field(gt=0)
    price: Price

    @property
    def family(self) -> str:
        """'ecs.gn7i-c8g1.2xlarge' -> 'gn7i'."""
        return self.name.removeprefix("ecs.").split(".")[0].split("-")[0]


def _estimate(meta: dict[str, Any], gpu: str, gpus: int, vcpus: int, memory_gib: int) -> Price:
    rate = meta["gpu_hour"].get(gpu)
    if rate is None:
        raise LlmnestError(f"instances.yaml has no gpu_hour estimate for GPU {gpu!r}")
    cny = gpus * rate + vcpus * meta["vcpu_hour"] + memory_gib * meta["gib_hour"]
    return Price(
        cny_per_hour=round(cny, 2),
        region=meta["region"],
        date=meta["date"],
        source=f"estimate: {meta['formula']} (see targets/aliyun/instances.yaml)",
        estimate=True,
    )


@cache
def _instances() -> dict[str, InstanceType]:
    raw = yaml.safe_load(resources.files(__package__).joinpath("instances.yaml").read_text())
    meta, types = raw["price_estimate"], raw["instance_types"]
    out: dict[str, InstanceType] = {}
    for name, entry in types.items():
        try:
            gpu = gpu_models()[entry["gpu"]]
            price = entry.get("price")
            estimate = _estimate(meta, gpu.key, entry["gpus"], entry["vcpus"], entry["memory_gib"])
            out[name] = InstanceType(
                name=name,
                gpu=gpu,
                gpus=entry["gpus"],
                vcpus=entry["vcpus"],
                memory_gib=entry["memory_gib"],
                price=Price(**price) if price else estimate,
            )
        except (ValidationError, TypeError, KeyError) as exc:
            raise LlmnestError(f"instance catalog entry {name!r} is invalid: {exc}") from exc
    return out


def instance_types() -> list[InstanceType]:
    """Every catalog instance type, cheapest first."""
    return sorted(_instances().values(), key=lambda t: (t.price.cny_per_hour, t.name))


def instance(name: str) -> InstanceType:
    """The instance type named (with or without the 'ecs.' prefix); unknown is BadInput with close names."""
    wanted = name.strip().lower()
    if not wanted.startswith("ecs."):
        wanted = "ecs." + wanted
    for known, itype in _instances().items():
        if known.lower() == wanted:
            return itype
    raise BadInput(
        f"unknown instance type {name!r}.{did_you_mean(wanted, _instances())} "
        "Run `llmnest plan MODEL` to list the catalog's types that fit."
    )
