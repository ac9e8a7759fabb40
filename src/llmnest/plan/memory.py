"""The memory arithmetic of serving a model with vLLM: weights, KV cache per token, blocks, overhead.

All functions are pure. The rules mirror vLLM 0.32 (read in its source and measured on its CPU build):

- weights = params x bytes per parameter; `params` is the total count, so an MoE model counts every
  expert, not only the active ones.
- KV cache per token and layer = 2 (K and V) x KV heads x head_dim x bytes. Grouped-query attention
  stores only the KV heads. With tensor parallel each GPU holds kv_heads / tp heads, or one replicated
  head when tp exceeds kv_heads. MLA (DeepSeek V3/R1) stores one latent of kv_lora_rank +
  qk_rope_head_dim per token and layer, replicated on every GPU.
- The cache is cut into blocks of `block_size` tokens (128 on the CPU build, 16 on CUDA, 64 for MLA):
  blocks = floor(KV bytes / (block_size x bytes per token)), as vllm/v1/core/kv_cache_utils.py does.
- vLLM logs "KV cache size: N tokens" with N = int(blocks / ceil(max_model_len / block_size) x
  max_model_len): whole requests of max_model_len, scaled back to tokens.
- On a GPU the KV cache gets what is left of memory x gpu_memory_utilization after the weights, the
  activation peak of the profiling pass and memory torch does not track (estimated below).
"""

from __future__ import annotations

from ..catalog import DTYPE_BYTES, CatalogModel

GIB = 1024**3
CPU_BLOCK_SIZE = 128  # vllm/platforms/cpu.py: cache_config.block_size = 128 unless the user sets one
GPU_BLOCK_SIZE = 16  # vllm/config/cache.py: CacheConfig.DEFAULT_BLOCK_SIZE
MLA_BLOCK_SIZE = 64  # FlashMLA's block size on CUDA
NON_TORCH_BYTES = 1 * GIB  # CUDA context, cuBLAS workspaces, NCCL buffers: an estimate per GPU
LOGITS_BYTES = 4  # the sampler's logits are fp32


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def weights_bytes(model: CatalogModel, dtype: str) -> int:
    """Bytes of all weights at `dtype` (every expert of an MoE model)."""
    return round(model.params * DTYPE_BYTES[dtype])


def is_mla(model: CatalogModel) -> bool:
    return model.kv_lora_rank is not None


def kv_bytes_per_token(model: CatalogModel, kv_dtype: str, tp: int = 1, pp: int = 1) -> int:
    """KV cache bytes one token takes on one GPU at tensor parallel `tp` and pipeline parallel `pp`.

    With tp = pp = 1 this is the whole model's figure: layers x 2 x kv_heads x head_dim x bytes.
    """
    layers = cdiv(model.layers, pp)
    size = DTYPE_BYTES[kv_dtype]
    if is_mla(model):
        return round(layers * (model.kv_lora_rank + (model.qk_rope_head_dim or 0)) * size)
    heads_per_gpu = max(1, model.kv_heads // tp)
    return round(layers * 2 * heads_per_gpu * model.head_dim * size)


def default_block_size(model: CatalogModel, device: str) -> int:
    if device == "cpu":
        return CPU_BLOCK_SIZE
    return MLA_BLOCK_SIZE if is_mla(model) else GPU_BLOCK_SIZE


def kv_blocks(kv_cache_bytes: int, block_size: int, bytes_per_token: int) -> int:
    """Whole blocks that fit in `kv_cache_bytes` (0 when nothing is left)."""
    return max(0, kv_cache_bytes) // (block_size * bytes_per_token)


def logged_kv_tokens(blocks: int, block_size: int, max_model_len: int) -> int:
    """The token count vLLM logs as 'KV cache size: N tokens' for this many blocks."""
    return int(blocks / cdiv(max_model_len, block_size) * max_model_len)


def concurrent_requests(blocks: int, block_size: int, max_model_len: int) -> int:
    """How many requests of the full max_model_len fit in the cache at once."""
    return blocks // cdiv(max_model_len, block_size)


def batch_defaults(gpu_name: str, gpu_memory_bytes: int) -> tuple[int, int]:
    """vLLM's OpenAI-server defaults (max_num_batched_tokens, max_num_seqs) for this GPU.

    Mirrors vllm/engine/arg_utils.py: larger batches on >= 70 GiB GPUs other than the A100.
    """
    if gpu_memory_bytes >= 160 * GIB:
        return 16384, 1024
    if gpu_memory_bytes >= 70 * GIB and "a100" not in gpu_name.lower():
        return 8192, 1024
    return 2048, 256


def activation_bytes(model: CatalogModel, dtype_bytes: float, batched_tokens: int, max_seqs: int, tp: int) -> int:
    """Estimated peak of vLLM's profiling pass on one GPU beyond the weights.

    One forward of `batched_tokens` tokens keeps about 4 hidden-wide and 3 MLP-wide activations alive
    (residual, norm, attention output; gate, up, product); the sampler holds fp32 logits for
    `max_seqs` sequences. An MoE layer's MLP width is the active experts' width.
    """
    if model.experts and model.moe_intermediate_size:
        mlp_width = (model.experts_per_token or 1) * model.moe_intermediate_size
    else:
        mlp_width = model.intermediate_size
    per_token = 4 * model.hidden_size + 3 * mlp_width / tp
    forward = batched_tokens * per_token * max(dtype_bytes, 2)
    logits = max_seqs * model.vocab_size * LOGITS_BYTES
    return round(forward + logits)


def architecture_params(model: CatalogModel, tied_embeddings: bool) -> int:
    """Parameter count derived from the architecture figures, to cross-check the catalog's `params`.

    Counts embeddings (and an untied LM head), per layer the attention projections (Qwen2's q/k/v
    biases, Qwen3's q/k norms), the MLP or every MoE expert plus its router, two RMSNorms, and the
    final norm. MLA models are not covered (their projections differ) and return 0.
    """
    if is_mla(model):
        return 0
    h, hd = model.hidden_size, model.head_dim
    q, kv = model.attention_heads * hd, model.kv_heads * hd
    attention = h * q + 2 * h * kv + q * h
    if model.arch == "qwen2":
        attention += q + 2 * kv
    if model.arch.startswith("qwen3"):
        attention += 2 * hd
    if model.experts and model.moe_intermediate_size:
        mlp = model.experts * 3 * h * model.moe_intermediate_size + h * model.experts
    else:
        mlp = 3 * h * model.intermediate_size
    layer = attention + mlp + 2 * h
    embeddings = model.vocab_size * h * (1 if tied_embeddings else 2)
    return model.layers * layer + embeddings + h
