"""Where deployments run, by name. Adding a target: a module with a `Target` subclass, one line here."""

from __future__ import annotations

from ..errors import BadInput
from .base import Capability, Context, Created, Resolved, Target


def _registry() -> dict[str, type[Target]]:
    # Imported here so a target's own dependencies load only when it is used.
    from .aliyun.target import AliyunTarget
    from .kubernetes.target import KubernetesTarget
    from .local.target import LocalTarget

    return {cls.name: cls for cls in (LocalTarget, AliyunTarget, KubernetesTarget)}


def names() -> list[str]:
    return list(_registry())


def get(name: str) -> Target:
    """The target called `name` (`local`, `aliyun`); an unknown name is bad input."""
    registry = _registry()
    if name not in registry:
        raise BadInput(f"unknown --target {name!r}: use {' or '.join(registry)}")
    return registry[name]()


__all__ = ["Capability", "Context", "Created", "Resolved", "Target", "get", "names"]
