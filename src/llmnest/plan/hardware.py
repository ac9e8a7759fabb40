"""The GPU catalog (data/gpus.yaml): the cards the planner knows, by key or nvidia-smi name."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BadInput, LlmnestError
from ..suggest import did_you_mean

MIB = 1024**2
# CUDA's total over nvidia-smi's, the lowest any card with a published figure showed (T4: 14,909 / 15,360);
# applied to cards without a published figure, so the plan errs toward less memory.
CUDA_TOTAL_RATIO = 0.97


def cuda_total_estimate_mib(smi_mib: int) -> int:
    """A conservative CUDA-reported total for a card known only by its nvidia-smi memory.total."""
    return int(smi_mib * CUDA_TOTAL_RATIO)


class GpuModel(BaseModel):
    """One GPU model: its memory as nvidia-smi and as CUDA report it, and what precisions vLLM runs on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    display_name: str
    memory_gb: int = Field(gt=0)
    memory_mib: int = Field(gt=0)
    cuda_total_mib: int = Field(gt=0)
    cuda_total_measured: bool = False
    cuda_total_source: str = "estimate: nvidia-smi memory.total x 0.97"
    compute_capability: float = Field(gt=0)
    nvlink: bool = True  # GPUs talk over NVLink / NVSwitch (more NCCL buffers); unknown cards assume so
    names: tuple[str, ...] = ()

    @property
    def memory_bytes(self) -> int:
        """nvidia-smi's memory.total in bytes."""
        return self.memory_mib * MIB

    @property
    def cuda_total_bytes(self) -> int:
        """What torch.cuda.mem_get_info reports as total: the figure vLLM's utilization multiplies."""
        return self.cuda_total_mib * MIB

    @property
    def supports_bf16(self) -> bool:
        return self.compute_capability >= 8.0

    @property
    def supports_fp8(self) -> bool:
        """fp8 weights: native from 8.9, weight-only (Marlin) on Ampere; not on Volta or Turing."""
        return self.compute_capability >= 8.0


def _read(name: str) -> Any:
    return yaml.safe_load(resources.files("llmnest.data").joinpath(name).read_text())


@cache
def gpu_models() -> dict[str, GpuModel]:
    """The GPU catalog by key; a malformed entry is a packaging bug and says which."""
    out: dict[str, GpuModel] = {}
    for key, entry in _read("gpus.yaml").items():
        try:
            out[key] = GpuModel(key=key, **entry)
        except (ValidationError, TypeError) as exc:
            raise LlmnestError(f"GPU catalog entry {key!r} is invalid: {exc}") from exc
    return out


def gpu_model(name: str) -> GpuModel:
    """A catalog GPU by key or nvidia-smi name ('A10', 'a100-80g', 'NVIDIA H20'); unknown is BadInput."""
    found = find_gpu(name)
    if found is None:
        raise BadInput(
            f"unknown GPU {name!r}.{did_you_mean(name, gpu_models())} "
            f"Known GPUs: {', '.join(gpu_models())}."
        )
    return found


def find_gpu(name: str) -> GpuModel | None:
    """The catalog entry for a key or an nvidia-smi name, or None."""
    wanted = name.strip().lower()
    for gpu in gpu_models().values():
        if wanted in {gpu.key.lower(), *(n.lower() for n in gpu.names)}:
            return gpu
    return None
