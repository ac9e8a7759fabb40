"""The GPU and instance-type catalogs: complete for the seed, typed, priced with provenance."""

from __future__ import annotations

import re

import pytest

from llmnest.catalog import get_model
from llmnest.errors import BadInput
from llmnest.plan import gpu_model, gpu_models
from llmnest.targets.aliyun.catalog import instance, instance_types
from llmnest.targets.aliyun.picker import rank_instances

SEED_AND_NOTES = [
    "ecs.gn7i-c8g1.2xlarge", "ecs.gn7i-c16g1.4xlarge", "ecs.gn7i-c32g1.8xlarge", "ecs.gn7i-4x.8xlarge",
    "ecs.gn7i-4x.16xlarge", "ecs.gn7i-8x.16xlarge", "ecs.gn7i-8x.32xlarge", "ecs.ebmgn8v.48xlarge",
]


def test_every_type_the_seed_and_notes_name_is_there():
    names = {t.name for t in instance_types()}
    assert set(SEED_AND_NOTES) <= names
    families = {t.family for t in instance_types()}
    assert {"gn7i", "gn7e", "ebmgn7", "ebmgn7e", "ebmgn8v", "gn6i", "gn6v", "gn6e"} <= families


@pytest.mark.parametrize(
    ("name", "gpu", "count", "vcpus", "memory"),
    [
        ("ecs.gn7i-c8g1.2xlarge", "A10", 1, 8, 30),
        ("ecs.gn7i-4x.8xlarge", "A10", 4, 32, 128),
        ("ecs.gn7i-8x.16xlarge", "A10", 8, 64, 256),
        ("ecs.ebmgn8v.48xlarge", "H20", 8, 192, 1024),
        ("ecs.gn7e-c16g1.4xlarge", "A100-80G", 1, 16, 125),
        ("ecs.ebmgn7.26xlarge", "A100-40G", 8, 104, 768),
        ("ecs.gn6i-c4g1.xlarge", "T4", 1, 4, 15),
        ("ecs.gn6e-c12g1.24xlarge", "V100-32G", 8, 96, 736),
    ],
)
def test_specifications(name, gpu, count, vcpus, memory):
    itype = instance(name)
    assert (itype.gpu.key, itype.gpus, itype.vcpus, itype.memory_gib) == (gpu, count, vcpus, memory)


def test_every_price_says_where_when_and_whether_it_is_an_estimate():
    for itype in instance_types():
        price = itype.price
        assert price.cny_per_hour > 0 and price.region and re.fullmatch(r"\d{4}-\d{2}-\d{2}", price.date)
        assert price.estimate == price.source.startswith("estimate")
        assert price.label().startswith("~") == price.estimate
    prices = [t.price.cny_per_hour for t in instance_types()]
    assert prices == sorted(prices)


def test_names_are_forgiving_and_unknown_names_suggest():
    assert instance("gn7i-4x.8xlarge").name == "ecs.gn7i-4x.8xlarge"
    assert instance("ECS.GN7I-4X.8XLARGE").name == "ecs.gn7i-4x.8xlarge"
    with pytest.raises(BadInput, match=r"unknown instance type .*Did you mean: ecs\.gn7i-4x\.8xlarge"):
        instance("ecs.gn7i-4x.8xlarg")
    assert gpu_model("NVIDIA H20").key == "H20" and gpu_model("a100-80g").key == "A100-80G"
    with pytest.raises(BadInput, match="Did you mean: A10"):
        gpu_model("A1O")


def test_gpu_memory_is_what_nvidia_smi_reports():
    assert gpu_model("A10").memory_mib == 23028 and gpu_model("H20").memory_mib == 97871
    for gpu in gpu_models().values():
        assert gpu.memory_mib <= gpu.memory_gb * 1024 * 1.03


def test_fp8_ranking_leaves_out_gpus_without_fp8():
    ranked = rank_instances(get_model("qwq-32b"), dtype="fp8")
    assert ranked and all(f.instance.gpu.key not in {"T4", "V100-16G", "V100-32G"} for f in ranked)
    assert all(f.plan.dtype == "fp8" for f in ranked)
