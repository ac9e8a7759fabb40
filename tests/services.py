"""Real PostgreSQL and Redis servers for tests, started by the test suite itself (Debian packages
`postgresql` and `redis-server`; `make test` installs them)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail("PostgreSQL is not installed; `make test` installs it (apt-get install postgresql)")
    return found[-1]


def _as_postgres(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway PostgreSQL server (initdb + pg_ctl in a temp folder); yields its URL."""
    data = Path(tmp_path_factory.mktemp("pg")) / "data"
    data.parent.chmod(0o755)
    data.mkdir(mode=0o700)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        for parent in data.parents:  # postgres must reach the folder
            if str(parent).startswith("/tmp/"):
                parent.chmod(parent.stat().st_mode | 0o711)
    subprocess.run(_as_postgres(_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "llmnest"),
                   check=True, capture_output=True)
    port = free_port()
    subprocess.run(_as_postgres(_pg_bin("pg_ctl"), "-D", str(data), "-o",
                                f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
                                "-l", str(data / "log"), "-w", "start"), check=True, capture_output=True)
    try:
        yield f"postgresql://llmnest@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres(_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop"), capture_output=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A throwaway Redis server; yields its URL."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed; `make test` installs it (apt-get install redis-server)")
    port = free_port()
    subprocess.run(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--daemonize", "yes"], check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
        if time.monotonic() > deadline:
            pytest.fail("redis-server did not start")
        time.sleep(0.1)
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
