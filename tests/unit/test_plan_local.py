"""Planning a local model directory: figures from config.json, parameters from safetensors headers."""

from __future__ import annotations

import json
import struct
from math import prod
from pathlib import Path

import pytest

from llmnest.errors import BadInput
from llmnest.plan import plan_cpu, resolve_model

CONFIG = {
    "model_type": "qwen2", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 2048,
    "torch_dtype": "bfloat16",
}


def write_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * prod(shape)  # bf16
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def test_parameters_come_from_the_safetensors_headers(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    write_safetensors(tmp_path / "model-00001.safetensors", {"embed": [1000, 64], "norm": [64]})
    write_safetensors(tmp_path / "model-00002.safetensors", {"lm_head": [1000, 64]})
    model = resolve_model(str(tmp_path))
    assert model.params == 1000 * 64 * 2 + 64
    assert (model.layers, model.kv_heads, model.head_dim, model.dtype) == (2, 2, 16, "bf16")
    plan = plan_cpu(model, kv_cache_gib=1, max_model_len=2048)
    assert plan.kv_bytes_per_token == 2 * 2 * 2 * 16 * 2 and plan.weights_bytes == model.params * 2


def test_catalog_names_still_resolve():
    assert resolve_model("qwq-32b").key == "Qwen/QwQ-32B"


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({k: v for k, v in CONFIG.items() if k != "num_attention_heads"}, "num_attention_heads"),
        ({**CONFIG, "num_key_value_heads": 3}, "not a multiple"),
    ],
)
def test_incomplete_or_inconsistent_figures_are_bad_input(tmp_path: Path, config, needle):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BadInput, match=needle):
        resolve_model(str(tmp_path))
