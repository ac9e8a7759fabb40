"""Keys and usage on SQLite and on a real PostgreSQL server: migrations, hashing, limits, summaries."""

from __future__ import annotations

import os
import time

import pytest

from llmnest.errors import BadInput, Conflict, NotFound
from llmnest.gateway import keys, usage
from llmnest.gateway.db import MIGRATIONS, Database


def test_migrations_are_applied_once_and_recorded(db: Database) -> None:
    assert db.schema_version() == len(MIGRATIONS)
    db.migrate()  # a second gateway starting against the same database changes nothing
    assert db.schema_version() == len(MIGRATIONS)
    assert db.query("SELECT COUNT(*) AS n FROM schema_version")[0]["n"] == len(MIGRATIONS)


def test_sqlite_file_is_private(tmp_path) -> None:
    Database(f"sqlite:///{tmp_path / 'g.db'}").close()
    assert os.stat(tmp_path / "g.db").st_mode & 0o777 == 0o600


def test_unsupported_url_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unsupported database URL"):
        Database("mysql://x")


def test_create_stores_only_a_hash_and_authenticates(db: Database) -> None:
    key, secret = keys.create(db, "alice", models=["m1"], rpm=10, tpm=1000, max_concurrency=2,
                              token_budget=5000, budget_period="day")
    assert secret.startswith("sk-") and len(secret) > 40
    stored = db.query("SELECT * FROM api_keys")[0]
    assert secret not in str(stored.values()) and stored["key_hash"] == keys.hash_secret(secret)
    found = keys.authenticate(db, secret)
    assert found is not None and found.name == "alice" and found.models == ["m1"] and found.rpm == 10
    assert found.token_budget == 5000 and found.budget_period == "day"
    assert keys.authenticate(db, secret + "x") is None
    assert found.allows("m1") and not found.allows("m2")


def test_name_in_use_is_conflict_until_revoked(db: Database) -> None:
    _, first = keys.create(db, "bob")
    with pytest.raises(Conflict):
        keys.create(db, "bob")
    revoked = keys.revoke(db, "bob")
    assert revoked.problem() == "revoked"
    assert keys.authenticate(db, first).problem() == "revoked"  # type: ignore[union-attr]
    _, second = keys.create(db, "bob")  # rotation: the name is free again, the old secret stays dead
    assert keys.authenticate(db, first) is None and keys.authenticate(db, second).problem() is None  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [dict(rpm=0), dict(tpm=-1), dict(max_concurrency=1.5), dict(token_budget=10),
                                 dict(budget_period="week", token_budget=1), dict(models=[""])])
def test_bad_limits_are_bad_input(db: Database, bad: dict) -> None:
    with pytest.raises(BadInput):
        keys.create(db, "carol", **bad)
    assert keys.list_keys(db) == []


def test_update_and_clear_limits(db: Database) -> None:
    keys.create(db, "dave", rpm=5)
    assert keys.update(db, "dave", tpm=100).tpm == 100
    updated = keys.update(db, "dave", clear=("rpm",), models=["a", "b"])
    assert updated.rpm is None and updated.tpm == 100 and keys.get(db, "dave").models == ["a", "b"]
    with pytest.raises(BadInput):
        keys.update(db, "dave", rpm=0)
    with pytest.raises(NotFound):
        keys.update(db, "nobody", rpm=1)
    with pytest.raises(NotFound):
        keys.revoke(db, "nobody")


def test_expiry(db: Database) -> None:
    with pytest.raises(BadInput, match="past"):
        keys.parse_expiry("2001-01-01")
    with pytest.raises(BadInput, match="not a date"):
        keys.parse_expiry("tomorrow")
    assert keys.parse_expiry("2999-01-01T00:00:00+00:00") == 32472144000.0
    key, _ = keys.create(db, "eve", expires_at=time.time() + 3600)
    assert key.problem() is None and key.problem(now=time.time() + 7200) == "expired"


def _rows(db: Database) -> None:
    day = 86400
    base = 1_700_000_000 - 1_700_000_000 % day  # midnight UTC
    for ts, key, model, p, c, status in [
        (base + 10, "a", "m1", 10, 5, 200), (base + 20, "a", "m2", 1, 2, 200),
        (base + 3700, "b", "m1", 100, 50, 200), (base + day + 5, "a", "m1", 7, 0, 429),
    ]:
        usage.record(db, usage.Usage(key, model, "r0", "chat", status, p, c, 0.5, 0.1, ts=ts))


def test_usage_summaries_by_key_model_day_hour(db: Database) -> None:
    _rows(db)
    by_key = {r["key_name"]: r for r in usage.summarize(db, "key")}
    assert by_key["a"]["requests"] == 3 and by_key["a"]["prompt_tokens"] == 18 and by_key["a"]["errors"] == 1
    assert by_key["b"]["completion_tokens"] == 50 and by_key["b"]["model"] == "*"
    by_model = {r["model"]: r for r in usage.summarize(db, "model")}
    assert by_model["m1"]["prompt_tokens"] == 117 and by_model["m2"]["requests"] == 1
    days = usage.summarize(db, "day")
    assert [(r["period"], r["key_name"], r["model"], r["requests"]) for r in days] == [
        ("2023-11-14", "a", "m1", 1), ("2023-11-14", "a", "m2", 1), ("2023-11-14", "b", "m1", 1),
        ("2023-11-15", "a", "m1", 1)]
    hours = usage.summarize(db, "hour")
    assert [r["period"] for r in hours] == ["2023-11-14T00:00Z"] * 2 + ["2023-11-14T01:00Z", "2023-11-15T00:00Z"]
    assert usage.summarize(db, "key", since=1_700_006_400)[0]["requests"] == 1
    csv_text = usage.to_csv(by_key.values())  # type: ignore[arg-type]
    assert csv_text.splitlines()[0].startswith("period,key_name,model,requests")
    assert usage.tokens_since(db, "a", 0) == 25 and usage.totals_by_key(db)["b"]["requests"] == 1
    with pytest.raises(BadInput):
        usage.summarize(db, "week")


def test_since_and_periods() -> None:
    assert abs(usage.parse_since("7d") - (time.time() - 7 * 86400)) < 5
    assert usage.parse_since("2024-01-01") == 1704067200.0
    with pytest.raises(BadInput):
        usage.parse_since("last week")
    now = 1_700_050_000.0  # 2023-11-15 12:06 UTC
    assert usage.period_start("day", now) == 1_700_006_400.0
    assert usage.period_end("day", now) == 1_700_092_800.0
    assert usage.period_start("month", now) == 1_698_796_800.0
    assert usage.period_end("month", now) == 1_701_388_800.0
    assert usage.period_end("month", 1_702_000_000.0) == 1_704_067_200.0  # December rolls into January


def test_the_usage_writer_stores_rows_that_wait_together_and_tells_every_waiter_of_a_failure(
        db: Database, monkeypatch) -> None:
    import asyncio

    batches: list[int] = []
    real = usage.record
    monkeypatch.setattr(usage, "record", lambda database, *rows: batches.append(len(rows)) or real(database, *rows))
    writer = usage.Writer(db)

    async def finish(n: int) -> list:
        return await asyncio.gather(*(writer.write(usage.Usage("k", "m", "r0", "chat", 200, i, 1)) for i in range(n)),
                                    return_exceptions=True)

    assert asyncio.run(finish(20)) == [None] * 20
    assert sum(batches) == 20 and len(batches) <= 2  # the first row's write, then all that came meanwhile
    assert sorted(r["prompt_tokens"] for r in db.query("SELECT prompt_tokens FROM usage")) == list(range(20))

    def away(database: Database, *rows: usage.Usage) -> None:
        raise OSError("the database is away")

    monkeypatch.setattr(usage, "record", away)
    failed = asyncio.run(finish(3))
    assert len(failed) == 3 and all(isinstance(e, OSError) for e in failed)
