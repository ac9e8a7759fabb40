"""The registered targets: the one place that maps a target's name to its package.

Adding a target: a package under targets/ whose `__init__.py` declares `DECLARATION` (see
targets/declaration.py) and whose `target` module holds its verbs (a targets.base.Target subclass), and
one line in PACKAGES.
This module imports no target: a package is loaded when its declaration is first asked for.
"""

from __future__ import annotations

import importlib
from functools import cache

from ..errors import BadInput
from .declaration import Declaration

DEFAULT = "local"  # `--target` left out
PACKAGES = {
    "local": "llmnest.targets.local",
    "aliyun": "llmnest.targets.aliyun",
    "kubernetes": "llmnest.targets.kubernetes",
}


def names() -> list[str]:
    return list(PACKAGES)


def choices(names_: list[str] | None = None) -> str:
    """'local or aliyun' (three or more: 'a, b or c')."""
    items = names_ if names_ is not None else names()
    return " or ".join(filter(None, [", ".join(items[:-1]), items[-1]])) if items else ""


@cache
def declaration(name: str) -> Declaration:
    """The declaration of the target called `name`; an unknown name is bad input."""
    if name not in PACKAGES:
        raise BadInput(f"unknown --target {name!r}: use {choices()}")
    found = importlib.import_module(PACKAGES[name]).DECLARATION
    assert isinstance(found, Declaration) and found.name == name, f"{PACKAGES[name]} declares {found!r}"
    return found


def declarations() -> list[Declaration]:
    return [declaration(name) for name in PACKAGES]


def load_stores() -> None:
    """Import each registered target's `store` module, which adds its tables to the store (state.extend)."""
    for decl in declarations():
        if decl.store:
            importlib.import_module(f"{PACKAGES[decl.name]}.{decl.store}")
