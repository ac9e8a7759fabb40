"""The gateway `up` runs in front of the real demo vLLM: usage
equals vLLM's own token counters, streaming usage is stripped when not asked for, and every metric
the Grafana dashboard queries exists in the gateway's or vLLM's real /metrics."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest

from llmnest.gateway.dashboard import exposed_metrics, query_metrics
from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def vllm_tokens(root: str) -> tuple[float, float]:
    """vllm:prompt_tokens_total and vllm:generation_tokens_total, summed over their labels."""
    totals = {"vllm:prompt_tokens_total": 0.0, "vllm:generation_tokens_total": 0.0}
    for line in httpx.get(f"{root}/metrics", timeout=10).text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals["vllm:prompt_tokens_total"], totals["vllm:generation_tokens_total"]


def _usage_of(demo, *names: str) -> dict[str, dict]:
    rows = json.loads(demo.cli("usage", "--by", "key", "--json").stdout)
    return {r["key_name"]: r for r in rows if r["key_name"] in names}


def test_usage_through_the_gateway_equals_vllms_counters(demo) -> None:
    """Keys made with the CLI, traffic through the gateway `up` started, usage read back with the CLI."""
    k1 = json.loads(demo.cli("keys", "create", "one", "--json").stdout)["key"]
    k2 = json.loads(demo.cli("keys", "create", "two", "--json").stdout)["key"]
    gw = demo.base_url.removesuffix("/v1")
    root = f"http://127.0.0.1:{demo.replica()['port']}"  # the engine itself, for vLLM's own counters
    before = vllm_tokens(root)
    received = [0, 0]
    for i in range(6):
        key = k1 if i % 2 else k2
        chat = i % 3 != 2
        path = "/v1/chat/completions" if chat else "/v1/completions"
        body = {"model": demo.model, "max_tokens": 6 + i, "temperature": 0,
                **({"messages": [{"role": "user", "content": f"Count to {i + 3}."}]} if chat
                   else {"prompt": f"Once upon a time, {i}"})}
        headers = {"Authorization": f"Bearer {key}"}
        if i < 2:
            got = httpx.post(gw + path, headers=headers, json=body, timeout=120).json()["usage"]
        else:
            options = {"stream_options": {"include_usage": True}} if i != 5 else {}
            with httpx.stream("POST", gw + path, headers=headers, json={**body, "stream": True, **options},
                              timeout=120) as resp:
                assert resp.status_code == 200
                events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            chunks = [json.loads(e) for e in events[:-1]]
            usage_chunks = [c for c in chunks if c.get("usage")]
            if i == 5:  # not asked for: the gateway asked vLLM and stripped it again
                assert usage_chunks == [] and all("usage" not in c for c in chunks)
                continue
            assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == []
            got = usage_chunks[0]["usage"]
        received[0] += got["prompt_tokens"]
        received[1] += got["completion_tokens"]
    after = vllm_tokens(root)
    rows = _usage_of(demo, "one", "two")
    assert rows["one"]["requests"] == 3 and rows["two"]["requests"] == 3
    assert rows["one"]["errors"] == 0 and rows["two"]["errors"] == 0
    recorded = tuple(sum(r[f] for r in rows.values()) for f in ("prompt_tokens", "completion_tokens"))
    engine = (after[0] - before[0], after[1] - before[1])
    assert recorded == engine
    assert recorded[0] > received[0] and recorded[1] > received[1]  # the 6th request's tokens, not shown to it

    tight = json.loads(demo.cli("keys", "create", "tight", "--rpm", "1", "--json").stdout)["key"]
    codes = [httpx.post(gw + "/v1/completions", headers={"Authorization": f"Bearer {tight}"}, timeout=120,
                        json={"model": demo.model, "prompt": "Hi", "max_tokens": 2}) for _ in range(2)]
    assert [c.status_code for c in codes] == [200, 429] and int(codes[1].headers["Retry-After"]) > 0
    assert demo.cli("keys", "revoke", "tight").returncode == 0
    deadline = time.monotonic() + 5  # the gateway re-reads the keys in use every second: revoked within 2 s
    while True:
        revoked = httpx.post(gw + "/v1/completions", headers={"Authorization": f"Bearer {tight}"}, timeout=60,
                             json={"model": demo.model, "prompt": "Hi", "max_tokens": 2})
        if revoked.status_code != 429 or time.monotonic() > deadline:  # still the old key: over its rpm
            break
        time.sleep(0.2)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"], revoked.text
    wanted = query_metrics(REPO / "dashboards" / "llmnest.json")
    gateway_metrics = httpx.get(gw + "/metrics").text
    exposed = exposed_metrics(gateway_metrics) | exposed_metrics(httpx.get(f"{root}/metrics", timeout=10).text)
    assert {m for m in wanted if m.startswith("vllm:")}, "the dashboard shows engine metrics too"
    assert not (wanted - exposed), f"dashboard queries metrics nobody exposes: {wanted - exposed}"
    assert k1 not in gateway_metrics and demo.api_key not in gateway_metrics and 'key_name="one"' in gateway_metrics


def test_an_abandoned_non_streamed_request_stops_vllm_within_a_second_and_is_billed(demo) -> None:
    """A client that gives up on a long non-streamed answer after 2 s: vLLM stops generating within a
    second, the key is billed the tokens vLLM generated (status 499), and its one slot is free again."""
    made = json.loads(demo.cli("keys", "create", "leaver", "--max-concurrency", "1", "--json").stdout)["key"]
    headers = {"Authorization": f"Bearer {made}"}
    gw = demo.base_url.removesuffix("/v1")
    root = f"http://127.0.0.1:{demo.replica()['port']}"
    before = vllm_tokens(root)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw + "/v1/chat/completions", headers=headers, timeout=httpx.Timeout(60, read=2.0),
                   json={"model": demo.model, "max_tokens": 600, "ignore_eos": True,
                         "messages": [{"role": "user", "content": "Tell a long story."}]})
    left = time.monotonic()
    while _running(root) and time.monotonic() - left < 5:
        time.sleep(0.05)
    stopped_after = time.monotonic() - left
    assert stopped_after < 1.0, f"vLLM still generated {stopped_after:.2f} s after the client left"
    after = vllm_tokens(root)
    time.sleep(0.5)  # the usage row is written as the engine's request ends
    (row,) = _usage_of(demo, "leaver").values()
    generated = after[1] - before[1]
    assert row["errors"] == 1 and 0 < row["completion_tokens"] < 600
    assert row["prompt_tokens"] == after[0] - before[0]
    assert abs(row["completion_tokens"] - generated) <= 1, (row, generated)  # (one step may not have arrived)
    again = httpx.post(gw + "/v1/completions", headers=headers, timeout=120,
                       json={"model": demo.model, "prompt": "Hi", "max_tokens": 2})
    assert again.status_code == 200, again.text  # the slot came back
    tokenized = httpx.post(gw + "/tokenize", headers=headers, timeout=60, json={"model": demo.model, "prompt": "Hi there"})
    assert tokenized.status_code == 200 and tokenized.json()["count"] >= 2 and tokenized.headers["x-request-id"]


def _running(root: str) -> bool:
    """vLLM's own count of requests it is generating for."""
    for line in httpx.get(f"{root}/metrics", timeout=10).text.splitlines():
        if line.startswith("vllm:num_requests_running"):
            return float(line.rsplit(" ", 1)[1]) > 0
    return False


def test_up_with_an_api_key_beside_a_gateway_with_keys_opens_that_deployment_only(demo, tmp_path) -> None:
    """`up --api-key K` where the gateway has keys (the demo's `default`): K becomes the key named after the
    new deployment, for its model only; `up` says so and `keys ls` lists it; K opens nothing else."""
    from tests.conftest import MODELS_CACHE, free_port, run_cli

    other = tmp_path / "smollm2-other"  # the demo's weights under another served name (hard links, no copy)
    other.mkdir()
    for f in (MODELS_CACHE / "smollm2-135m").iterdir():
        if f.is_file():
            os.link(f, other / f.name)
    secret = "sk-e2e-chosen-key-0123456789"
    port = free_port()
    done = run_cli(demo.env, "up", str(other), "--api-key", secret, "--port", str(port), "--max-model-len", "2048",
                   timeout=1200)
    try:
        assert done.returncode == 0, done.stderr
        assert "smollm2-other, for smollm2-other only" in done.stdout and secret in done.stdout
        rows = {r["name"]: r for r in json.loads(demo.cli("keys", "ls", "--json").stdout)}
        assert rows["smollm2-other"]["models"] == ["smollm2-other"] and "default" in rows
        chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        mine = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=120,
                          headers={"Authorization": f"Bearer {secret}"}, json={"model": "smollm2-other", **chat})
        assert mine.status_code == 200, mine.text
        elsewhere = httpx.post(demo.base_url + "/chat/completions", timeout=120,
                               headers={"Authorization": f"Bearer {secret}"}, json={"model": demo.model, **chat})
        assert elsewhere.status_code == 403 and elsewhere.json()["error"]["code"] == "model_not_allowed"
    finally:
        assert run_cli(demo.env, "down", "smollm2-other").returncode == 0
