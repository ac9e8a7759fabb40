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


@pytest.mark.parametrize(
    ("version", "env", "sampler", "sure"),
    [
        ("0.7.2", {}, "sort", True),  # V0 always sorts
        ("0.10.1", {}, "sort", False),  # the images may or may not ship FlashInfer: the larger peak, said so
        ("0.10.1", ON, "flashinfer", True),
        ("0.10.1", OFF, "sort", True),
        ("0.11.0", {}, "flashinfer", True),  # FlashInfer a dependency and on by default
        ("0.11.0", OFF, "sort", True),
        ("0.11.1", {}, "sort", True),  # PR #26859: opt-in
        ("0.12.0", ON, "flashinfer", True),
        ("0.20.0", {}, "sort", False),  # 0.13-0.31 not read: the larger peak, said so
        ("0.20.0", ON, "sort", False),
        ("0.32.0", {}, "triton", True),
        ("0.33.0", {}, "sort", False),  # newer than the source read
        (None, {}, "sort", False),
    ],
)
def test_the_sampler_path_follows_the_version_and_the_environment(version, env, sampler, sure):
    rules = vllm_rules(version, env)
    assert rules.sampler == sampler
    assert (not rules.unsure) == sure, rules.unsure


def test_nccl_start_up_counts_only_before_0_11():
    assert vllm_rules("0.10.2").nccl_init_counted and not vllm_rules("0.11.0").nccl_init_counted


def test_cuda_graphs_from_0_21_unless_eager_or_switched_off():
    assert not vllm_rules("0.20.1").cuda_graphs
    assert vllm_rules("0.21.0").cuda_graphs
    assert not vllm_rules("0.21.0", enforce_eager=True).cuda_graphs
    assert not vllm_rules("0.21.0", {"VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS": "0"}).cuda_graphs


def test_the_default_utilization_is_the_lower_where_unread():
    assert vllm_rules("0.11.0").default_utilization == 0.9
    assert vllm_rules("0.32.0").default_utilization == 0.92


def test_every_term_names_its_versions_and_source():
    assert all(term.versions and term.rule and term.source for term in TERMS)
    assert {"sampler path", "non-torch memory", "CUDA graphs"} <= {term.term for term in TERMS}
