"""The CUDA graph term against the estimate vLLM logged (tests/data/vllm_gpu_logs_graphs.yaml)."""

from __future__ import annotations

import pytest

from llmnest.catalog import get_model
from llmnest.plan import memory as mem
from llmnest.plan.vllm_rules import vllm_rules
from tests.plan_logs import DOCS, GRAPHS, graph_replay, graph_table, load

CASES = load(GRAPHS)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_the_planned_graph_count_is_the_one_vllm_logged(case):
    if "graphs" not in case:
        pytest.skip("the log does not state its graph count")
    r = graph_replay(case)
    assert (r.piecewise, r.full) == (case["graphs"]["piecewise"], case["graphs"]["full"])


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_the_plan_never_reserves_less_for_graphs_than_vllm_did(case):
    """Less would promise KV cache vLLM does not give; the first replay of a round-1 log is kept as it came out."""
    r = graph_replay(case)
    assert r.predicted_gib >= r.logged_gib, (case["id"], r.predicted_gib, r.logged_gib)


def test_capture_sizes_follow_max_num_seqs_and_the_batch():
    assert mem.capture_sizes(256, 2048)[-1] == 512 and len(mem.capture_sizes(256, 2048)) == 51
    assert mem.capture_sizes(128, 2048)[-1] == 256 and len(mem.capture_sizes(128, 2048)) == 35
    assert mem.capture_sizes(4, 2048) == [1, 2, 4, 8]  # 2 x max_num_seqs
    assert mem.capture_sizes(256, 300)[-1] == 288  # never above max_num_batched_tokens
    assert mem.capture_sizes(1024, 16384, mem.GRAPH_SIZES_MAX_BLACKWELL)[-1] == 1024


def test_the_graph_term_grows_with_layers_tp_and_experts_and_only_where_vllm_subtracts_it():
    qwen7 = get_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    rules = vllm_rules("0.24.0")
    one = mem.cuda_graph_bytes(qwen7, 2, rules, "A100-80G", 2048, 256, 1)
    assert mem.cuda_graph_bytes(qwen7, 2, rules, "A100-80G", 2048, 256, 2) > one  # captured all-reduces
    assert mem.cuda_graph_bytes(qwen7, 2, rules, "A100-80G", 2048, 64, 1) < one  # fewer capture sizes
    moe = qwen7.model_copy(update={"experts": 64, "experts_per_token": 8, "moe_intermediate_size": 1408})
    assert mem.cuda_graph_bytes(moe, 2, rules, "A100-80G", 2048, 256, 1) > one
    assert mem.cuda_graph_bytes(moe, 2, rules, "A100-80G", 2048, 256, 2) > mem.cuda_graph_bytes(
        qwen7, 2, rules, "A100-80G", 2048, 256, 2)
    assert any("MoE" in line for line in vllm_rules("0.24.0", moe=True).unsure)
    assert not any("MoE" in line for line in vllm_rules("0.24.0", moe=True, enforce_eager=True).unsure)


def test_the_docs_show_the_graph_table_the_fixture_gives():
    assert graph_table() in DOCS.read_text()
