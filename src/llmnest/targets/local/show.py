"""What `llmnest show NAME --as command|script` prints for a deployment on this machine: the engine command
of each replica and the gateway's, keys as reads of their 0600 files, never as themselves."""

from __future__ import annotations

from ... import state
from ...runtimes import docker, process
from ...shell import render as render_shell
from . import units_store
from .runners import gateway_command
from .units import replica_units


def render(dep: state.Deployment, fmt: str) -> str:
    """The engine command of each replica, and the gateway's; as a script, engines in the background."""
    key = units_store.engine_key(dep.name)
    secrets = {**process.key_secrets(dep.name, state.api_key(dep.name)),
               **({key: f'"$(cat {units_store.engine_key_path(dep.name)})"'} if key and dep.spec.gateway else {})}
    commands = []
    for unit in dep.replicas or replica_units(dep.spec):
        if dep.spec.gateway:
            commands.append(f"# engine replica {unit.index} on {unit.host}:{unit.port}")
        spec = dep.spec.listening_on(unit.host, unit.port, unit.index)
        if dep.spec.runtime == "process":
            argv, env = process.engine_command(spec, key)
        else:
            argv, env = docker.run_argv(spec, spec.model_path or "", key, docker.container_name(dep.name, unit.index))
        commands.append(render_shell(argv, env, secrets))
    gateway = render_shell(gateway_command(dep.spec.host, dep.spec.port), {}, {}) if dep.spec.gateway else None
    if fmt == "command":
        return "\n".join([*commands, *([f"# the gateway on {dep.spec.host}:{dep.spec.port}", gateway] if gateway else [])])
    background = dep.spec.gateway  # the gateway runs last, in the foreground
    lines = [
        "#!/usr/bin/env bash",
        f"# llmnest deployment {dep.name}: {dep.spec.served_model_name} on {dep.spec.engine} ({dep.spec.runtime})",
        "set -euo pipefail",
        *[c if c.startswith("#") or dep.spec.runtime == "docker" else (c + " &" if background else f"exec {c}")
          for c in commands],
    ]
    if gateway:
        lines.append(f"exec {gateway}")
    return "\n".join(lines)
