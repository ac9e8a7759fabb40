"""Which weight and KV-cache dtypes a model can be served with, on a given device."""

from __future__ import annotations

from ..catalog import DTYPE_BYTES, CatalogModel
from ..errors import BadInput
from .hardware import GpuModel

ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}
FLOAT_DTYPES = ("bf16", "fp16", "fp32")
KV_DTYPES = ("bf16", "fp16", "fp32", "fp8")
CPU_DTYPES = FLOAT_DTYPES  # the vLLM CPU build serves 16- and 32-bit float weights


def _normal(value: str, allowed: tuple[str, ...], what: str) -> str:
    name = ALIASES.get(value.strip().lower(), value.strip().lower())
    if name not in allowed:
        raise BadInput(f"unknown {what} {value!r}; use one of: {', '.join(allowed)}")
    return name


def weight_dtype(model: CatalogModel, dtype: str | None, gpu: GpuModel | None) -> str:
    """The weights' dtype; `gpu` None means the vLLM CPU build. Raises BadInput for one the model cannot use."""
    native = model.dtype
    if dtype is None:
        if gpu is not None and native == "bf16" and not gpu.supports_bf16:
            return "fp16"  # what vLLM's dtype=auto does on Volta and Turing
        return native
    chosen = _normal(dtype, tuple(DTYPE_BYTES), "--dtype")
    if chosen != native and native not in FLOAT_DTYPES:
        raise BadInput(f"{model.key} is a {native} checkpoint; it cannot be served as {chosen}")
    if chosen in ("int8", "int4") and chosen != native:
        raise BadInput(
            f"--dtype {chosen} needs a pre-quantized checkpoint (AWQ, GPTQ); {model.key} is {native}. "
            "Use fp8 (quantized on the fly) or plan the quantized model's directory."
        )
    if gpu is None:
        if chosen not in CPU_DTYPES:
            raise BadInput(f"the vLLM CPU build serves {', '.join(CPU_DTYPES)} weights, not {chosen}")
        return chosen
    if chosen == "bf16" and not gpu.supports_bf16:
        cc = gpu.compute_capability
        raise BadInput(f"{gpu.display_name} has no bf16 (compute capability {cc}); use --dtype fp16")
    if chosen == "fp8" and not gpu.supports_fp8:
        raise BadInput(f"{gpu.display_name} cannot run fp8 weights (compute capability {gpu.compute_capability} < 8.0)")
    return chosen


def kv_dtype(weights: str, kv: str | None, gpu: GpuModel | None) -> str:
    """The KV cache dtype: 'auto' (None) follows the activations, which are 16-bit for quantized weights."""
    if kv is None or kv.strip().lower() == "auto":
        if weights in FLOAT_DTYPES:
            return weights
        return "bf16" if gpu is None or gpu.supports_bf16 else "fp16"
    chosen = _normal(kv, KV_DTYPES, "--kv-dtype")
    if gpu is not None and chosen == "bf16" and not gpu.supports_bf16:
        raise BadInput(f"{gpu.display_name} has no bf16; use --kv-dtype fp16 or fp8")
    return chosen
