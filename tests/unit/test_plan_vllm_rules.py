"""The per-version rules of vLLM's KV sizing (llmnest.plan.vllm_rules), each as its source range says."""

from __future__ import annotations

import pytest

from llmnest.plan.vllm_rules import TERMS, parse_version, vllm_rules

ON, OFF = {"VLLM_USE_FLASHINFER_SAMPLER": "1"}, {"VLLM_USE_FLASHINFER_SAMPLER": "0"}


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("0.11.0", (0, 11, 0)), ("v0.10.1.1", (0, 10, 1)), ("0.9", (0, 9, 0)), ("0.11.0-pytorch2.8", (0, 11, 0)),
     ("latest", None), ("", None)],
)
def test_versions_are_read_from_tags(text, parsed):
    assert parse_version(text) == parsed


IMAGE, PIP, UNKNOWN = True, False, None  # how vLLM was installed: the vllm/vllm-openai image ships FlashInfer


@pytest.mark.parametrize(
    ("version", "env", "installed", "sampler", "sure"),
    [
        ("0.7.2", {}, IMAGE, "sort", True),  # V0 always sorts
        ("0.8.5", {}, IMAGE, "flashinfer", True),  # the image's FlashInfer 0.2.1 (< 0.2.3) is used
        ("0.10.1", {}, IMAGE, "flashinfer", True),
        ("0.10.1", {}, PIP, "sort", True),  # FlashInfer only an extra before 0.11.1
        ("0.10.1", {}, UNKNOWN, "sort", False),  # the larger peak, said so
        ("0.10.1", ON, UNKNOWN, "flashinfer", True),
        ("0.11.0", OFF, IMAGE, "sort", True),
        ("0.11.0", {}, IMAGE, "flashinfer", True),
        ("0.11.1", {}, IMAGE, "sort", True),  # opt-in from 0.11.1 (a dependency now, off by default)
        ("0.12.0", ON, IMAGE, "flashinfer", True),
        ("0.16.0", {}, IMAGE, "sort", True),
        ("0.17.0", {}, IMAGE, "triton", True),  # apply_top_k_top_p takes the Triton kernel for >= 8 rows
        ("0.20.0", ON, IMAGE, "flashinfer", True),
        ("0.21.0", {}, IMAGE, "triton", True),  # FlashInfer on, and the profile warms the native path after it
        ("0.24.0", OFF, PIP, "triton", True),
        ("0.34.0", {}, IMAGE, "sort", False),  # V2 runner only: its peak is not modelled
        ("0.35.0", {}, IMAGE, "sort", False),  # newer than the source read
        (None, {}, IMAGE, "sort", False),
    ],
)
def test_the_sampler_path_follows_the_version_and_the_environment(version, env, installed, sampler, sure):
    rules = vllm_rules(version, env, flashinfer_installed=installed)
    assert rules.sampler == sampler
    assert (not rules.unsure) == sure, rules.unsure


@pytest.mark.parametrize(
    ("version", "model_type", "moe", "quantized", "env", "runner"),
    [
        ("0.21.0", "qwen3", False, False, {}, "v1"),
        ("0.22.0", "qwen3", False, False, {}, "v2"),
        ("0.22.0", "qwen3", False, True, {}, "v1"),  # dense and unquantized only
        ("0.22.0", "llama", False, False, {}, "v1"),
        ("0.23.0", "llama", False, False, {}, "v2"),
        ("0.24.0", "qwen2", False, False, {}, "v1"),  # the 4090 logs' Qwen2.5: still V1 at 0.24
        ("0.24.0", "qwen2_moe", True, False, {}, "v2"),
        ("0.25.0", "qwen2", False, False, {}, "v2"),  # every dense model
        ("0.28.0", "qwen3_moe", True, False, {}, "v1"),
        ("0.29.0", "qwen3_moe", True, False, {}, "v2"),  # every model
        ("0.31.0", "llama", False, False, {"VLLM_USE_V2_MODEL_RUNNER": "0"}, "v1"),
        ("0.34.0", "llama", False, False, {"VLLM_USE_V2_MODEL_RUNNER": "0"}, "v2"),  # the V1 runner is gone
        ("0.11.0", "qwen3", False, False, {"VLLM_USE_V2_MODEL_RUNNER": "1"}, "v1"),  # no V2 runner before 0.12
    ],
)
def test_the_model_runner_follows_the_version_and_the_model(version, model_type, moe, quantized, env, runner):
    rules = vllm_rules(version, env, model_type=model_type, moe=moe, quantized=quantized)
    assert rules.runner == runner
    assert (runner == "v2") == any("V2 model runner" in why for why in rules.unsure)


def test_the_triton_path_counts_its_buffer():
    assert vllm_rules("0.24.0").sampler_buffer_rows > 0 and vllm_rules("0.16.0").sampler_buffer_rows == 0


def test_nccl_start_up_counts_only_before_0_11():
    assert vllm_rules("0.10.2").nccl_init_counted and not vllm_rules("0.11.0").nccl_init_counted


def test_cuda_graphs_from_0_20_unless_eager_or_switched_off():
    estimate = {"VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS": "1"}
    assert not vllm_rules("0.17.1", estimate).cuda_graphs  # the switch does not exist yet
    assert not vllm_rules("0.19.1").cuda_graphs and vllm_rules("0.18.0", estimate).cuda_graphs  # opt-in
    assert vllm_rules("0.20.0").cuda_graphs
    assert not vllm_rules("0.21.0", enforce_eager=True).cuda_graphs
    assert not vllm_rules("0.21.0", {"VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS": "0"}).cuda_graphs


def test_the_default_utilization_moves_to_0_92_at_0_20():
    assert vllm_rules("0.19.1").default_utilization == 0.9
    assert vllm_rules("0.20.0").default_utilization == 0.92


def test_every_term_names_its_versions_and_source():
    assert all(term.versions and term.rule and term.source for term in TERMS)
    assert {"sampler path", "non-torch memory", "CUDA graphs", "model runner"} <= {term.term for term in TERMS}
    assert not any("unread" in term.rule for term in TERMS)


def test_a_small_batch_sorts_even_where_triton_is_the_path():
    """apply_top_k_top_p takes the Triton kernel only for >= 8 rows: fewer sampled rows cost the sort's copies."""
    from llmnest.catalog import get_model
    from llmnest.plan.memory import EngineSettings, gpu_budget, sampler_bytes
    from llmnest.plan.vllm_rules import SORT_COPIES, TRITON_BUFFER_ROWS, TRITON_COPIES

    model = get_model("Qwen/Qwen3-8B")

    def sampler_part(rows: int) -> int:  # a forward of `rows` tokens is far smaller than the sampler
        engine = EngineSettings(max_num_seqs=rows, max_num_batched_tokens=rows, vllm_version="0.24.0",
                                env={"VLLM_USE_V2_MODEL_RUNNER": "0"})  # the V1 runner (Qwen3 is V2 by default)
        budget = gpu_budget(model, "bf16", "A10", None, 22 * 2**30, 0.9, 1, 1, engine)
        return budget.activations - rows * model.hidden_size * 2

    assert sampler_part(7) == sampler_bytes(model, 7, 7, SORT_COPIES)
    assert sampler_part(8) == sampler_bytes(model, 8, 8, TRITON_COPIES, TRITON_BUFFER_ROWS)


def test_mla_under_v0_is_refused_with_the_reason_and_modelled_from_0_8():
    """vLLM 0.7.3's MLA backend keeps the absorbed decode projections beside the raw weights (mla/utils.py): refused;
    with VLLM_MLA_PERFORM_MATRIX_ABSORPTION=0, or from the V1 engine's default (0.8), the plan answers."""
    from llmnest.catalog import get_model
    from llmnest.errors import BadInput
    from llmnest.plan import gpu_model, plan_gpus
    from llmnest.plan.memory import EngineSettings

    r1 = get_model("deepseek-ai/DeepSeek-R1")
    assert "VLLM_MLA_PERFORM_MATRIX_ABSORPTION" in vllm_rules("0.7.3", mla=True).refusal
    assert not vllm_rules("0.7.3", {"VLLM_MLA_PERFORM_MATRIX_ABSORPTION": "0"}, mla=True).refusal
    assert not vllm_rules("0.8.0", mla=True).refusal and not vllm_rules("0.7.3").refusal
    with pytest.raises(BadInput, match="not modelled"):
        plan_gpus(r1, gpu_model("H200"), 8, max_model_len=32768, engine=EngineSettings(vllm_version="0.7.3"))
    assert plan_gpus(r1, gpu_model("H200"), 8, max_model_len=32768, engine=EngineSettings(vllm_version="0.11.0")).fits
