"""Replica choice, health, retries before the first byte, a replica killed mid-stream, a client leaving."""

from __future__ import annotations

import json
import time

import httpx

from llmnest.gateway import keys
from llmnest.gateway.router import Router, prompt_prefix
from llmnest.gateway.upstreams import Upstream
from tests.conftest import free_port
from tests.unit.gateway.conftest import start_replica
from tests.unit.gateway.test_gateway_proxy import chat, post


def _router(n: int = 3) -> Router:
    router = Router(slack=2)
    router.update([Upstream("m", f"r{i}", f"http://h{i}/v1") for i in range(n)])
    return router


def test_least_outstanding_without_prefix() -> None:
    router = _router()
    reps = router.replicas["m"]
    reps[0].outstanding, reps[1].outstanding, reps[2].outstanding = 3, 1, 2
    assert router.pick("m").id == "r1"
    reps[1].healthy = False
    assert router.pick("m").id == "r2"
    assert router.pick("m", exclude=frozenset({"r2"})).id == "r0"
    assert router.pick("m", exclude=frozenset({"r0", "r2"})).id == "r1"  # none healthy left: try the others
    assert router.pick("m", exclude=frozenset({"r0", "r1", "r2"})) is None and router.pick("other") is None


def test_prefix_affinity_until_the_preferred_replica_is_clearly_busier() -> None:
    router = _router()
    prefixes = [f"system prompt {i} " * 20 for i in range(30)]
    chosen = {p: router.pick("m", p).id for p in prefixes}
    assert len(set(chosen.values())) == 3  # different prefixes spread over the replicas
    assert all(router.pick("m", p + " and more").id == chosen[p] for p in prefixes[:5] if len(p) >= 256)
    p = prefixes[0]
    preferred = next(r for r in router.replicas["m"] if r.id == chosen[p])
    preferred.outstanding = 2  # within the slack of the idle replicas: still preferred
    assert router.pick("m", p).id == preferred.id
    preferred.outstanding = 3  # clearly busier: the least loaded wins
    assert router.pick("m", p).id != preferred.id


def test_update_keeps_state_of_replicas_that_stay() -> None:
    router = _router(2)
    router.replicas["m"][0].outstanding = 5
    router.update([Upstream("m", "r0", "http://h0/v1"), Upstream("m", "r9", "http://h9/v1")])
    assert [(r.id, r.outstanding) for r in router.replicas["m"]] == [("r0", 5), ("r9", 0)]


def test_a_replica_that_is_not_ready_is_never_picked() -> None:
    router = Router()
    router.update([Upstream("m", "up", "http://h0/v1"), Upstream("m", "starting", "http://h1/v1", ready=False)])
    assert {router.pick("m", f"prefix {i}").id for i in range(20)} == {"up"}
    assert router.pick("m", exclude=frozenset({"up"})) is None and router.models() == ["m"]


def test_a_model_whose_replicas_restart_gets_503_then_is_served_once_ready(sqlite_db, gateway, replicas) -> None:
    """Known but not ready: 503 with Retry-After (not 404); ready again: served at once, not after the next
    health round (an hour away here)."""
    _, key = keys.create(sqlite_db, "k")
    restarting = Upstream("m1", "a", replicas["a"].upstream().base_url, replicas["a"].upstream().internal_key,
                          ready=False)
    gw = gateway([restarting], health_interval=3600)
    waiting = post(gw.url, key, chat("m1", "hello"))
    assert waiting.status_code == 503 and waiting.headers["Retry-After"] == "2"
    assert "no replica is ready" in waiting.json()["error"]["message"]
    gw.gateway.provider._upstreams = [replicas["a"].upstream()]  # its supervisor now says it answers
    assert post(gw.url, key, chat("m1", "hello")).status_code == 200
    gw.gateway.provider._upstreams = [replicas["a"].upstream(), Upstream("m2", "b", "http://127.0.0.1:9/v1")]
    # a model deployed since the last round is found too (its replica is down: 503, not 404)
    assert post(gw.url, key, chat("m2", "hello")).status_code == 503


def test_prompt_prefix_of_chat_and_completions() -> None:
    assert prompt_prefix({"messages": [{"role": "system", "content": "abc"}, {"role": "user", "content": [
        {"type": "text", "text": "def"}]}]}) == "abcdef"
    assert prompt_prefix({"prompt": "x" * 1000}, 10) == "x" * 10
    assert prompt_prefix({"prompt": None}) == ""


def test_connection_refused_is_retried_on_another_replica_and_taken_out(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k")
    dead = Upstream("m1", "dead", f"http://127.0.0.1:{free_port()}/v1", "x")
    gw = gateway([dead, replicas["a"].upstream()], health_interval=3600)
    gw.gateway.router.replicas["m1"][0].healthy = True  # as if it died after the last health check
    gw.gateway.router.replicas["m1"][0].outstanding = -100  # and the router's first choice
    ok = post(gw.url, key, chat("m1", "hello"))
    assert ok.status_code == 200 and "-a-" in ok.json()["id"]
    assert not gw.gateway.router.replicas["m1"][0].healthy
    assert "llmnest_replica_up{model=\"m1\",replica=\"dead\"} 0.0" in httpx.get(gw.url + "/metrics").text
    assert [r["replica"] for r in sqlite_db.query("SELECT replica FROM usage")] == ["a"]


def test_a_replica_answering_503_is_skipped_for_another(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k")
    sick = start_replica("m1", "sick", "internal-secret", "--fail-status", "503")
    try:
        gw = gateway([sick.upstream(), replicas["a"].upstream()], health_interval=3600)
        gw.gateway.router.replicas["m1"][1].outstanding = 100  # the router's choice is the sick one
        for stream_it in (False, True):
            ok = post(gw.url, key, chat("m1", "hello", stream=stream_it))
            assert ok.status_code == 200, ok.text
        assert gw.gateway.router.replicas["m1"][0].healthy  # answering 503 is busy, not dead
        assert [r["replica"] for r in sqlite_db.query("SELECT replica FROM usage")] == ["a", "a"]
        sick.proc.kill()  # the only other replica is now gone too
        sick.proc.wait()
        replicas_a = gw.gateway.router.replicas["m1"][1]
        replicas_a.healthy = False  # marked down, but alive: with no healthy replica left it is tried anyway
        assert post(gw.url, key, chat("m1", "x")).status_code == 200
    finally:
        sick.proc.kill()


def test_health_checks_take_a_dead_replica_out_and_bring_it_back(sqlite_db, gateway) -> None:
    _, key = keys.create(sqlite_db, "k")
    one = start_replica("mh", "one")
    gw = gateway([one.upstream()], health_interval=0.2)
    try:
        assert gw.gateway.router.replicas["mh"][0].healthy
        one.proc.kill()
        one.proc.wait()
        _wait(lambda: not gw.gateway.router.replicas["mh"][0].healthy)
        assert post(gw.url, key, chat("mh", "hi")).status_code == 503
        back = start_replica_on(one)
        _wait(lambda: gw.gateway.router.replicas["mh"][0].healthy)
        assert post(gw.url, key, chat("mh", "hi")).status_code == 200
        back.proc.kill()
    finally:
        one.proc.kill()


def start_replica_on(old):
    """The same replica restarted on its port (as the supervisor restarts an engine)."""
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.unit.gateway.conftest import FakeReplica

    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_upstream", "--port", str(old.port),
                             "--model", old.model, "--api-key", old.key, "--replica", old.replica], cwd=REPO)
    return FakeReplica(old.model, old.replica, old.port, old.key, proc)


def _wait(cond, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_kill_of_a_replica_mid_stream_ends_with_a_clear_error_and_later_requests_succeed(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k")
    victim = start_replica("m1", "victim")
    try:
        gw = gateway([victim.upstream(), replicas["a"].upstream()], health_interval=3600)
        gw.gateway.router.replicas["m1"][1].outstanding = 100  # the first request goes to the victim
        events: list[str] = []
        started = time.monotonic()
        with httpx.stream("POST", gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json=chat("m1", "a b c", 200, stream=True, fake_delay=0.05), timeout=30) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    events.append(line)
                    if len(events) == 3:
                        victim.proc.kill()
        assert time.monotonic() - started < 20
        last = json.loads(events[-1][6:])
        assert last["error"]["code"] == "upstream_failed" and "[DONE]" not in events[-1]
        gw.gateway.router.replicas["m1"][1].outstanding = 0
        for _ in range(4):
            assert post(gw.url, key, chat("m1", "after")).status_code == 200
        rows = sqlite_db.query("SELECT replica, status, prompt_tokens, completion_tokens FROM usage ORDER BY id")
        assert rows[0]["replica"] == "victim" and rows[0]["status"] == 502 and rows[0]["prompt_tokens"] == 3
        assert rows[0]["completion_tokens"] >= 3
        assert [r["replica"] for r in rows[1:]] == ["a"] * 4
    finally:
        victim.proc.kill()


def test_client_disconnect_cancels_upstream_and_records_usage_so_far(sqlite_db, gateway) -> None:
    _, key = keys.create(sqlite_db, "k")
    one = start_replica("md", "one")
    try:
        gw = gateway([one.upstream()])
        with httpx.stream("POST", gw.url + "/v1/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": "md", "prompt": "w w w w", "max_tokens": 500, "stream": True,
                                "fake_delay": 0.05}, timeout=30) as resp:
            seen = 0
            for line in resp.iter_lines():
                seen += line.startswith("data: ")
                if seen == 5:
                    break
        _wait(lambda: one.stats()["cancelled"] == 1 and one.stats()["in_flight"] == 0)
        _wait(lambda: sqlite_db.query("SELECT COUNT(*) AS n FROM usage")[0]["n"] == 1)
        row = sqlite_db.query("SELECT * FROM usage")[0]
        served = one.stats()["completion_tokens"]
        assert row["status"] == 499 and row["prompt_tokens"] == 4 and 5 <= row["completion_tokens"] <= served < 500
        assert gw.gateway.router.replicas["md"][0].outstanding == 0
    finally:
        one.proc.kill()


def test_a_slow_health_check_takes_a_replica_out_only_the_second_time(sqlite_db, monkeypatch) -> None:
    import asyncio
    import socket

    from llmnest.gateway import routing as app_module
    from llmnest.gateway.app import Gateway
    from llmnest.gateway.upstreams import StaticProvider

    monkeypatch.setattr(app_module, "HEALTH_TIMEOUT_S", 0.2)
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        gw = Gateway(sqlite_db, StaticProvider([Upstream("m", "slow", f"http://127.0.0.1:{silent.getsockname()[1]}/v1")]))

        async def two_checks() -> list[bool]:
            gw.routing.client = httpx.AsyncClient()
            gw.router.update(gw.provider.upstreams())
            replica, seen = gw.router.replicas["m"][0], []
            for _ in range(2):
                await gw.routing.check(replica)
                seen.append(replica.healthy)
            await gw.routing.client.aclose()
            return seen

        assert asyncio.run(two_checks()) == [True, False]
