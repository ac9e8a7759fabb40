"""Gateway tests run each storage test against SQLite and against a real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmnest.gateway.app import Gateway
from llmnest.gateway.db import Database
from llmnest.gateway.server import ThreadedServer
from llmnest.gateway.upstreams import StaticProvider, Upstream
from tests.conftest import REPO, free_port
from tests.services import postgres_url, redis_url  # noqa: F401  (fixtures)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh, migrated database of each kind (PostgreSQL: a new database on the session's server)."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'gateway.db'}")
    else:
        import psycopg

        server = request.getfixturevalue("postgres_url")
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        database = Database(server.rsplit("/", 1)[0] + f"/{name}")
    yield database
    database.close()


@dataclass
class FakeReplica:
    """A stand-in engine replica running as its own process (so a test can kill -9 it)."""

    model: str
    replica: str
    port: int
    key: str
    proc: subprocess.Popen

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def upstream(self) -> Upstream:
        return Upstream(self.model, self.replica, self.base_url, self.key)

    def stats(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()


def start_replica(model: str, replica: str, key: str = "internal-secret", *extra: str) -> FakeReplica:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_upstream", "--port", str(port),
                             "--model", model, "--api-key", key, "--replica", replica, *extra], cwd=REPO)
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return FakeReplica(model, replica, port, key, proc)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the fake upstream did not start")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def replicas() -> Iterator[dict[str, FakeReplica]]:
    """Two replicas of model m1 and one of m2, shared by a module's tests."""
    started = {name: start_replica(model, name) for name, model in (("a", "m1"), ("b", "m1"), ("c", "m2"))}
    yield started
    for r in started.values():
        r.proc.kill()
        r.proc.wait()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'gateway.db'}")
    yield database
    database.close()


@pytest.fixture
def gateway(sqlite_db: Database):
    """Start a gateway over given upstreams; yields a function (upstreams, **options) -> running server."""
    running: list[ThreadedServer] = []

    def start(upstreams: list[Upstream], **options) -> ThreadedServer:
        gw = Gateway(sqlite_db, StaticProvider(upstreams), **options)
        server = ThreadedServer(gw).__enter__()
        server.gateway = gw  # type: ignore[attr-defined]
        running.append(server)
        return server

    yield start
    for server in running:
        server.__exit__()
