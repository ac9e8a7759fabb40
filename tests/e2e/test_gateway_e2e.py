"""The gateway in front of the real demo vLLM (found through llmnest's own deployment store): usage
equals vLLM's own token counters, streaming usage is stripped when not asked for, and every metric
the Grafana dashboard queries exists in the gateway's or vLLM's real /metrics."""

from __future__ import annotations

import json

import httpx
import pytest

from llmnest.gateway import keys, usage
from llmnest.gateway.app import Gateway
from llmnest.gateway.dashboard import exposed_metrics, query_metrics
from llmnest.gateway.db import Database
from llmnest.gateway.server import ThreadedServer
from llmnest.gateway.upstreams import StateProvider
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


def test_usage_through_the_gateway_equals_vllms_counters(demo, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLMNEST_HOME", str(demo.home))  # the provider reads the demo's deployment store
    db = Database(f"sqlite:///{tmp_path / 'gateway.db'}")
    _, k1 = keys.create(db, "one")
    _, k2 = keys.create(db, "two")
    root = demo.base_url.removesuffix("/v1")
    with ThreadedServer(Gateway(db, StateProvider())) as gw:
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
                got = httpx.post(gw.url + path, headers=headers, json=body, timeout=120).json()["usage"]
            else:
                events = []
                options = {"stream_options": {"include_usage": True}} if i != 5 else {}
                with httpx.stream("POST", gw.url + path, headers=headers, json={**body, "stream": True, **options},
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
        rows = usage.summarize(db, "model")
        (row,) = rows
        assert row["requests"] == 6 and row["errors"] == 0
        engine = (after[0] - before[0], after[1] - before[1])
        assert (row["prompt_tokens"], row["completion_tokens"]) == engine
        last = db.query("SELECT prompt_tokens, completion_tokens FROM usage ORDER BY id DESC LIMIT 1")[0]
        assert (received[0] + last["prompt_tokens"], received[1] + last["completion_tokens"]) == engine

        _, tight = keys.create(db, "tight", rpm=1)  # one refused request, so the rejection counter has a sample
        codes = [httpx.post(gw.url + "/v1/completions", headers={"Authorization": f"Bearer {tight}"}, timeout=120,
                            json={"model": demo.model, "prompt": "Hi", "max_tokens": 2}).status_code for _ in range(2)]
        assert codes == [200, 429]
        wanted = query_metrics(REPO / "dashboards" / "llmnest.json")
        exposed = exposed_metrics(httpx.get(gw.url + "/metrics").text) | exposed_metrics(
            httpx.get(f"{root}/metrics", timeout=10).text)
        assert {m for m in wanted if m.startswith("vllm:")}, "the dashboard shows engine metrics too"
        assert not (wanted - exposed), f"dashboard queries metrics nobody exposes: {wanted - exposed}"
    db.close()
