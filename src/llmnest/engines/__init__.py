"""Engine renderers: pure functions from a spec to an engine launch."""

from __future__ import annotations

from ..spec import DeploymentSpec
from . import sglang, vllm
from .base import Launch

_ENGINES = {"vllm": vllm, "sglang": sglang}


def render_launch(spec: DeploymentSpec, model_path: str, api_key: str | None) -> Launch:
    """The engine start for `spec` with weights at `model_path` (a host or container path)."""
    return _ENGINES[spec.engine].launch(spec, model_path, api_key)


def default_image(engine: str) -> str:
    return _ENGINES[engine].DEFAULT_IMAGE


__all__ = ["Launch", "default_image", "render_launch"]
