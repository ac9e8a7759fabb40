"""The planner's arithmetic: weights, KV per token (GQA, MoE, MLA), blocks, vLLM's logged capacity."""

from __future__ import annotations

import pytest

from llmnest.catalog import CatalogModel, get_model, load_catalog
from llmnest.errors import BadInput
from llmnest.plan import gpu_model, plan_cpu, plan_gpus
from llmnest.plan import memory as mem

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
    """QwQ-32B on 4 x A10 at 0.95: KV = usable - weights/4 - overhead, in blocks of 16 tokens."""
    qwq, a10 = get_model("qwq-32b"), gpu_model("A10")
    plan = plan_gpus(qwq, a10, 4, max_model_len=32768, gpu_memory_utilization=0.95)
    usable = int(23028 * 2**20 * 0.95)
    weights = -(-qwq.params * 2 // 4)
    activations = 2048 * (4 * 5120 + 3 * 27648 / 4) * 2 + 256 * 152064 * 4
    kv = usable - weights - round(activations) - GIB
    assert plan.kv_cache_bytes == kv
    assert plan.kv_cache_blocks == kv // (16 * 65536)
    assert plan.tensor_parallel_size == 4 and plan.valid_tensor_parallel_sizes == (4,)
    assert plan.fits and plan.max_concurrent_requests == plan.kv_cache_blocks // 2048


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
    assert plan_gpus(qwen7, gpu_model("L20"), 1, dtype="fp8").weights_bytes == qwen7.params
