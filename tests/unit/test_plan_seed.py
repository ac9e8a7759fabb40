"""The planner's verdicts for the seed's seven models against the instance types the original service
allowed for them (../shared/notes/compute-nest-service.md), at the service's per-model defaults."""

from __future__ import annotations

import pytest

from llmnest.catalog import get_model, load_catalog
from llmnest.targets.aliyun.catalog import instance
from llmnest.targets.aliyun.picker import plan_instance, rank_instances

SINGLE_A10 = ["ecs.gn7i-c8g1.2xlarge", "ecs.gn7i-c16g1.4xlarge", "ecs.gn7i-c32g1.8xlarge"]
FOUR_A10 = ["ecs.gn7i-4x.8xlarge", "ecs.gn7i-4x.16xlarge"]
EIGHT_A10 = ["ecs.gn7i-8x.16xlarge", "ecs.gn7i-8x.32xlarge"]
H20 = ["ecs.ebmgn8v.48xlarge"]
NAMED = SINGLE_A10 + FOUR_A10 + EIGHT_A10 + H20
A100 = ["ecs.gn7e-c16g1.8xlarge", "ecs.gn7e-c16g1.16xlarge", "ecs.gn7e-c16g1.32xlarge", "ecs.ebmgn7e.32xlarge"]

THIRTY_TWO_B = [
    "Qwen/Qwen3-32B", "Qwen/QwQ-32B", "Qwen/Qwen2.5-32B-Instruct", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
]
# What the service allowed, among the types it names: "7B also on single-A10 types"; 32B on 4xA10,
# 8xA10, the A100 and H20 families; "the 70B only on gn7i-8x.16xlarge, gn7i-8x.32xlarge,
# ebmgn8v.48xlarge"; "Qwen3-235B-A22B on ebmgn8v.48xlarge".
ALLOWED = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": NAMED,
    **{key: FOUR_A10 + EIGHT_A10 + H20 + A100 for key in THIRTY_TWO_B},
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B": EIGHT_A10 + H20,
    "Qwen/Qwen3-235B-A22B": H20,
}


def test_the_seven_are_the_catalogs_seed_models():
    assert set(ALLOWED) == {k for k, m in load_catalog().items() if "seed" in m.tags}


# Every type the guide names, for every model (allowed or refused), and the A100 types where the service
# offered them: elsewhere it said nothing about A100, so there is no verdict to hold the planner to.
CASES = [(key, itype) for key in sorted(ALLOWED) for itype in NAMED + [t for t in A100 if t in ALLOWED[key]]]


@pytest.mark.parametrize(("key", "itype"), CASES)
def test_verdict_agrees_with_the_original_service(key, itype):
    model = get_model(key)
    plan = plan_instance(model, instance(itype))  # the catalog's max_model_len and utilization
    if itype in ALLOWED[key]:
        assert plan.fits, (key, itype, plan.reason)
        assert plan.max_concurrent_requests >= 1 and plan.max_model_len >= model.max_model_len
    else:
        assert not plan.fits, (key, itype, plan.reason)


def test_the_seeds_defaults_are_what_is_planned():
    qwen7 = get_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    plan = plan_instance(qwen7, instance("ecs.gn7i-c8g1.2xlarge"))
    assert (plan.requested_max_model_len, plan.gpu_memory_utilization) == (16384, 0.9)
    eight = plan_instance(qwen7, instance("ecs.gn7i-8x.16xlarge"))
    assert eight.tensor_parallel_size == 4  # 28 heads: 8 does not divide, so 4 of the 8 GPUs


@pytest.mark.parametrize("key", sorted(ALLOWED))
def test_ranking_is_cheapest_first_and_only_fits(key):
    ranked = rank_instances(get_model(key))
    prices = [f.instance.price.cny_per_hour for f in ranked]
    assert ranked and prices == sorted(prices)
    assert all(f.plan.fits for f in ranked)
    names = {f.instance.name for f in ranked}
    assert set(ALLOWED[key]) <= names
