"""How the supervisor starts, watches and stops one unit: an engine replica (a local process or a docker
container) or a gateway process.

All answer the same few questions, so the supervisor's loop (readiness, liveness, restarts) is one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from ... import state
from ...home import gateway_log_path, log_path
from ...logs import ATTEMPT_MARK, last_attempt
from ...runtimes import docker, docker_cli
from ...runtimes.process import engine_command, kill_group, wait_gone
from ...spec import DeploymentSpec
from . import units_store


def exit_description(code: int | None) -> str:
    """'exited with code 1' or 'was killed by SIGKILL'."""
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Runner(Protocol):
    """One supervised unit (an engine replica or a gateway), seen from its supervisor."""

    what: str  # "engine" or "gateway", for messages

    def start(self, attempt: int) -> int | None:
        """Start (or, after a crash it recovered from itself, adopt) it; returns its pid."""

    def exit_reason(self) -> str | None:
        """None while it runs; else what happened to it ('exited with code 1', ...)."""

    def kill(self) -> None:
        """Stop it now (a hang: it no longer answers, so nothing is left to drain)."""

    def stop(self, grace: float) -> None:
        """Stop it for good: a polite signal, then force after `grace` seconds."""

    def recent_log(self) -> list[str]:
        """The log lines of the current attempt."""


CPU_BIND = "VLLM_CPU_OMP_THREADS_BIND"  # the cores vLLM's CPU build pins its threads to


def cpu_bind(index: int, replicas: int, cores: int, alone: bool = True) -> str | None:
    """The cores replica slot `index` of `replicas` pins vLLM's threads to, or None for vLLM's own choice.

    Several replicas split the cores in equal shares; slot `replicas` (a surge replica, started next to them
    while they are replaced) gets the cores left over. One replica alone keeps vLLM's choice (every core but
    the last, kept for its scheduler); started next to another engine of its deployment (a surge), slot 0
    takes the lower half of the cores and slot 1 the upper half (with 2 cores: core 1, which vLLM's choice
    for the other leaves to its scheduler)."""
    if replicas == 1:
        if alone or cores < 2 or index > 1:
            return None
        first, last = (0, cores // 2 - 1) if index == 0 else (cores // 2, cores - 1)
    elif cores < replicas:
        return None
    else:
        share = cores // replicas
        first, last = (index * share, (index + 1) * share - 1) if index < replicas else (replicas * share, cores - 1)
    if first > last:
        return None
    return str(first) if first == last else f"{first}-{last}"


def replica_launch(unit: units_store.Unit) -> tuple[DeploymentSpec, str | None]:
    """The spec an engine replica runs (its deployment's, listening where the unit says) and the key it takes.

    On CPUs, vLLM pins its threads to the cores it picks, the same ones in every process: several replicas
    would crowd onto one core (a starting one then crawls for many minutes). Each gets its own cores (its
    GPUs), shared out for the replicas the deployment has, or a `scale` in progress starts it for."""
    assert unit.deployment is not None
    dep = state.get(unit.deployment)
    scaling_to = getattr(dep.target_state, "scaling_to", None) or 0
    spec = dep.spec.model_copy(update={"replicas": max(dep.spec.replicas, scaling_to)})
    spec = spec.listening_on(unit.host, unit.port, unit.index)
    alone = all(u.id == unit.id for u in dep.replicas)
    bind = cpu_bind(unit.index, spec.replicas, os.cpu_count() or 1, alone)
    if spec.device == "cpu" and bind is not None and CPU_BIND not in spec.env:
        spec = spec.model_copy(update={"env": {**spec.env, CPU_BIND: bind}})
    return spec, units_store.engine_key(dep.name)


class ChildRunner:
    """A child process in its own process group, its output appended to a log file."""

    what = "engine"

    def __init__(self, unit: units_store.Unit) -> None:
        self.unit = unit
        self.proc: subprocess.Popen[bytes] | None = None

    def log(self) -> Path:
        assert self.unit.deployment is not None
        return log_path(self.unit.deployment, self.unit.index)

    def command(self) -> tuple[list[str], dict[str, str]]:
        return engine_command(*replica_launch(self.unit))

    def start(self, attempt: int) -> int | None:
        if self.proc is not None:  # what a crashed attempt left in its group (vLLM's engine core, its resource tracker)
            kill_group(self.proc.pid, signal.SIGKILL)
        argv, env = self.command()
        with self.log().open("ab") as log:
            log.write(f"{ATTEMPT_MARK} starting {self.what} (attempt {attempt}) at {time.ctime()}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **env}, start_new_session=True,
            )
        return self.proc.pid

    def exit_reason(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"{self.what} {exit_description(self.proc.returncode)}"

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
        return last_attempt(self.log())


class GatewayRunner(ChildRunner):
    """`llmnest gateway serve` for the deployments that `up` put on one port."""

    what = "gateway"

    def log(self) -> Path:
        return gateway_log_path(self.unit.port)

    def command(self) -> tuple[list[str], dict[str, str]]:
        return gateway_command(self.unit.host, self.unit.port), {}


def gateway_command(host: str, port: int, python: str = sys.executable) -> list[str]:
    """The gateway process `up` supervises: it routes to the deployments on its port."""
    return [python, "-m", "llmnest", "gateway", "serve", "--host", host, "--port", str(port), "--deployments-on-port",
            "--health-interval", "2"]


class ContainerRunner:
    """An engine replica in a docker container with `--restart unless-stopped`: Docker restarts a crashed
    engine by itself; the supervisor notices (the restart count rises) and waits for it to answer again."""

    what = "engine"

    def __init__(self, unit: units_store.Unit) -> None:
        assert unit.deployment is not None
        self.unit = unit
        self.name = docker.container_name(unit.deployment, unit.index)
        self.restarts_seen = 0

    def start(self, attempt: int) -> int | None:
        found = docker_cli.inspect(self.name, missing_ok=True)
        if found is None:
            spec, key = replica_launch(self.unit)
            assert spec.model_path, "a local deployment has its weights before it starts"
            docker_cli.start(spec, spec.model_path, key, self.name)
        elif found.status not in {"running", "restarting"}:
            docker_cli.call("start", self.name, check=False)  # Docker may be restarting it at this very moment
        current = docker_cli.inspect(self.name, missing_ok=True)
        self.restarts_seen = current.restarts if current else 0
        return current.pid if current and current.pid else None

    def exit_reason(self) -> str | None:
        found = docker_cli.inspect(self.name, missing_ok=True)
        if found is None:
            return "engine container was removed"
        if found.restarts > self.restarts_seen:
            self.restarts_seen = found.restarts
            return f"engine container exited (code {found.exit_code}); Docker restarted it"
        if found.status in {"running", "restarting"}:
            return None
        return f"engine container {found.status} with code {found.exit_code}" + (f": {found.error}" if found.error else "")

    def kill(self) -> None:
        docker_cli.call("kill", self.name)  # a manual stop for Docker: start() starts it again

    def stop(self, grace: float) -> None:
        """Stop and remove the container, keeping its last log lines in the replica's log for `llmnest logs`."""
        docker_cli.call("stop", "--time", str(max(int(grace), 1)), self.name, check=False)
        lines = docker_cli.log_lines(self.name, 5000)
        if lines:
            assert self.unit.deployment is not None
            with log_path(self.unit.deployment, self.unit.index).open("a") as log:
                log.write(f"{ATTEMPT_MARK} container {self.name} removed at {time.ctime()}; its log:\n")
                log.write("\n".join(lines) + "\n")
        docker_cli.remove(self.name)

    def recent_log(self) -> list[str]:
        return docker_cli.log_lines(self.name, 5000)


def runner_for(unit_id: str) -> Runner:
    unit = units_store.get(unit_id)
    if unit.kind == "gateway":
        return GatewayRunner(unit)
    assert unit.deployment is not None
    docker_runtime = state.get(unit.deployment).spec.runtime == "docker"
    return ContainerRunner(unit) if docker_runtime else ChildRunner(unit)
