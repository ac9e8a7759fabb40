"""Per-key limits: 429 with an OpenAI-style body naming the limit and Retry-After; shared over Redis."""

from __future__ import annotations

import threading

import httpx
import pytest

from llmnest.errors import BadInput
from llmnest.gateway import keys
from llmnest.gateway.limiter import Limiter
from tests.unit.gateway.test_gateway_proxy import assert_openai_error, chat, post


def _limited(resp: httpx.Response, limit: str) -> None:
    err = assert_openai_error(resp, 429, limit)
    assert int(resp.headers["Retry-After"]) >= 1
    assert err["type"] == "rate_limit_error"


def test_requests_per_minute(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k", rpm=2)
    _, other = keys.create(sqlite_db, "other")
    gw = gateway([replicas["a"].upstream()])
    assert [post(gw.url, key, chat("m1", "x")).status_code for _ in range(2)] == [200, 200]
    resp = post(gw.url, key, chat("m1", "x"))
    _limited(resp, "rpm")
    assert "requests per minute limit of 2" in resp.json()["error"]["message"]
    assert int(resp.headers["Retry-After"]) <= 60
    assert post(gw.url, other, chat("m1", "x")).status_code == 200  # everyone else is served
    assert 'llmnest_limit_rejections_total{key_name="k",limit="rpm"} 1.0' in httpx.get(gw.url + "/metrics").text


def test_tokens_per_minute_counts_the_engines_usage(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k", tpm=10)
    gw = gateway([replicas["a"].upstream()])
    assert post(gw.url, key, chat("m1", "one two three", 8)).status_code == 200  # 3 + 8 = 11 tokens
    _limited(post(gw.url, key, chat("m1", "x")), "tpm")


def test_max_concurrency(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k", max_concurrency=1)
    gw = gateway([replicas["a"].upstream()])
    slow = threading.Thread(target=post, args=(gw.url, key, chat("m1", "x", 20, fake_delay=0.1)))
    slow.start()
    try:
        for _ in range(100):  # until the slow request holds the slot
            if gw.gateway.router.replicas["m1"][0].outstanding:
                break
            threading.Event().wait(0.02)
        _limited(post(gw.url, key, chat("m1", "x")), "max_concurrency")
    finally:
        slow.join()
    assert post(gw.url, key, chat("m1", "x")).status_code == 200  # the slot came back


def test_token_budget_per_day(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k", token_budget=20, budget_period="day")
    gw = gateway([replicas["a"].upstream()])
    assert post(gw.url, key, chat("m1", "a b c d e f g h i j", 12)).status_code == 200  # 22 tokens
    resp = post(gw.url, key, chat("m1", "x"))
    _limited(resp, "token_budget")
    assert int(resp.headers["Retry-After"]) <= 86400 and "per day" in resp.json()["error"]["message"]


def test_two_gateways_share_limits_through_redis(sqlite_db, gateway, replicas, redis_url) -> None:
    _, key = keys.create(sqlite_db, "shared", rpm=3)
    ups = [replicas["a"].upstream()]
    first = gateway(ups, limiter=Limiter(redis_url))
    second = gateway(ups, limiter=Limiter(redis_url))
    assert [post(gw.url, key, chat("m1", "x")).status_code for gw in (first, second, first)] == [200] * 3
    _limited(post(second.url, key, chat("m1", "x")), "rpm")


def test_two_gateways_share_keys_and_usage_through_postgresql(postgres_url, replicas) -> None:
    import time
    import uuid

    import psycopg

    from llmnest.gateway import usage
    from llmnest.gateway.app import Gateway
    from llmnest.gateway.db import Database
    from llmnest.gateway.server import ThreadedServer
    from llmnest.gateway.upstreams import StaticProvider

    name = f"shared_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    admin, one, two = Database(url), Database(url), Database(url)
    _, key = keys.create(admin, "team")
    provider = StaticProvider([replicas["a"].upstream()])
    with ThreadedServer(Gateway(one, provider)) as g1, ThreadedServer(Gateway(two, provider)) as g2:
        for gw in (g1, g2, g2):
            assert post(gw.url, key, chat("m1", "a b", 3)).status_code == 200
        (row,) = usage.summarize(admin, "key")
        assert (row["key_name"], row["requests"], row["prompt_tokens"], row["completion_tokens"]) == ("team", 3, 6, 9)
        keys.revoke(admin, "team")
        time.sleep(2.1)  # the gateways cache a key for 2 s
        for gw in (g1, g2):
            assert_openai_error(post(gw.url, key, chat("m1", "x")), 401, "revoked_api_key")
    for db in (admin, one, two):
        db.close()


def test_unknown_limit_storage_is_bad_input() -> None:
    with pytest.raises(BadInput, match="memory:// or redis://"):
        Limiter("foo://x")
