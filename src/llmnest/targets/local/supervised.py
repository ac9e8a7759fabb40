"""A unit's detached supervisor (`python -m llmnest.targets.local.supervisor UNIT_ID`), started and stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ...runtimes.process import kill_group, pid_alive, wait_gone
from . import units_store

SUPERVISOR_MODULE = "llmnest.targets.local.supervisor"


def start_supervisor(unit_id: str, log: Path) -> int:
    """Start the supervisor of UNIT_ID detached from this terminal, its output appended to `log`; its pid."""
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", SUPERVISOR_MODULE, unit_id],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True, close_fds=True,
    )
    out.close()
    return proc.pid


def stop(unit: units_store.Unit, grace: float = 30, child_process: bool = True) -> None:
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
    now = units_store.find(unit.id)
    for pid in {p for p in (now.pid if now else None, unit.pid) if p}:
        if pid_alive(pid):
            kill_group(pid, signal.SIGTERM)
            if not wait_gone(pid, min(grace, 10)):
                kill_group(pid, signal.SIGKILL)
                wait_gone(pid, 5)
