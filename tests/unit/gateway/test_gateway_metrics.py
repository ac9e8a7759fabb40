"""/metrics: llmnest_ names, no secrets, loopback or admin key; every dashboard query names a real metric."""

from __future__ import annotations

import httpx
from starlette.testclient import TestClient

from llmnest.gateway import keys
from llmnest.gateway.app import Gateway
from llmnest.gateway.dashboard import exposed_metrics, query_metrics
from llmnest.gateway.upstreams import StaticProvider
from tests.conftest import REPO
from tests.unit.gateway.test_gateway_proxy import chat, post, stream

DASHBOARD = REPO / "dashboards" / "llmnest.json"


def test_metrics_count_requests_and_tokens_without_secrets(sqlite_db, gateway, replicas) -> None:
    _, key = keys.create(sqlite_db, "metered")
    gw = gateway([replicas["a"].upstream(), replicas["c"].upstream()])
    post(gw.url, key, chat("m1", "one two", 3))
    stream(gw.url, key, chat("m1", "one two", 3))
    post(gw.url, key, chat("m9", "x"))
    text = httpx.get(gw.url + "/metrics").text
    assert 'llmnest_requests_total{key_name="metered",model="m1",status="200"} 2.0' in text
    assert 'llmnest_prompt_tokens_total{key_name="metered",model="m1"} 4.0' in text
    assert 'llmnest_completion_tokens_total{key_name="metered",model="m1"} 6.0' in text
    assert 'llmnest_time_to_first_token_seconds_count{model="m1"} 1.0' in text
    assert 'llmnest_request_duration_seconds_count{model="m1"} 2.0' in text
    assert 'llmnest_requests_in_flight{model="m1"} 0.0' in text
    assert 'llmnest_replica_up{model="m2",replica="c"} 1.0' in text
    assert key not in text and replicas["a"].key not in text
    names = {n for n in exposed_metrics(text)}
    assert all(n.startswith(("llmnest_", "python_", "process_")) for n in names), names


def test_every_gateway_metric_in_the_dashboard_exists(sqlite_db, gateway, replicas) -> None:
    wanted = {m for m in query_metrics(DASHBOARD) if m.startswith("llmnest_")}
    assert len(wanted) >= 8
    _, key = keys.create(sqlite_db, "k", rpm=1)
    gw = gateway([replicas["a"].upstream()])
    stream(gw.url, key, chat("m1", "x"))
    post(gw.url, key, chat("m1", "x"))  # a limit rejection, so that counter has a sample
    missing = wanted - exposed_metrics(httpx.get(gw.url + "/metrics").text)
    assert not missing, f"the dashboard queries metrics the gateway does not expose: {missing}"


def test_metrics_beyond_loopback_need_the_admin_key(sqlite_db) -> None:
    """The requests come through Starlette's test client with a LAN client address."""
    gw = Gateway(sqlite_db, StaticProvider([]), admin_key="admin-secret")
    far = TestClient(gw.app, client=("10.1.2.3", 5555))
    assert far.get("/metrics").status_code == 403
    assert far.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert far.get("/metrics", headers={"Authorization": "Bearer admin-secret"}).status_code == 200
    near = TestClient(gw.app, client=("127.0.0.1", 5555))
    assert near.get("/metrics").status_code == 200
    no_admin = Gateway(sqlite_db, StaticProvider([]))
    far2 = TestClient(no_admin.app, client=("10.1.2.3", 5555))
    assert far2.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 403


def test_the_rotation_is_on_metrics_and_read_back_by_the_redeploy(sqlite_db, gateway, replicas) -> None:
    """A replica that is starting or draining (ready=False) is out of the rotation the gateway exports;
    `local_surge.rotation` and `wait_rotation` read that back, as a redeploy does before it drains."""
    from dataclasses import replace
    from types import SimpleNamespace

    from llmnest.targets.local import surge as local_surge

    gw = gateway([replicas["a"].upstream(), replace(replicas["b"].upstream(), ready=False)])
    text = httpx.get(gw.url + "/metrics").text
    assert 'llmnest_replica_in_rotation{model="m1",replica="a"} 1.0' in text
    assert 'llmnest_replica_in_rotation{model="m1",replica="b"} 0.0' in text
    port = int(gw.url.rsplit(":", 1)[1].split("/")[0])
    spec = SimpleNamespace(host="127.0.0.1", port=port, served_model_name="m1")
    assert local_surge.rotation(spec) == {"a": True, "b": False}
    assert local_surge.wait_rotation(spec, "b", False, lambda _line: None)
    assert not local_surge.wait_rotation(spec, "b", True, lambda _line: None, timeout=0.5)
    assert not local_surge.wait_rotation(spec, "gone", True, lambda _line: None, timeout=0.5)


def test_a_drain_waits_for_the_gateway_then_for_the_engines_running_requests(sqlite_db, gateway, replicas,
                                                                              monkeypatch) -> None:
    from dataclasses import replace
    from types import SimpleNamespace

    from llmnest.targets.local import surge as local_surge

    gw = gateway([replicas["a"].upstream(), replace(replicas["b"].upstream(), ready=False)])
    spec = SimpleNamespace(host="127.0.0.1", port=int(gw.url.rsplit(":", 1)[1].split("/")[0]), served_model_name="m1")
    busy = [2.0, 1.0, 0.0]
    monkeypatch.setattr(local_surge, "engine_busy", lambda unit: busy.pop(0))
    seen: list[str] = []
    local_surge.drain(spec, SimpleNamespace(id="b"), seen.append)
    assert not busy and seen == ["draining b: 2 request(s) still running", "draining b: 1 request(s) still running"]


def test_a_gateway_that_cannot_say_gets_three_health_intervals(monkeypatch) -> None:
    from types import SimpleNamespace

    from llmnest.targets.local import surge as local_surge

    slept: list[float] = []
    monkeypatch.setattr(local_surge.time, "sleep", slept.append)
    spec = SimpleNamespace(host="127.0.0.1", port=1, served_model_name="m1")  # nothing listens on port 1
    assert local_surge.wait_rotation(spec, "x", True, lambda _line: None) and slept == [local_surge.OLD_GATEWAY_WAIT]


def test_metrics_from_a_trusted_network_need_no_key_and_others_still_do(sqlite_db) -> None:
    """The instance's gateway lets its VPC read /metrics (--metrics-from); the internet still needs the admin key."""
    gw = Gateway(sqlite_db, StaticProvider([]), metrics_from=("192.168.0.0/16",))
    assert TestClient(gw.app, client=("192.168.7.9", 5555)).get("/metrics").status_code == 200
    assert TestClient(gw.app, client=("203.0.113.7", 5555)).get("/metrics").status_code == 403
    assert TestClient(gw.app, client=("10.1.2.3", 5555)).get("/metrics").status_code == 403
