"""The process runtime: the engine as a local process.

`engine_command` and `key_secrets` are pure; `pid_alive`, `kill_group` and `wait_gone` are the thin edge
over processes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .. import state
from ..engines import render_launch
from ..spec import DeploymentSpec


def engine_command(spec: DeploymentSpec, api_key: str | None, python: str = sys.executable) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment of the engine process for `spec`."""
    if not spec.model_path:
        raise ValueError("the spec has no resolved model_path")
    launch = render_launch(spec, spec.model_path, api_key)
    return launch.argv(python), launch.env


def key_secrets(name: str, api_key: str | None) -> dict[str, str]:
    """For printed commands: the key stands as a read of its 0600 file, never as itself."""
    return {api_key: f'"$(cat {state.key_path(name)})"'} if api_key else {}


def pid_alive(pid: int | None) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_gone(pid: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True

