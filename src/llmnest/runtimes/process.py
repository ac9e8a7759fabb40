"""The process runtime: the engine as a local process, watched by a detached llmnest supervisor.

`engine_command` and `key_secrets` are pure; start/stop are the thin edge over processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
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


def start_supervisor(unit_id: str, log: Path) -> int:
    """Start `python -m llmnest.supervisor UNIT_ID` detached from this terminal; returns its pid."""
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmnest.supervisor", unit_id],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True, close_fds=True,
    )
    out.close()
    return proc.pid


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


def stop(unit: state.Unit, grace: float = 30, child_process: bool = True) -> None:
    """Stop a unit's supervisor (which stops what it runs), then make sure no process of it is left.

    Each polite SIGTERM gets `grace` seconds before SIGKILL. `child_process` is False for a container,
    which its supervisor removes.
    """
    if pid_alive(unit.supervisor_pid):
        os.kill(unit.supervisor_pid, signal.SIGTERM)  # type: ignore[arg-type]
        if not wait_gone(unit.supervisor_pid, grace):
            os.kill(unit.supervisor_pid, signal.SIGKILL)  # type: ignore[arg-type]
    if not child_process:
        return
    now = state.find_unit(unit.id)
    for pid in {p for p in (now.pid if now else None, unit.pid) if p}:
        if pid_alive(pid):
            kill_group(pid, signal.SIGTERM)
            if not wait_gone(pid, min(grace, 10)):
                kill_group(pid, signal.SIGKILL)
                wait_gone(pid, 5)
