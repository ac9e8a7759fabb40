"""What the GPU memory model does not cover, read off a model's config.json, so a plan refuses instead of guessing.

The model counts dense and MoE decoders with full attention (MLA included) at 16-bit, fp8 or fp32. Each check
below names what vLLM does differently for the case it refuses:
- quantized checkpoints (GPTQ, AWQ, MXFP4, ...): packed weights with scales, repacked at load time
  (Marlin), so params x bytes is not what loading takes;
- sliding-window and hybrid (Mamba / linear-attention) layers: vLLM sizes one KV cache group per layer kind
  (vllm/v1/core/kv_cache_utils.py), windowed layers keep only the window;
- multimodal models: the vision or audio tower's weights, and the encoder's own profiling pass
  (gpu_model_runner.profile_run), come on top of the text model.
"""

from __future__ import annotations

from typing import Any

SUPPORTED_QUANT = frozenset({"fp8"})
ENCODER_KEYS = ("vision_config", "audio_config", "visual", "vision_tower", "mm_projector_type")
HYBRID_KEYS = ("layers_block_type", "hybrid_override_pattern", "full_attention_interval", "linear_num_value_heads",
               "mamba_d_state", "ssm_state_size", "attn_layer_indices")


def _windowed(config: dict[str, Any]) -> bool:
    window = config.get("sliding_window")
    if not window or config.get("use_sliding_window") is False:
        return False
    return window < (config.get("max_position_embeddings") or window + 1)


def unmodelled(config: dict[str, Any]) -> str | None:
    """Why the GPU plan cannot model this config.json (None when it can), in words fit for one error line."""
    quant = str((config.get("quantization_config") or {}).get("quant_method") or "").lower()
    if quant and quant not in SUPPORTED_QUANT:
        return (f"a {quant.upper()} checkpoint (packed weights with scales, repacked when vLLM loads them) is not "
                "modelled; plan the unquantized model, or --dtype fp8")
    kinds = set(config.get("layer_types") or ()) - {"full_attention", "attention"}
    if kinds or any(key in config for key in HYBRID_KEYS):
        what = ", ".join(sorted(kinds)) or "state-space / linear"
        return f"hybrid or sliding-window attention ({what} layers: one KV cache group per kind) is not modelled"
    if _windowed(config):
        return (f"sliding-window attention (window {config['sliding_window']:,} tokens, vLLM keeps only the window) "
                "is not modelled")
    if any(key in config for key in ENCODER_KEYS):
        return "a multimodal model (its vision/audio tower and the encoder's profiling pass) is not modelled"
    return None
