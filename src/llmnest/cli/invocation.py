"""How a person runs this llmnest again from where they are: `llmnest` when that name on PATH is this
program, else the path they used (`.venv/bin/llmnest` after `make up`), else `python -m llmnest`."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def program() -> str:
    here = Path(sys.argv[0])
    on_path = shutil.which("llmnest")
    if here.name == "llmnest" and here.is_file():
        if on_path and os.path.samefile(on_path, here):
            return "llmnest"
        return str(here) if "/" in sys.argv[0] else str(here.resolve())
    beside = Path(sys.executable).parent / "llmnest"  # `python -m llmnest` from a venv
    if on_path and beside.is_file() and os.path.samefile(on_path, beside):
        return "llmnest"
    if beside.is_file():
        try:
            return str(beside.relative_to(Path.cwd()))
        except ValueError:
            return str(beside)
    return f"{sys.executable} -m llmnest"
