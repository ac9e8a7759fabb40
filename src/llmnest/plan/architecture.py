"""Architecture figures for a model: from the catalog, or from a local directory's config.json."""

from __future__ import annotations

import json
import struct
from math import prod
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..catalog import CatalogModel, get_model
from ..errors import BadInput
from .unmodelled import unmodelled

TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
REQUIRED = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")


def resolve_model(name: str) -> CatalogModel:
    """A catalog model by any of its names, or a local model directory (config.json + safetensors)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return model_from_dir(path)
    return get_model(name)


def _safetensors_params(path: Path) -> int:
    """Exact parameter count from the safetensors headers (no tensor data is read)."""
    total = 0
    for file in sorted(path.glob("*.safetensors")):
        with file.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header: dict[str, Any] = json.loads(fh.read(size))
        total += sum(prod(t["shape"]) for key, t in header.items() if key != "__metadata__")
    return total


def model_from_dir(path: Path) -> CatalogModel:
    """A CatalogModel built from `path`/config.json; a directory without the figures is BadInput."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise BadInput(f"{path} has no config.json, so no architecture figures to plan with")
    config = json.loads(config_file.read_text())
    why = unmodelled(config) or unmodelled(config.get("text_config") or {})
    if why:
        raise BadInput(f"{path.name}: {why}")
    quantized = (config.get("quantization_config") or {}).get("quant_method") == "fp8"
    config = {**config, **config.get("text_config", {})}
    missing = [key for key in REQUIRED if not config.get(key)]
    if missing:
        raise BadInput(f"{path}/config.json lacks architecture figures: {', '.join(missing)}")
    heads = config["num_attention_heads"]
    context = config.get("max_position_embeddings") or 4096
    experts = config.get("num_experts") or config.get("n_routed_experts")
    fields: dict[str, Any] = dict(
        key=str(path), display_name=path.name, hf_id=str(path), modelscope_id=str(path),
        params=_safetensors_params(path) or 1,
        dtype="fp8" if quantized else TORCH_DTYPES.get(str(config.get("torch_dtype") or config.get("dtype")), "bf16"),
        arch=config.get("model_type", "unknown"), layers=config["num_hidden_layers"],
        hidden_size=config["hidden_size"], intermediate_size=config["intermediate_size"],
        moe_intermediate_size=config.get("moe_intermediate_size") if experts else None,
        experts=experts, experts_per_token=config.get("num_experts_per_tok") if experts else None,
        attention_heads=heads, kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        kv_lora_rank=config.get("kv_lora_rank"), qk_rope_head_dim=config.get("qk_rope_head_dim"),
        vocab_size=config["vocab_size"], context_length=context, max_model_len=context,
    )
    try:
        model = CatalogModel(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadInput(f"{path}/config.json: {'.'.join(map(str, first['loc']))}: {first['msg']}") from exc
    if model.params == 1:
        from .memory import architecture_params

        estimate = architecture_params(model, bool(config.get("tie_word_embeddings", False)))
        if not estimate:
            raise BadInput(f"{path} has no *.safetensors to count its parameters")
        model = model.model_copy(update={"params": estimate})
    return model
