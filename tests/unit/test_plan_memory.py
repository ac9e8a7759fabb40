"""The planner's arithmetic: weights, KV per token (GQA, MoE, MLA), blocks, vLLM's logged capacity."""

from __future__ import annotations

import pytest

from llmnest.catalog import CatalogModel, get_model, load_catalog
from llmnest.errors import BadInput
from llmnest.plan import gpu_model, plan_cpu, plan_gpus
from llmnest.plan import memory as mem
from llmnest.plan import vllm_rules as rules

GIB = 1024**3
# Catalog models whose config.json sets tie_word_embeddings (the LM head reuses the embeddings).
TIED_EMBEDDINGS = {"smollm2-135m"}


def test_cpu_capacity_matches_what_vllm_logged_on_this_machine():
    """vLLM 0.32 CPU build logged 45,500 tokens (1 GiB, max-model-len 4000) and 93,184 (2 GiB, 4096)."""
    demo = get_model("smollm2-135m")
    assert plan_cpu(demo, kv_cache_gib=1, max_model_len=4000).kv_cache_tokens == 45_500
    two = plan_cpu(demo, kv_cache_gib=2, max_model_len=4096)
    assert two.kv_cache_tokens == 93_184
    assert (two.kv_cache_blocks, two.block_size, two.kv_bytes_per_token) == (728, 128, 23_040)
    assert two.max_concurrent_requests == 22  # floor(728 / 32)
    assert two.max_model_len == 8192  # the model's context; 728 blocks would hold 93,184


def test_logged_tokens_round_to_whole_requests():
    assert mem.logged_kv_tokens(364, 128, 4096) == 364 * 128
    assert mem.logged_kv_tokens(364, 128, 4000) == int(364 / 32 * 4000)
    assert mem.logged_kv_tokens(0, 16, 100) == 0


def test_gqa_counts_kv_heads_not_attention_heads():
    qwq = get_model("qwq-32b")  # 40 attention heads, 8 KV heads
    assert mem.kv_bytes_per_token(qwq, "bf16") == 64 * 2 * 8 * 128 * 2
    assert mem.kv_bytes_per_token(qwq, "bf16", tp=4) == 64 * 2 * 2 * 128 * 2
    assert mem.kv_bytes_per_token(qwq, "bf16", tp=16) == 64 * 2 * 1 * 128 * 2  # replicated head
    assert mem.kv_bytes_per_token(qwq, "fp8") == 64 * 2 * 8 * 128


def test_moe_counts_every_expert():
    moe = get_model("Qwen/Qwen3-235B-A22B")
    assert mem.weights_bytes(moe, "bf16") == moe.params * 2
    assert mem.weights_bytes(moe, "bf16") > 10 * moe.active_params * 2
    assert plan_gpus(moe, gpu_model("H20"), 8).fits
    assert not plan_gpus(moe, gpu_model("H20"), 4).fits  # 470 GB of weights, 4 x 96 GB


def test_mla_stores_one_latent_replicated_on_every_gpu():
    mla = CatalogModel(
        key="mla-test", display_name="MLA", hf_id="x/mla", modelscope_id="x/mla", params=10**9, dtype="bf16",
        arch="deepseek_v3", layers=61, hidden_size=7168, intermediate_size=18432, attention_heads=128,
        kv_heads=128, head_dim=128, kv_lora_rank=512, qk_rope_head_dim=64, vocab_size=129280,
        context_length=163840, max_model_len=32768,
    )
    assert mem.kv_bytes_per_token(mla, "bf16") == 61 * (512 + 64) * 2
    assert mem.kv_bytes_per_token(mla, "bf16", tp=8) == 61 * (512 + 64) * 2
    assert mem.default_block_size(mla, "cuda") == 64


@pytest.mark.parametrize("key", sorted(load_catalog()))
def test_catalog_params_agree_with_the_architecture(key):
    model = load_catalog()[key]
    if mem.is_mla(model):
        pytest.skip("MLA projections (q/kv LoRA, dense first layers, MTP module) are not in the catalog figures")
    derived = mem.architecture_params(model, tied_embeddings=key in TIED_EMBEDDINGS)
    assert abs(derived - model.params) <= 0.03 * model.params, (key, derived, model.params)


def test_the_architecture_check_can_fail():
    model = get_model("qwq-32b")
    wrong = model.model_copy(update={"intermediate_size": model.intermediate_size * 2})
    assert abs(mem.architecture_params(wrong, False) - model.params) > 0.03 * model.params


def test_gpu_arithmetic_by_hand():
    """QwQ-32B on 4 x A10 (PCIe) at 0.95 with vLLM 0.11: KV = CUDA total x 0.95 - weights/4 - overhead."""
    qwq, a10 = get_model("qwq-32b"), gpu_model("A10")
    plan = plan_gpus(qwq, a10, 4, max_model_len=32768, gpu_memory_utilization=0.95)
    usable = int(a10.cuda_total_mib * 2**20 * 0.95)
    weights = -(-qwq.params * 2 // 4) + 32 * 2**20
    forward = 2048 * (3 * 5120 + 3 * 27648 / 4) * 2
    sampler = 3 * 256 * 152064 * 4  # FlashInfer's sampler, larger than the forward: the activation peak
    activations = sampler + 2048 * 5120 * 2
    non_torch = round(0.15 * GIB) + round(0.28 * GIB)  # the base and NCCL's buffers over PCIe
    assert sampler > forward
    kv = usable - weights - activations - non_torch
    assert plan.kv_cache_bytes == kv and plan.overhead_bytes == activations + non_torch
    assert plan.kv_cache_blocks == kv // (16 * 65536)
    assert plan.tensor_parallel_size == 4 and plan.valid_tensor_parallel_sizes == (4,)
    assert plan.fits and plan.max_concurrent_requests == plan.kv_cache_blocks // 2048


def test_the_card_is_taken_at_what_cuda_reports_not_its_nominal_size():
    a100 = gpu_model("A100-40G")
    assert a100.cuda_total_mib == 40325 and a100.cuda_total_measured  # 39.38 GiB, not 40
    qwen8 = get_model("Qwen/Qwen3-8B")
    plan = plan_gpus(qwen8, a100, 1, gpu_memory_utilization=0.9)
    nominal = plan_gpus(qwen8, a100, 1, gpu_memory_utilization=0.9, memory_bytes=a100.memory_bytes)
    assert plan.gpu_memory_bytes == 40325 * 2**20
    assert nominal.kv_cache_bytes - plan.kv_cache_bytes == int(40960 * 2**20 * 0.9) - int(40325 * 2**20 * 0.9)


def test_overhead_follows_the_profilers_terms():
    qwen8 = get_model("Qwen/Qwen3-8B")
    sort, flashinfer = rules.SORT_COPIES, rules.FLASHINFER_COPIES
    # the sampler's fp32 rows dominate at 256 requests; a long batch makes the forward the peak instead
    assert mem.activation_bytes(qwen8, 2, 2048, 256, 1, flashinfer) == (
        mem.sampler_bytes(qwen8, 256, 2048, flashinfer) + 2048 * 4096 * 2)
    long = mem.activation_bytes(qwen8, 2, 65536, 256, 1, sort)
    assert long == mem.forward_bytes(qwen8, 2, 65536, 1) + 65536 * 4096 * 2
    assert mem.sampler_bytes(qwen8, 1024, 512, sort) == mem.sampler_bytes(qwen8, 512, 512, sort)  # one per token
    # PyTorch's own top-k/top-p sorts the logits: far more memory than FlashInfer's sampler
    assert mem.sampler_bytes(qwen8, 256, 2048, sort) > 3 * mem.sampler_bytes(qwen8, 256, 2048, flashinfer)
    # NCCL's buffers come with the first peer and follow the link, not the peer count; one GPU has only the base
    assert mem.non_torch_bytes(1, "nvlink", True) == mem.non_torch_bytes(1, "pcie", True) == mem.NON_TORCH_BASE
    pcie = mem.NON_TORCH_BASE + mem.NCCL_PCIE
    assert mem.non_torch_bytes(2, "pcie", True) == mem.non_torch_bytes(8, "pcie", True) == pcie
    assert mem.non_torch_bytes(2, "nvlink", True) == mem.non_torch_bytes(8, "nvlink", True) > pcie
    # from 0.11 vLLM snapshots after NCCL starts: over NVLink only the lazily connected channels remain
    assert mem.non_torch_bytes(2, "nvlink", False) < mem.non_torch_bytes(2, "nvlink", True)
    # an unknown link takes the larger figure of the two
    for counted in (True, False):
        known = max(mem.non_torch_bytes(2, link, counted) for link in ("nvlink", "pcie"))
        assert mem.non_torch_bytes(2, None, counted) == known


def test_hopper_nvlink_before_0_11_plans_the_logged_non_torch_figure_and_says_it_is_unsure():
    """8 x H200 on vLLM 0.7.3 logged 7.16 GiB of non-torch memory per GPU (no source sizes it; the largest Hopper log
    before 0.11 that checks the NVLink figure is tp 2): a dense model at tp 8 (or 4) on H200 with vLLM 0.10 plans that
    figure and says it is unsure; from 0.11 (snapshot after NCCL starts), over PCIe, at tp 2 or on an A100 it does not."""
    qwen32, h200 = get_model("Qwen/Qwen2.5-32B-Instruct"), gpu_model("H200")

    def plan(version: str, gpu=h200, tp: int = 8, link: str | None = None):
        return plan_gpus(qwen32, gpu, tp, tensor_parallel_size=tp,
                         engine=mem.EngineSettings(vllm_version=version, interconnect=link))

    def hopper_unsure(p) -> bool:
        return any(line.startswith("unsure") and "Hopper GPUs over NVLink" in line for line in p.provenance)

    old, new = plan("0.10.2"), plan("0.11.0")
    assert hopper_unsure(old) and "non-torch 7.16 GiB (tp 8" in old.arithmetic[3]
    assert not hopper_unsure(new) and "non-torch 0.95 GiB (tp 8" in new.arithmetic[3]
    # the same activation peak (FlashInfer's sampler in both images): the KV gap is the non-torch term alone
    assert new.kv_cache_bytes - old.kv_cache_bytes == mem.HOPPER_LOGGED_NON_TORCH - mem.NON_TORCH_BASE - mem.NCCL_NVLINK_RUNTIME
    budget = mem.gpu_budget(qwen32, "bf16", "H200", "nvlink", h200.cuda_total_bytes, 0.9, 8, 1,
                            mem.EngineSettings(vllm_version="0.10.2"), h200.compute_capability)
    assert budget.non_torch == round(7.16 * GIB) and len(budget.rules.unsure) == 1
    assert hopper_unsure(plan("0.10.2", tp=4))
    for sure in (plan("0.10.2", link="pcie"), plan("0.10.2", tp=2), plan("0.10.2", gpu=gpu_model("A100-80G"))):
        assert not hopper_unsure(sure) and "7.16" not in sure.arithmetic[3]


def test_moe_forward_counts_the_routed_experts_caches():
    moe = get_model("Qwen/Qwen3-30B-A3B")
    per_token = 3 * 2048 + 8 * (3 * 768 / 4 + 2048)
    assert mem.forward_bytes(moe, 2, 4096, 4) == round(4096 * per_token * 2)


def test_fp8_weights_keep_embedding_and_lm_head_at_16_bits():
    moe = get_model("Qwen/Qwen3-235B-A22B")
    assert mem.weights_bytes(moe, "fp8") == moe.params + 2 * 151936 * 4096
    plan = plan_gpus(moe, gpu_model("H20"), 4, dtype="fp8", kv_dtype="fp8")
    assert plan.kv_bytes_per_token_per_gpu == 94 * 2 * 1 * 128  # 4 KV heads over tp 4, one byte each
    assert plan.fits


def test_more_utilization_more_cache_and_tp_must_divide():
    qwq, a10 = get_model("qwq-32b"), gpu_model("A10")
    low = plan_gpus(qwq, a10, 4, gpu_memory_utilization=0.9)
    high = plan_gpus(qwq, a10, 4, gpu_memory_utilization=0.98)
    assert high.kv_cache_tokens > low.kv_cache_tokens
    three = plan_gpus(qwq, a10, 4, tensor_parallel_size=3)
    assert not three.fits and "does not divide" in three.reason and three.suggestion == "use --tensor-parallel-size 4"


def test_too_small_says_what_would_fit():
    llama70 = get_model("deepseek-ai/DeepSeek-R1-Distill-Llama-70B")
    plan = plan_gpus(llama70, gpu_model("A10"), 4)
    assert not plan.fits and plan.kv_cache_tokens == 0 and plan.max_model_len == 0
    assert plan.suggestion == "needs 8 x A10 (tensor parallel 8) at max-model-len 32,768"
    short = plan_cpu(get_model("smollm2-135m"), kv_cache_gib=0.1, max_model_len=8192)
    assert not short.fits and short.suggestion.startswith("set --cpu-kv-gib 1")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"dtype": "int4"}, "pre-quantized"),
        ({"dtype": "fp6"}, "unknown --dtype"),
        ({"kv_dtype": "int2"}, "unknown --kv-dtype"),
        ({"max_model_len": 0}, "must be positive"),
        ({"gpu_memory_utilization": 1.2}, "(0, 1]"),
    ],
)
def test_bad_precision_and_numbers_are_bad_input(kwargs, needle):
    with pytest.raises(BadInput, match=needle.replace("(", r"\(").replace("[", r"\[").replace("]", r"\]")):
        plan_gpus(get_model("qwq-32b"), gpu_model("A10"), 4, **kwargs)


def test_old_gpus_fall_back_to_fp16_and_refuse_bf16_and_fp8():
    qwen7 = get_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    assert plan_gpus(qwen7, gpu_model("V100-32G"), 1).dtype == "fp16"
    for dtype in ("bf16", "fp8"):
        with pytest.raises(BadInput):
            plan_gpus(qwen7, gpu_model("T4"), 1, dtype=dtype)
    assert plan_gpus(qwen7, gpu_model("L20"), 1, dtype="fp8").weights_bytes == qwen7.params + 2 * 152064 * 3584


def test_pipeline_stages_are_charged_nccl_buffers_too():
    """tp 1 x pp 2 talks over NCCL between stages: the same link-kind term as tp 2, none on one GPU."""
    qwen8, a10 = get_model("Qwen/Qwen3-8B"), gpu_model("A10")
    staged = plan_gpus(qwen8, a10, 2, tensor_parallel_size=1, pipeline_parallel_size=2)
    single = plan_gpus(qwen8, a10, 1, tensor_parallel_size=1)
    assert staged.overhead_bytes - single.overhead_bytes == mem.NCCL_PCIE
