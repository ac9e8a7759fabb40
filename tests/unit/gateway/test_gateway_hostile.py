"""The gateway against hostile and careless clients: oversized and malformed requests, slow and
abandoned clients, parallel races on limits. Attackers connect from other loopback addresses
(127.0.0.2...) so that the per-address connection cap shows; the keyed requests come from 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmnest.gateway import keys, usage
from llmnest.gateway.http_limits import HttpLimits
from tests.unit.gateway.test_gateway_proxy import assert_openai_error, chat, post

FAST = HttpLimits(header_timeout_s=1.0, body_timeout_s=1.0, max_connections_per_client=600)
# Served "while" attacked means not held behind the attack: a held request waits at least the attack's
# timeout (SLOW's 4 s), an unheld one well under STALL_S even on a loaded 2-core machine.
SLOW = HttpLimits(header_timeout_s=4.0, body_timeout_s=4.0, max_connections_per_client=600)
STALL_S = 2.0


def _connect(port: int, source: str = "127.0.0.2") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _answer(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """What the server sent until it closed the connection (or `timeout`)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while data := sock.recv(65536):
            out += data
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def _timed_requests(url: str, key: str, seconds: float) -> list[float]:
    """Keyed chats one after another for `seconds`: each one's duration (all must be 200)."""
    took, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        resp = post(url, key, chat("m1", "still served"))
        assert resp.status_code == 200, resp.text
        took.append(time.monotonic() - start)
    return took


def _refused(url: str, reason: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f'llmnest_refused_requests_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_a_64_mib_header_is_refused_431_while_others_are_served(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k")
    gw = gateway([replicas["a"].upstream()], limits=SLOW)
    answers: list[bytes] = []

    def attack() -> None:
        sock = _connect(gw.port)
        try:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: ")
            block = b"a" * (1 << 20)
            for _ in range(64):
                sock.sendall(block)
        except OSError:  # refused and closed after the first 32 KiB
            pass
        answers.append(_answer(sock))
        sock.close()

    attacker = threading.Thread(target=attack)
    attacker.start()
    took = _timed_requests(gw.url, key, 1.5)
    attacker.join()
    assert max(took) < STALL_S, took
    assert answers[0] == b"" or answers[0].startswith(b"HTTP/1.1 431 ")  # (a reset may beat the answer)
    assert _refused(gw.url, "header_too_large") == 1


def test_too_many_headers_is_431(sqlite_db, gateway, replicas) -> None:
    gw = gateway([replicas["a"].upstream()], limits=HttpLimits(max_headers=20))
    sock = _connect(gw.port)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30)) + b"\r\n")
    answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"too_many_headers" in answer and b"x-request-id: " in answer
    sock = _connect(gw.port)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(10)) + b"\r\n")
    assert _answer(sock, 1).startswith(b"HTTP/1.1 200 ")


def test_500_half_sent_requests_time_out_with_408_while_others_are_served(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k")
    gw = gateway([replicas["a"].upstream()], limits=SLOW)
    socks = []
    for i in range(500):
        sock = _connect(gw.port)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"")
        socks.append(sock)
    took = _timed_requests(gw.url, key, 0.8)
    assert max(took) < STALL_S, took
    answers = [_answer(s, 6) for s in socks]
    for sock in socks:
        sock.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[:2]
    assert _refused(gw.url, "header_timeout") == 500  # (every one, logged in a few lines)


def test_a_slow_body_is_408(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k")
    gw = gateway([replicas["a"].upstream()], limits=FAST)
    sock = _connect(gw.port)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
                 + b"\r\nContent-Length: 100\r\n\r\n{\"model\": ")
    answer = _answer(sock, 4)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"body_timeout" in answer


def test_connections_per_address_are_capped(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k")
    gw = gateway([replicas["a"].upstream()], limits=HttpLimits(max_connections_per_client=5))
    held = [_connect(gw.port, "127.0.0.3") for _ in range(5)]
    sixth = _connect(gw.port, "127.0.0.3")
    answer = _answer(sixth, 2)
    assert answer.startswith(b"HTTP/1.1 429 ") and b"too_many_connections" in answer
    assert post(gw.url, key, chat("m1", "another address")).status_code == 200
    for sock in held:
        sock.close()
    time.sleep(0.2)
    again = _connect(gw.port, "127.0.0.3")
    again.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _answer(again, 1).startswith(b"HTTP/1.1 200 ")


def test_deeply_nested_json_is_400(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k")
    gw = gateway([replicas["a"].upstream()])
    for depth in (100_000, 5_000, 995, 980, 950):  # (the last ones parse, and may be too deep further on)
        body = b'{"model": "m1", "messages": ' + b"[" * depth + b"]" * depth + b"}"
        resp = post(gw.url, key, body)  # (below 1000 the JSON may reach the engine, which answers for it)
        assert "internal gateway error" not in resp.text and "Traceback" not in resp.text, resp.text
        if depth > 990:
            assert_openai_error(resp, 400, "invalid_json")
    assert post(gw.url, key, chat("m1", "fine")).status_code == 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(min_size=1, max_size=300))
def test_malformed_requests_never_get_a_5xx(garbage, running_gateway) -> None:
    url, port = running_gateway
    sock = _connect(port)
    try:
        sock.sendall(garbage + b"\r\n\r\n")
    except OSError:
        pass
    sock.shutdown(socket.SHUT_WR)
    answer = _answer(sock, 2)
    sock.close()
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500 or status == 200, answer[:200]
    assert httpx.get(url + "/health").status_code == 200


@pytest.fixture(scope="module")
def running_gateway(tmp_path_factory, replicas):
    """One gateway for the property test's many examples."""
    from llmnest.gateway.app import Gateway
    from llmnest.gateway.db import Database
    from llmnest.gateway.server import ThreadedServer
    from llmnest.gateway.upstreams import StaticProvider

    db = Database(f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'gateway.db'}")
    with ThreadedServer(Gateway(db, StaticProvider([replicas["a"].upstream()]), limits=FAST)) as server:
        yield server.url, server.port
    db.close()


# ---- abandoned clients and limits -----------------------------------------------------------------


def test_an_abandoned_non_streamed_request_stops_the_engine_and_is_billed_what_was_generated(
        sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k", max_concurrency=1)
    gw = gateway([replicas["b"].upstream()])
    before = replicas["b"].stats()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json=chat("m1", "a b c", 600, fake_delay=0.01), timeout=1.0)
    time.sleep(0.5)  # within a second of the client leaving
    after = replicas["b"].stats()
    assert after["cancelled"] == before["cancelled"] + 1 and after["in_flight"] == 0
    generated = after["completion_tokens"] - before["completion_tokens"]
    assert 10 < generated < 600
    (row,) = usage.summarize(sqlite_db, "key")
    assert row["errors"] == 1 and row["prompt_tokens"] == 3
    assert abs(row["completion_tokens"] - generated) <= 1  # (the engine's last chunk may not have arrived)
    assert sqlite_db.query("SELECT status FROM usage")[0]["status"] == 499
    assert post(gw.url, key, chat("m1", "the slot is free")).status_code == 200


def test_a_non_streamed_answer_is_assembled_as_the_engine_shapes_it(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k")
    gw = gateway([replicas["a"].upstream()])
    for path, field in (("/v1/chat/completions", "message"), ("/v1/completions", "text")):
        body = chat("m1", "a b", 5) if field == "message" else {"model": "m1", "prompt": "a b", "max_tokens": 5}
        got = post(gw.url, key, body, path).json()
        assert got["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
        choice = got["choices"][0]
        text = choice["message"]["content"] if field == "message" else choice["text"]
        assert text == "w0 w1 w2 w3 w4" and choice["finish_reason"] in (None, "length")


def test_twenty_parallel_requests_against_a_budget_end_at_most_one_request_over(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k", token_budget=1000, budget_period="day")
    gw = gateway([replicas["a"].upstream(), replicas["b"].upstream()])
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: post(gw.url, key, chat("m1", "x", 200, fake_delay=0.005)), range(20)))
    assert {a.status_code for a in answers} == {200, 429}
    used = usage.tokens_since(sqlite_db, "k", 0)
    assert 800 <= used <= 1000 + 201, used


def test_tokens_per_minute_hold_against_parallel_streams(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k", tpm=1000)
    gw = gateway([replicas["a"].upstream(), replicas["b"].upstream()])

    def streamed(_: int) -> int:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={**chat("m1", "x", 200, fake_delay=0.005), "stream": True}, timeout=30) as resp:
            resp.read()
            return resp.status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(streamed, range(20)))
    assert 200 in codes and 429 in codes
    assert usage.tokens_since(sqlite_db, "k", 0) <= 1000 + 201


def test_a_request_refused_for_concurrency_does_not_use_up_requests_per_minute(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k", rpm=3, max_concurrency=1)
    gw = gateway([replicas["a"].upstream()])
    slow = threading.Thread(target=post, args=(gw.url, key, chat("m1", "x", 100, fake_delay=0.05)))
    slow.start()
    time.sleep(0.3)
    for _ in range(5):  # a client retrying on 429 (while the slow one holds the slot for 5 s)
        assert_openai_error(post(gw.url, key, chat("m1", "x")), 429, "max_concurrency")
    slow.join()
    ok = post(gw.url, key, chat("m1", "x"))
    assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-requests"] == "3"
    assert ok.headers["x-ratelimit-remaining-requests"] == "1"


def test_a_reused_name_starts_a_new_budget(sqlite_db, gateway, replicas) -> None:
    _, old = keys.create(sqlite_db, "k", token_budget=20, budget_period="day")
    gw = gateway([replicas["a"].upstream()])
    assert post(gw.url, old, chat("m1", "a b c d e f g h i j", 12)).status_code == 200
    assert_openai_error(post(gw.url, old, chat("m1", "x")), 429, "token_budget")
    keys.revoke(sqlite_db, "k")
    _, new = keys.create(sqlite_db, "k", token_budget=20, budget_period="day")
    assert post(gw.url, new, chat("m1", "x", 4)).status_code == 200


# ---- the OpenAI surface ---------------------------------------------------------------------------


def test_the_engines_other_routes_pass_with_the_same_key_checks_and_usage(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k", models=["m1"])
    gw = gateway([replicas["a"].upstream(), replicas["c"].upstream()])
    assert post(gw.url, key, {"model": "m1", "prompt": "a b c"}, "/tokenize").json()["count"] == 3
    assert post(gw.url, key, {"model": "m1", "tokens": [1, 2]}, "/detokenize").json()["prompt"] == "w1 w2"
    emb = post(gw.url, key, {"model": "m1", "input": "a b"}, "/v1/embeddings")
    assert emb.status_code == 200 and emb.json()["usage"]["prompt_tokens"] == 2
    resp = post(gw.url, key, {"model": "m1", "input": "a b c d", "max_output_tokens": 5}, "/v1/responses")
    assert resp.status_code == 200 and resp.headers["x-request-id"]
    assert_openai_error(post(gw.url, key, {"model": "m2", "prompt": "x"}, "/tokenize"), 403, "model_not_allowed")
    assert_openai_error(post(gw.url, None, {"model": "m1", "prompt": "x"}, "/tokenize"), 401, "missing_api_key")
    rows = {r["endpoint"]: r for r in sqlite_db.query("SELECT * FROM usage")}
    assert (rows["embeddings"]["prompt_tokens"], rows["responses"]["prompt_tokens"],
            rows["responses"]["completion_tokens"]) == (2, 4, 5)


def test_errors_carry_a_request_id_and_never_an_engine_address(sqlite_db, gateway) -> None:
    from llmnest.gateway.upstreams import Upstream

    _, key = keys.create(sqlite_db, "k")
    gw = gateway([Upstream("m1", "gone", "http://127.0.0.1:9/v1")])
    resp = post(gw.url, key, chat("m1", "x"))
    assert_openai_error(resp, 503, "no_replica")
    assert "127.0.0.1:9" not in resp.text and resp.headers["x-request-id"]
    assert httpx.get(gw.url + "/health").headers["x-request-id"]
    assert_openai_error(post(gw.url, key, {"model": 7, "messages": []}), 404, "model_not_found")
    assert "'7'" in post(gw.url, key, {"model": 7, "messages": []}).json()["error"]["message"]
    assert _refused(gw.url, "no_replica") == 1 and _refused(gw.url, "model_not_found") == 2


# ---- key names and model lists --------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(name=st.text(min_size=1, max_size=70))
def test_a_key_name_is_taken_only_when_it_matches_whole(name) -> None:
    import re

    from llmnest.errors import BadInput
    from llmnest.gateway.keys import _validate

    valid = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", name, flags=re.ASCII) is not None
    try:
        _validate(name, {})
    except BadInput:
        assert not valid
    else:
        assert valid


def test_key_names_and_model_lists_through_the_cli(home, monkeypatch) -> None:
    from typer.testing import CliRunner

    from llmnest.cli.main import app

    monkeypatch.setenv("LLMNEST_HOME", str(home))
    monkeypatch.delenv("LLMNEST_GATEWAY_DB", raising=False)
    runner = CliRunner()

    def cli(*args: str):
        return runner.invoke(app, list(args))

    assert cli("keys", "create", "tester").exit_code == 0
    for bad in ("tester\n", "tester ", "tést", "-x", "a" * 65, "a/b"):
        done = cli("keys", "create", bad)
        assert done.exit_code == 2 and "Traceback" not in done.output, (bad, done.output)
    for models in ("a,,b", ",", "a b", "a\x01"):
        done = cli("keys", "create", "m", "--models", models)
        assert done.exit_code == 2 and "--models" in done.output, (models, done.output)
    made = cli("keys", "create", "rich", "--models", "[bold]x[/bold],y")
    assert made.exit_code == 0 and "warning: no deployment here serves [bold]x[/bold], y" in made.output
    listed = cli("keys", "ls")
    assert "[bold]x[/bold]" in listed.stdout  # shown as given, not as markup


def test_two_gateways_sharing_redis_hold_a_budget_against_parallel_requests(sqlite_db, gateway, replicas,
                                                                             redis_url) -> None:
    from llmnest.gateway.limiter import Limiter

    _, key = keys.create(sqlite_db, "shared-budget", token_budget=1000, budget_period="day")
    ups = [replicas["a"].upstream(), replicas["b"].upstream()]
    both = [gateway(ups, limiter=Limiter(redis_url)), gateway(ups, limiter=Limiter(redis_url))]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: post(both[i % 2].url, key, chat("m1", "x", 200, fake_delay=0.005)),
                                range(20)))
    assert {a.status_code for a in answers} == {200, 429}
    assert usage.tokens_since(sqlite_db, "shared-budget", 0) <= 1000 + 201
