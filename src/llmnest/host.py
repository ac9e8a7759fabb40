"""Facts about this machine that shape a deployment: GPUs, docker, addresses, free ports."""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from functools import cache

from .errors import BadInput


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int


@dataclass(frozen=True)
class HostFacts:
    gpus: tuple[Gpu, ...]
    has_docker_engine: bool

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"


def _nvidia_gpus() -> tuple[Gpu, ...]:
    if not shutil.which("nvidia-smi"):
        return ()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in out.strip().splitlines():
        name, _, mem = line.rpartition(",")
        if name and mem.strip().isdigit():
            gpus.append(Gpu(name.strip(), int(mem.strip())))
    return tuple(gpus)


def _docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@cache
def host_facts() -> HostFacts:
    """GPUs from nvidia-smi and whether a docker engine answers (cached for the process)."""
    return HostFacts(gpus=_nvidia_gpus(), has_docker_engine=_docker_engine())


def check_host(host: str) -> None:
    """The address can be listened on here (an address of this machine, 0.0.0.0 or ::), else bad input."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        infos = []
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            try:
                sock.bind((address[0], 0))
                return
            except OSError:
                continue
    raise BadInput(f"--host {host} is not an address of this machine; use 127.0.0.1 (this machine only) "
                   "or 0.0.0.0 (every network interface)")


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (checked by binding it, then letting go)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def lan_address() -> str | None:
    """This machine's first non-loopback IPv4 address from its host name, or None."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return None
    addrs = [info[4][0] for info in infos if not info[4][0].startswith("127.")]
    return addrs[0] if addrs else None


def host_memory_bytes(field: str = "MemTotal") -> int | None:
    """Total RAM from /proc/meminfo (or another of its fields, e.g. MemAvailable), or None where it cannot be read."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
