"""The console's tests share one login token against a fresh LLMNEST_HOME (SQLite gateway database)."""

from __future__ import annotations

import pytest

from llmnest.console import auth


@pytest.fixture
def token(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LLMNEST_GATEWAY_DB", raising=False)
    return auth.load_or_create_token()
