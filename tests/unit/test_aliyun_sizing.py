"""Planning a cloud deployment: the instance type (cheapest that fits, or the one asked for), GPUs
and parallelism, and the one-line errors for bad input."""

from __future__ import annotations

import pytest

from llmnest.catalog import get_model
from llmnest.targets.aliyun.sizing import ready_timeout_s, resolve
from llmnest.engines import default_image
from llmnest.errors import BadInput
from llmnest.targets.aliyun.picker import rank_instances
from tests.fakes.cloud_specs import cloud_spec


def test_picks_the_planners_cheapest_fitting_type() -> None:
    spec = resolve(cloud_spec("Qwen/Qwen2.5-7B-Instruct"))
    model = get_model("Qwen/Qwen2.5-7B-Instruct")
    cheapest = rank_instances(model, spec.max_model_len, gpu_memory_utilization=spec.gpu_memory_utilization)[0]
    assert spec.placement.instance_type == cheapest.instance.name
    assert (spec.runtime, spec.device, spec.host) == ("docker", "cuda", "0.0.0.0")
    assert spec.gpu_count == cheapest.instance.gpus and spec.tensor_parallel_size == cheapest.plan.tensor_parallel_size


def test_a_given_type_sets_gpus_and_tensor_parallel() -> None:
    spec = resolve(cloud_spec("Qwen/QwQ-32B", instance_type="ecs.gn7i-4x.8xlarge"))
    assert (spec.gpu_count, spec.tensor_parallel_size, spec.pipeline_parallel_size) == (4, 4, 1)
    assert spec.env["NCCL_SOCKET_IFNAME"] == "eth0"
    assert resolve(spec) == spec  # idempotent


def test_two_nodes_pipeline_over_both() -> None:
    spec = resolve(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2, instance_type="ecs.ebmgn8v.48xlarge"))
    assert (spec.gpu_count, spec.tensor_parallel_size, spec.pipeline_parallel_size) == (16, 8, 2)


@pytest.mark.parametrize(("placement", "model", "message"), [
    ({"region": "cn-hangzou"}, "Qwen/QwQ-32B", "unknown Alibaba Cloud region 'cn-hangzou'. Did you mean: cn-hangzhou"),
    ({"instance_type": "ecs.gn7i-c8g1.2xlarge"}, "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
     "deepseek-ai/DeepSeek-R1-Distill-Llama-70B does not fit 1 x ecs.gn7i-c8g1.2xlarge"),
    ({"instance_type": "ecs.gn99-huge"}, "Qwen/QwQ-32B", "unknown instance type 'ecs.gn99-huge'"),
    ({"pay": "prepaid"}, "Qwen/QwQ-32B", "--pay prepaid needs --period MONTHS (1-9)"),
    ({"vpc_id": "vpc-1"}, "Qwen/QwQ-32B", "an existing network needs both --vpc-id and --vswitch-id"),
    ({"allow_cidr": "999.1.1.1/40"}, "Qwen/QwQ-32B", "--allow-cidr '999.1.1.1/40' is not an IPv4 address or CIDR"),
    ({"allow_cidr": "2001:db8::/32"}, "Qwen/QwQ-32B", "is not an IPv4 address or CIDR block"),
    ({"period_months": 3}, "Qwen/QwQ-32B", "--period is for --pay prepaid"),
    ({"zone": "cn-beijing-a"}, "Qwen/QwQ-32B", "zone 'cn-beijing-a' is not in region cn-hangzhou"),
])
def test_bad_input_is_one_clear_line(placement: dict, model: str, message: str) -> None:
    with pytest.raises(BadInput) as err:
        resolve(cloud_spec(model, **placement))
    assert message in err.value.message and "\n" not in err.value.message


def test_an_allowed_address_becomes_the_block_the_security_group_takes() -> None:
    assert resolve(cloud_spec(allow_cidr="203.0.113.7", public=True)).placement.allow_cidr == "203.0.113.7/32"
    assert resolve(cloud_spec(allow_cidr="10.1.2.3/8")).placement.allow_cidr == "10.0.0.0/8"


def test_too_large_names_types_that_fit() -> None:
    with pytest.raises(BadInput) as err:
        resolve(cloud_spec("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", instance_type="ecs.gn7i-c8g1.2xlarge"))
    assert "use --instance-type ecs." in err.value.message


def test_a_local_model_directory_cannot_go_to_the_cloud(tmp_path) -> None:
    spec = cloud_spec().model_copy(update={"model": str(tmp_path)})
    with pytest.raises(BadInput, match="is not a catalog model"):
        resolve(spec)


def test_engine_image_is_one_the_region_can_pull() -> None:
    mainland = resolve(cloud_spec("Qwen/QwQ-32B", region="cn-beijing"))
    assert mainland.image.startswith("egs-registry.cn-hangzhou.cr.aliyuncs.com/egs/vllm:")
    abroad = resolve(cloud_spec("Qwen/QwQ-32B", region="ap-southeast-1"))
    assert abroad.image == default_image("vllm")
    assert resolve(cloud_spec("Qwen/QwQ-32B", region="cn-hongkong")).image == default_image("vllm")
    assert resolve(cloud_spec("Qwen/QwQ-32B", engine="sglang")).image.startswith(
        "egs-registry.cn-hangzhou.cr.aliyuncs.com/egs/sglang:")
    own = resolve(cloud_spec("Qwen/QwQ-32B", sets={"image": "registry.example/vllm:1"}))
    assert own.image == "registry.example/vllm:1" and resolve(own) == own


def test_sglang_spans_two_nodes_with_tensor_parallel() -> None:
    spec = resolve(cloud_spec("deepseek-ai/DeepSeek-V3", nodes=2, engine="sglang"))
    assert (spec.tensor_parallel_size, spec.pipeline_parallel_size) == (spec.gpu_count, 1)
    assert resolve(spec) == spec
    vllm = resolve(cloud_spec("deepseek-ai/DeepSeek-V3", nodes=2))
    assert (vllm.tensor_parallel_size, vllm.pipeline_parallel_size) == (vllm.gpu_count // 2, 2)


def test_bandwidth_defaults_to_one_the_weights_download_in() -> None:
    assert resolve(cloud_spec("Qwen/QwQ-32B")).placement.bandwidth_mbps == 100
    big = resolve(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2))
    assert big.placement.bandwidth_mbps == 200
    assert 3600 < ready_timeout_s(big) <= 43200
    assert ready_timeout_s(resolve(cloud_spec("Qwen/QwQ-32B", bandwidth_mbps=200))) < \
        ready_timeout_s(resolve(cloud_spec("Qwen/QwQ-32B"))) < ready_timeout_s(big)
    nat = resolve(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2, bandwidth_mbps=0, vpc_id="vpc-1", vswitch_id="vsw-1"))
    assert nat.placement.bandwidth_mbps == 0 and ready_timeout_s(nat) == 43200  # a NAT gateway's speed is unknown


@pytest.mark.parametrize(("placement", "message"), [
    ({"bandwidth_mbps": 0}, "--bandwidth 0 leaves the instance no way to download the weights"),
    ({"bandwidth_mbps": 0, "public": True, "vpc_id": "vpc-1", "vswitch_id": "vsw-1"},
     "a public endpoint needs a public IP"),
    ({"bandwidth_mbps": 5, "nodes": 2}, "raise --bandwidth (up to 200)"),
])
def test_a_bandwidth_that_cannot_work_is_refused(placement: dict, message: str) -> None:
    with pytest.raises(BadInput) as err:
        resolve(cloud_spec("deepseek-ai/DeepSeek-R1", **placement))
    assert message in err.value.message and "\n" not in err.value.message


def test_erdma_is_not_claimed_nccl_uses_tcp_on_eth0_on_every_type() -> None:
    """eRDMA is not wired (no eRDMA ENI, driver, devices or memlock in the stack: docs/aliyun.md), so no
    NCCL variable points NCCL at it, on eRDMA types or others."""
    for itype in ("ecs.ebmgn8v.48xlarge", "ecs.ebmgn7e.32xlarge"):
        spec = resolve(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2, instance_type=itype))
        assert not [k for k in spec.env if k.startswith("NCCL_IB") or k == "NCCL_NET_PLUGIN"]
        assert spec.env["NCCL_SOCKET_IFNAME"] == "eth0" and spec.env["GLOO_SOCKET_IFNAME"] == "eth0"


def test_the_cloud_fits_instances_with_the_planners_routine() -> None:
    """One instance-fitting routine: a two-node plan is the picker's plan over both nodes."""
    from llmnest.targets.aliyun.catalog import instance
    from llmnest.targets.aliyun.picker import plan_instance

    spec = resolve(cloud_spec("deepseek-ai/DeepSeek-R1", nodes=2))
    plan = plan_instance(get_model("deepseek-ai/DeepSeek-R1"), instance(spec.placement.instance_type), spec.max_model_len,
                         nodes=2, gpu_memory_utilization=spec.gpu_memory_utilization)
    assert plan.fits and (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (spec.tensor_parallel_size, 2)
    ranked = rank_instances(get_model("deepseek-ai/DeepSeek-R1"), spec.max_model_len, nodes=2,
                            gpu_memory_utilization=spec.gpu_memory_utilization)
    assert ranked[0].instance.name == spec.placement.instance_type


def test_no_import_cycle_between_picker_and_planner() -> None:
    import ast
    from pathlib import Path

    from llmnest.plan import planner
    from llmnest.targets.aliyun import picker

    def imports(module) -> set[str]:
        tree = ast.parse(Path(module.__file__).read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    assert "plan.planner" in imports(picker) and not any("picker" in m for m in imports(planner))


def test_the_picker_plans_the_vllm_the_instance_will_run() -> None:
    """The image the region pulls decides the vLLM rules, and the spec's env the sampler: the KV headroom shown
    is the one that vLLM will give."""
    from llmnest.targets.aliyun.sizing import check_fits
    from llmnest.targets.aliyun.catalog import instance

    model, itype = get_model("Qwen/QwQ-32B"), instance("ecs.gn7i-4x.8xlarge")

    context = {"max_model_len": "8192"}  # 32k no longer fits 4 x A10 where vLLM subtracts its graphs (0.20+)

    def kv(**sets: str) -> int:
        spec = cloud_spec("Qwen/QwQ-32B", sets={**context, **sets})
        return check_fits(model, itype, 1, spec).kv_cache_bytes

    mainland = kv()  # the EGS image, vLLM 0.11.0: FlashInfer's sampler
    assert kv(**{"env.VLLM_USE_FLASHINFER_SAMPLER": "0"}) < mainland
    abroad = cloud_spec("Qwen/QwQ-32B", region="ap-southeast-1", sets=context)  # Docker Hub's image, newer
    plan = check_fits(model, itype, 1, abroad)
    assert plan.kv_cache_bytes < mainland and any(line.startswith("unsure") for line in plan.provenance)
