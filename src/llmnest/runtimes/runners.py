"""How the supervisor starts, watches and stops one engine: a local process or a docker container.

Both answer the same few questions, so the supervisor's loop (readiness, liveness, restarts) is one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Protocol

from .. import state
from ..home import log_path
from ..logs import ATTEMPT_MARK, last_attempt
from . import docker
from .process import engine_command, kill_group, wait_gone


def exit_description(code: int | None) -> str:
    """'exited with code 1' or 'was killed by SIGKILL'."""
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Runner(Protocol):
    """One engine, seen from its supervisor."""

    def start(self, attempt: int) -> int | None:
        """Start (or, after a crash it recovered from itself, adopt) the engine; returns its pid."""

    def exit_reason(self) -> str | None:
        """None while the engine runs; else what happened to it ('exited with code 1', ...)."""

    def kill(self) -> None:
        """Stop it now (a hang: it no longer answers, so nothing is left to drain)."""

    def stop(self, grace: float) -> None:
        """Stop it for good: a polite signal, then force after `grace` seconds."""

    def recent_log(self) -> list[str]:
        """The log lines of the current attempt."""


class ProcessRunner:
    """The engine as a child process in its own process group, its output appended to engine.log."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, attempt: int) -> int | None:
        dep = state.get(self.name)
        argv, env = engine_command(dep.spec, state.api_key(self.name))
        with log_path(self.name).open("ab") as log:
            log.write(f"{ATTEMPT_MARK} starting engine (attempt {attempt}) at {time.ctime()}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **env}, start_new_session=True,
            )
        return self.proc.pid

    def exit_reason(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"engine {exit_description(self.proc.returncode)}"

    def kill(self) -> None:
        if self.proc:
            kill_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, grace: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            kill_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        kill_group(self.proc.pid, signal.SIGKILL)  # leftovers of the group (engine workers)
        wait_gone(self.proc.pid, 5)

    def recent_log(self) -> list[str]:
        return last_attempt(log_path(self.name))


class ContainerRunner:
    """The engine in a docker container with `--restart unless-stopped`: Docker restarts a crashed
    engine by itself; the supervisor notices (the restart count rises) and waits for it to answer again."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.restarts_seen = 0

    def start(self, attempt: int) -> int | None:
        found = docker.inspect(self.name, missing_ok=True)
        if found is None:
            dep = state.get(self.name)
            assert dep.spec.model_path, "a local deployment has its weights before it starts"
            container = docker.start(dep.spec, dep.spec.model_path, state.api_key(self.name))
            state.update(self.name, info={"container_id": container})
        elif found.status not in {"running", "restarting"}:
            docker.call("start", self.name, check=False)  # Docker may be restarting it at this very moment
        current = docker.inspect(self.name, missing_ok=True)
        self.restarts_seen = current.restarts if current else 0
        return current.pid if current and current.pid else None

    def exit_reason(self) -> str | None:
        found = docker.inspect(self.name, missing_ok=True)
        if found is None:
            return "engine container was removed"
        if found.restarts > self.restarts_seen:
            self.restarts_seen = found.restarts
            return f"engine container exited (code {found.exit_code}); Docker restarted it"
        if found.status in {"running", "restarting"}:
            return None
        return f"engine container {found.status} with code {found.exit_code}" + (f": {found.error}" if found.error else "")

    def kill(self) -> None:
        docker.call("kill", self.name)  # a manual stop for Docker: start() starts it again

    def stop(self, grace: float) -> None:
        """Stop and remove the container, keeping its last log lines in engine.log for `llmnest logs`."""
        docker.call("stop", "--time", str(max(int(grace), 1)), self.name, check=False)
        lines = docker.log_lines(self.name, 5000)
        if lines:
            with log_path(self.name).open("a") as log:
                log.write(f"{ATTEMPT_MARK} container {self.name} removed at {time.ctime()}; its log:\n")
                log.write("\n".join(lines) + "\n")
        docker.remove(self.name)

    def recent_log(self) -> list[str]:
        return docker.log_lines(self.name, 5000)


def runner_for(name: str) -> Runner:
    runtime = state.get(name).spec.runtime
    return ContainerRunner(name) if runtime == "docker" else ProcessRunner(name)
