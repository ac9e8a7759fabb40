"""The gateway in front of stand-in replicas: every error code, /v1/models, and exact usage."""

from __future__ import annotations

import json
import time

import httpx

from llmnest.gateway import keys, usage
from llmnest.gateway.upstreams import Upstream
from tests.conftest import free_port


def post(url: str, key: str | None, body: dict | bytes, path: str = "/v1/chat/completions", **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, bytes):
        return httpx.post(url + path, headers={**headers, "Content-Type": "application/json"}, content=body,
                          timeout=30, **kw)
    return httpx.post(url + path, headers=headers, json=body, timeout=30, **kw)


def stream(url: str, key: str, body: dict, path: str = "/v1/chat/completions") -> list[dict]:
    """The parsed data events of a streamed answer (ending with the string '[DONE]')."""
    events: list = []
    with httpx.stream("POST", url + path, headers={"Authorization": f"Bearer {key}"},
                      json={**body, "stream": True}, timeout=30) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append("[DONE]" if line == "data: [DONE]" else json.loads(line[6:]))
    return events


def chat(model: str, prompt: str, n: int = 4, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": n, **extra}


def assert_openai_error(resp: httpx.Response, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["message"] and err["type"] and "Traceback" not in resp.text
    if code:
        assert err["code"] == code
    return err


def test_errors_are_openai_style_and_the_gateway_keeps_serving(sqlite_db, gateway, replicas) -> None:
    _, alice = keys.create(sqlite_db, "alice", models=["m1"])
    _, old = keys.create(sqlite_db, "old")
    keys.revoke(sqlite_db, "old")
    _, soon = keys.create(sqlite_db, "soon", expires_at=time.time() + 3600)
    sqlite_db.execute("UPDATE api_keys SET expires_at = ? WHERE name = 'soon'", (time.time() - 1,))
    gw = gateway([replicas["a"].upstream(), replicas["c"].upstream()], max_body=10_000)
    url = gw.url
    assert_openai_error(post(url, None, chat("m1", "hi")), 401, "missing_api_key")
    assert_openai_error(post(url, "sk-nope", chat("m1", "hi")), 401, "invalid_api_key")
    assert_openai_error(post(url, old, chat("m1", "hi")), 401, "revoked_api_key")
    assert_openai_error(post(url, soon, chat("m1", "hi")), 401, "expired_api_key")
    assert_openai_error(post(url, alice, chat("m2", "hi")), 403, "model_not_allowed")
    _, bob = keys.create(sqlite_db, "bob")
    assert_openai_error(post(url, bob, chat("m9", "hi")), 404, "model_not_found")
    assert_openai_error(post(url, alice, b'{"model": "m1", "messages": ['), 400, "invalid_json")
    assert_openai_error(post(url, alice, b'[1, 2]'), 400, "invalid_json")
    assert_openai_error(post(url, alice, {"messages": []}), 400, "missing_model")
    assert_openai_error(post(url, alice, chat("m1", "x " * 20_000)), 413, "body_too_large")
    assert_openai_error(httpx.get(url + "/v1/nothing", timeout=5), 404)
    ok = post(url, alice, chat("m1", "still here"))
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "w0 w1 w2 w3"
    # the engine's own answer to a bad request passes through unchanged
    bad = post(url, alice, chat("m1", "x", fake_status=400))
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "fake failure"


def test_all_replicas_down_is_503(sqlite_db, gateway) -> None:
    _, key = keys.create(sqlite_db, "k")
    dead = [Upstream("m1", f"dead{i}", f"http://127.0.0.1:{free_port()}/v1", "x") for i in range(2)]
    gw = gateway(dead)
    assert_openai_error(post(gw.url, key, chat("m1", "hi")), 503, "no_replica")
    assert_openai_error(post(gw.url, key, chat("m1", "hi", stream=True)), 503, "no_replica")
    rows = usage.summarize(sqlite_db, "key")
    assert rows[0]["requests"] == 2 and rows[0]["errors"] == 2


def test_engine_refusing_the_internal_key_is_502(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k")
    wrong = Upstream("m1", "a", replicas["a"].base_url, "not-the-engine-key")
    gw = gateway([wrong])
    assert_openai_error(post(gw.url, key, chat("m1", "hi")), 502, "engine_auth")


def test_models_lists_what_the_key_may_use(sqlite_db, gateway, replicas) -> None:
    _, only_m1 = keys.create(sqlite_db, "one", models=["m1", "m9"])
    _, every = keys.create(sqlite_db, "all")
    gw = gateway([r.upstream() for r in replicas.values()])
    ids = lambda k: [m["id"] for m in httpx.get(gw.url + "/v1/models", headers={"Authorization": f"Bearer {k}"}).json()["data"]]  # noqa: E731
    assert ids(only_m1) == ["m1"] and ids(every) == ["m1", "m2"]
    assert_openai_error(httpx.get(gw.url + "/v1/models"), 401)
    assert httpx.get(gw.url + "/health").json() == {"status": "ok"}


def test_stream_usage_is_asked_for_and_stripped_unless_the_client_wanted_it(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k")
    gw = gateway([replicas["c"].upstream()])
    plain = stream(gw.url, key, chat("m2", "one two three", 3))
    assert plain[-1] == "[DONE]" and len(plain) == 4
    assert all("usage" not in e for e in plain[:-1]) and "".join(e["choices"][0]["delta"]["content"] for e in plain[:-1]) == "w0 w1 w2"
    wanted = stream(gw.url, key, chat("m2", "one two three", 3, stream_options={"include_usage": True}))
    assert len(wanted) == 5 and wanted[-2]["choices"] == [] and wanted[-2]["usage"]["completion_tokens"] == 3
    assert all("usage" not in e for e in wanted[:3])
    per_chunk = stream(gw.url, key, chat("m2", "one two three", 3,
                                         stream_options={"include_usage": True, "continuous_usage_stats": True}))
    assert [e["usage"]["completion_tokens"] for e in per_chunk[:3]] == [1, 2, 3]
    rows = sqlite_db.query("SELECT prompt_tokens, completion_tokens, status, ttft_s FROM usage")
    assert [(r["prompt_tokens"], r["completion_tokens"], r["status"]) for r in rows] == [(3, 3, 200)] * 3
    assert all(r["ttft_s"] is not None and r["ttft_s"] >= 0 for r in rows)


def test_usage_is_exact_over_a_mixed_run(sqlite_db, gateway, replicas) -> None:
    """Streaming and not, chat and completions, two keys, two replicas: the usage rows sum to the
    usage the clients were sent and to what the replicas themselves counted."""
    _, k1 = keys.create(sqlite_db, "team-a")
    _, k2 = keys.create(sqlite_db, "team-b")
    before = {n: replicas[n].stats() for n in ("a", "b")}
    gw = gateway([replicas["a"].upstream(), replicas["b"].upstream()])
    received: dict[str, list[int]] = {"team-a": [0, 0], "team-b": [0, 0]}
    for i in range(24):
        name, key = ("team-a", k1) if i % 2 else ("team-b", k2)
        words = " ".join(f"p{i}" for _ in range(1 + i % 5))
        n = 1 + i % 7
        path = "/v1/chat/completions" if i % 4 < 2 else "/v1/completions"
        body = chat("m1", words, n) if "chat" in path else {"model": "m1", "prompt": words, "max_tokens": n}
        if i % 3 == 0:
            got = post(gw.url, key, body, path).json()["usage"]
        else:
            events = stream(gw.url, key, {**body, "stream_options": {"include_usage": True}}, path)
            got = events[-2]["usage"]
        received[name][0] += got["prompt_tokens"]
        received[name][1] += got["completion_tokens"]
    rows = {r["key_name"]: r for r in usage.summarize(sqlite_db, "key")}
    for name, (p, c) in received.items():
        assert (rows[name]["prompt_tokens"], rows[name]["completion_tokens"], rows[name]["requests"]) == (p, c, 12)
    after = {n: replicas[n].stats() for n in ("a", "b")}
    engine = [sum(after[n][f] - before[n][f] for n in after) for f in ("prompt_tokens", "completion_tokens")]
    assert engine == [sum(v[0] for v in received.values()), sum(v[1] for v in received.values())]
    served = {r["replica"] for r in sqlite_db.query("SELECT DISTINCT replica FROM usage")}
    assert served == {"a", "b"}


def test_concurrent_requests_with_one_key_share_one_database_lookup(sqlite_db, gateway, replicas, monkeypatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, key = keys.create(sqlite_db, "k")
    calls: list[str] = []
    real = keys.authenticate

    def slow_lookup(db, secret):
        calls.append(secret)
        time.sleep(0.3)
        return real(db, secret)

    monkeypatch.setattr(keys, "authenticate", slow_lookup)
    gw = gateway([replicas["a"].upstream()])
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: post(gw.url, key, chat("m1", "x")).status_code, range(8)))
    assert codes == [200] * 8 and len(calls) == 1


def test_a_key_in_use_is_reread_in_the_background_and_its_revocation_still_applies(
        sqlite_db, gateway, replicas, monkeypatch) -> None:
    from llmnest.gateway.admission import KEY_CACHE_S

    _, key = keys.create(sqlite_db, "k")
    calls: list[str] = []
    real = keys.authenticate
    monkeypatch.setattr(keys, "authenticate", lambda db, secret: calls.append(secret) or real(db, secret))
    gw = gateway([replicas["a"].upstream()])
    until = time.monotonic() + 2 * KEY_CACHE_S
    while time.monotonic() < until:  # requests for longer than a cached key lives: none waits for a lookup
        assert post(gw.url, key, chat("m1", "x")).status_code == 200
        time.sleep(0.1)
    keys.revoke(sqlite_db, "k")
    time.sleep(KEY_CACHE_S + 0.1)
    assert_openai_error(post(gw.url, key, chat("m1", "x")), 401, "revoked_api_key")
    assert len(calls) == 1


def test_a_finished_stream_leaves_its_engine_connection_open_for_the_next_request(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "k")
    gw = gateway([replicas["a"].upstream()])
    for _ in range(3):
        assert stream(gw.url, key, chat("m1", "x"))[-1] == "[DONE]"
    deadline = time.monotonic() + 5
    while not gw.gateway.upstream.idle() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.gateway.upstream.idle() >= 1
