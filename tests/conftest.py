"""Shared test helpers: run the real CLI in a subprocess against an isolated LLMNEST_HOME."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Converted demo weights are cached across test sessions (the conversion takes ~45 s).
MODELS_CACHE = REPO / ".llmnest-test" / "models"


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (Linux default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port nothing listens on, for a server the test (or a process it starts) binds later.

    Taken below the kernel's ephemeral range, never from it: the kernel gives the local end of every outgoing
    connection (any process's, on this shared machine) a port from that range, and such a connection holding
    the port when the server binds makes the bind fail (EADDRINUSE even with SO_REUSEADDR, as uvicorn binds;
    it once failed a bootstrap test as "the gateway stopped before it answered", under load, when the wait
    between choosing and binding is long). Below the range only explicit binds take ports, and this process
    never hands out the same one twice."""
    low = _ephemeral_low()
    first = min(20000, low // 2)
    while True:
        port = random.randrange(first, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))  # free on every address, and not even in TIME_WAIT
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def serving_on(port: int) -> list[str]:
    """Pids of processes started with `--port PORT` (an engine, a supervisor's child). pgrep's own
    errors fail the test: a pattern that starts with '-' once made pgrep refuse it, so these checks passed blindly."""
    done = subprocess.run(["pgrep", "-f", "--", f"--port {port}( |$)"], capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    return [pid for pid in done.stdout.split() if int(pid) != os.getpid()]


def processes_of(home: Path) -> set[int]:
    """Pids of the processes llmnest started for LLMNEST_HOME=home (supervisors, engines, gateways):
    they inherit it in their environment, whatever port they listen on."""
    marker = f"LLMNEST_HOME={home}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0") and (entry / "stat").read_text().split(") ", 1)[1][0] != "Z":
                found.add(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


def cli_env(home: Path) -> dict[str, str]:
    return {**os.environ, "LLMNEST_HOME": str(home), "LLMNEST_MODELS_DIR": str(MODELS_CACHE), "NO_COLOR": "1"}


def run_cli(env: dict[str, str], *args: str, timeout: float = 900, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmnest", *args],
        env=env, capture_output=True, text=True, timeout=timeout, input=stdin,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def cli(home: Path):
    """Run `llmnest ARGS` against a fresh, empty LLMNEST_HOME."""
    env = cli_env(home)
    return lambda *args, **kw: run_cli(env, *args, **kw)
