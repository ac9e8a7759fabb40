"""Gateway tests run each storage test against SQLite and against a real PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmnest.gateway.db import Database
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
