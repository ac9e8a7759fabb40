"""The plan against what the engine reports after a real start (for `llmnest status`)."""

from __future__ import annotations

import re
from typing import Any

from .planner import Plan

# vLLM 0.32, vllm/v1/core/kv_cache_utils.py: "CPU KV cache size: 93,184 tokens, Maximum concurrency
# for 4,096 tokens per request: 22.75x" ("GPU" on CUDA, "GPU + host" with hisparse offload).
KV_LINE = re.compile(
    r"(?:CPU|GPU|XPU|TPU)(?: \+ host)? KV cache size: ([\d,]+) tokens, "
    r"Maximum concurrency for ([\d,]+) tokens per request"
)


def engine_kv_tokens(log_text: str) -> tuple[int, int] | None:
    """(KV cache tokens, max_model_len) from the last KV cache line of a vLLM log, or None."""
    found = KV_LINE.findall(log_text)
    if not found:
        return None
    tokens, length = found[-1]
    return int(tokens.replace(",", "")), int(length.replace(",", ""))


def predicted_vs_actual(plan: Plan, log_text: str) -> dict[str, Any]:
    """{'predicted', 'actual', 'error_pct'}; actual and error are None until vLLM has logged its cache."""
    actual = engine_kv_tokens(log_text)
    if actual is None:
        return {"predicted": plan.kv_cache_tokens, "actual": None, "error_pct": None}
    tokens = actual[0]
    error = round(100.0 * (plan.kv_cache_tokens - tokens) / tokens, 2) if tokens else None
    return {"predicted": plan.kv_cache_tokens, "actual": tokens, "error_pct": error}
