"""Where deployments run, by name: the registry (targets/registry.py) names each target's package, whose
declaration (targets/declaration.py) says what the rest of llmnest knows of it and whose `Target`
subclass (targets/base.py) does the verbs.

Light on purpose: the spec and the store read declarations through `registry` without loading the
verbs; `Target` and its companions load on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import registry

if TYPE_CHECKING:
    from .base import Capability, Context, Created, Resolved, Target

_BASE = ("Capability", "Context", "Created", "Resolved", "Target")


def names() -> list[str]:
    return registry.names()


def get(name: str) -> Target:
    """The target called `name`: the Target subclass in its package's `target` module that carries its
    declaration (imported now: it may bring the target's dependencies); an unknown name is bad input."""
    from .base import Target

    declaration = registry.declaration(name)
    module = importlib.import_module(f"{registry.PACKAGES[name]}.target")
    found = [c for c in vars(module).values()
             if isinstance(c, type) and issubclass(c, Target) and getattr(c, "declaration", None) is declaration]
    assert len(found) == 1, f"{module.__name__} must define one Target subclass with {name}'s declaration"
    return found[0]()


def __getattr__(attr: str) -> Any:
    if attr in _BASE:
        from . import base

        return getattr(base, attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = ["Capability", "Context", "Created", "Resolved", "Target", "get", "names"]
