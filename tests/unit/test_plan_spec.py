"""plan_for_spec: what `llmnest up` checks before it downloads anything."""

from __future__ import annotations

import pytest

from llmnest import targets
from llmnest.catalog import get_model
from llmnest.errors import BadInput
from llmnest.host import Gpu
from llmnest.plan import plan_cpu, plan_for_spec
from llmnest.spec import DeploymentSpec


def spec(**kw) -> DeploymentSpec:
    return DeploymentSpec(**{"name": "t", "model": "m", "served_model_name": "m", **kw})


def test_cpu_spec_plans_its_kv_space():
    demo = get_model("smollm2-135m")
    plan = plan_for_spec(spec(device="cpu", cpu_kv_cache_gib=2, max_model_len=4096), demo, [])
    assert plan == plan_cpu(demo, kv_cache_gib=2, max_model_len=4096)
    assert plan.fits and plan.kv_cache_tokens == 93_184
    unset = plan_for_spec(spec(device="cpu", cpu_kv_cache_gib=1), demo, [])
    assert unset.requested_max_model_len == demo.context_length  # vLLM's default without --max-model-len


def test_engine_flags_are_honoured():
    demo = get_model("smollm2-135m")
    plan = plan_for_spec(
        spec(device="cpu", cpu_kv_cache_gib=2, max_model_len=4096,
             engine_args={"block-size": "64", "kv-cache-dtype": "fp8"}), demo, [])
    assert (plan.block_size, plan.kv_dtype, plan.kv_bytes_per_token) == (64, "fp8", 11_520)


def test_gpu_spec_uses_the_hosts_gpus_and_its_tensor_parallel():
    qwq = get_model("qwq-32b")
    a10s = [Gpu("NVIDIA A10", 23028)] * 4
    # 8,192 tokens: at tp 4 over PCIe vLLM reserves ~2.6 GiB per GPU for CUDA graphs (its NCCL all-reduces are
    # captured; tests/data/vllm_gpu_logs_graphs.yaml), which leaves too little for 32,768
    good = plan_for_spec(spec(device="cuda", gpu_count=4, tensor_parallel_size=4, max_model_len=8192), qwq, a10s)
    assert good.fits and good.tensor_parallel_size == 4 and good.gpu == "A10"
    assert good.target == "this host: 4 x NVIDIA A10"
    bad = plan_for_spec(spec(device="cuda", gpu_count=4, tensor_parallel_size=3, max_model_len=8192), qwq, a10s)
    assert not bad.fits and "does not divide" in bad.reason
    assert bad.suggestion.startswith("use --set tensor_parallel_size=4")  # as `up` takes it


def test_a_spec_that_cannot_fit_names_an_instance_type():
    llama70 = get_model("deepseek-ai/DeepSeek-R1-Distill-Llama-70B")
    plan = plan_for_spec(spec(device="cuda", gpu_count=1, max_model_len=32768), llama70, [Gpu("NVIDIA A10", 23028)],
                         targets.get("aliyun").instance_hint)  # as the lifecycle asks the other targets
    assert not plan.fits and plan.kv_cache_tokens == 0
    # 16, not 8: at tp 8 the CUDA graphs vLLM captures with their all-reduces leave 8 x A10 too little KV for 32,768
    assert "needs 16 x A10" in plan.suggestion and "on Alibaba Cloud: --target aliyun --instance-type ecs." in plan.suggestion


def test_unknown_host_gpu_is_planned_from_its_reported_memory():
    qwen7 = get_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    ada = [Gpu("NVIDIA RTX 6000 Ada", 49140)]
    plan = plan_for_spec(spec(device="cuda", gpu_count=1, max_model_len=16384), qwen7, ada)
    assert plan.fits and plan.gpu_memory_bytes == int(49140 * 0.97) * 2**20  # CUDA reports less than nvidia-smi


def test_cuda_spec_without_gpus_is_bad_input():
    with pytest.raises(BadInput, match="no NVIDIA GPU"):
        plan_for_spec(spec(device="cuda", gpu_count=1), get_model("qwq-32b"), [])


def test_gpu_spec_takes_the_engine_settings_from_the_spec():
    """The image tag decides the vLLM rules (CUDA graphs from 0.20, the sampler path), eager mode drops the graphs,
    the spec's env picks the sampler, flags set the batch."""
    from llmnest.plan import memory as mem

    qwen7 = get_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    a100 = [Gpu("NVIDIA A100-SXM4-80GB", 81920)]
    base = dict(device="cuda", gpu_count=1, max_model_len=16384, runtime="docker")
    new = plan_for_spec(spec(**base, image="vllm/vllm-openai:v0.20.0"), qwen7, a100)
    old = plan_for_spec(spec(**base, image="vllm/vllm-openai:v0.19.1"), qwen7, a100)
    eager = plan_for_spec(spec(**base, image="vllm/vllm-openai:v0.20.0", enforce_eager=True), qwen7, a100)
    graphs = new.overhead_bytes - old.overhead_bytes
    assert graphs == new.overhead_bytes - eager.overhead_bytes > 0
    # Qwen2.5-7B, 256 seqs: 51 piecewise + 35 FULL graphs; the 512-token forward plus 84 x 28 layers x the V1 figure
    assert graphs == mem.forward_bytes(qwen7, 2, 512, 1) + 84 * 28 * mem.GRAPH_LAYER_BYTES["v1"]
    # 0.11.1 opted out of FlashInfer's sampler; the spec's env opts back in, and the plan follows
    opted = dict(base, image="vllm/vllm-openai:v0.11.1")
    flashinfer = plan_for_spec(spec(**opted, env={"VLLM_USE_FLASHINFER_SAMPLER": "1"}), qwen7, a100)
    assert flashinfer.overhead_bytes < plan_for_spec(spec(**opted), qwen7, a100).overhead_bytes
    unknown = plan_for_spec(spec(**base, image="my-registry/vllm:custom"), qwen7, a100)
    assert any("no vLLM version known" in line for line in unknown.provenance)
    few = plan_for_spec(spec(**base, image="vllm/vllm-openai:v0.11.0", engine_args={"max-num-seqs": "16"}), qwen7, a100)
    assert few.overhead_bytes < old.overhead_bytes
    assert new.gpu_memory_bytes == 81050 * 2**20  # the catalog's CUDA total for the A100 80 GB
