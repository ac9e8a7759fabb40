"""Which tensor-parallel sizes a model allows, and the one a host's GPUs give by default."""

from __future__ import annotations

from .catalog import CatalogModel


def tp_divides(model: CatalogModel, tp: int) -> bool:
    """True when the engines can shard `model` over `tp` GPUs.

    Attention heads and the MLP width must split evenly; KV heads are either split evenly or
    replicated (tp a multiple of kv_heads), as vLLM and SGLang require. MoE models also split each
    expert's width.
    """
    if tp < 1 or model.attention_heads % tp or model.intermediate_size % tp:
        return False
    if model.kv_heads % tp and tp % model.kv_heads:
        return False
    return not (model.moe_intermediate_size and model.moe_intermediate_size % tp)


def valid_tp_sizes(model: CatalogModel, max_gpus: int) -> list[int]:
    """All tensor-parallel sizes from 1 to max_gpus that the model allows."""
    return [tp for tp in range(1, max_gpus + 1) if tp_divides(model, tp)]


def default_tp(model: CatalogModel | None, gpu_count: int) -> int:
    """All of the host's GPUs, as the seed does, but never a size the model does not divide."""
    if gpu_count <= 1:
        return 1
    if model is None:
        return gpu_count
    return max(valid_tp_sizes(model, gpu_count))
