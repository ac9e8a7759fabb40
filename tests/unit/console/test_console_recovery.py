"""What lets a mistake be undone from the page: engine flags shown and removable, a redeploy that puts
the previous spec back, the console's own key (revoking `default` breaks nothing here), sessions that
end, conversations kept, usage drawn as it is."""

from __future__ import annotations

import re
import time

import pytest
from starlette.testclient import TestClient

from llmnest import state, targets
from llmnest.build import UpRequest
from llmnest.console import auth, conversations
from llmnest.console.app import create_app
from llmnest.console.console_key import NAME as CONSOLE_KEY
from llmnest.console.console_key import console_key, key_for
from llmnest.console.deployments import more_changes, more_lines
from llmnest.engines.base import flag_args
from llmnest.errors import LlmnestError
from llmnest.gateway import keys
from llmnest.gateway.db import Database
from llmnest.spec import apply_sets


@pytest.fixture
def client(token) -> TestClient:
    c = TestClient(create_app(token), follow_redirects=False)
    assert c.get(f"/?token={token}").status_code == 303
    return c


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" content="([0-9a-f]+)"', html)[1]


def recorded(name: str, port: int, **update) -> state.Deployment:
    """A deployment recorded (never started): what the pages read."""
    resolved = targets.get("local").resolve(UpRequest(model="", name=name, port=port, api_key=f"sk-{name}-secret-1"))
    spec = resolved.spec.model_copy(update={"model_path": "/models/smollm2-135m", **update})
    state.create(spec, resolved.api_key)
    return state.get(name)


def test_an_empty_value_removes_a_flag_or_variable_and_never_renders_an_empty_flag(token) -> None:
    spec = recorded("flags", 18990, engine_args={"no-such-engine-flag": "1", "enable-prefix-caching": "true"},
                    env={"A": "1"}).spec
    changed = apply_sets(spec, {"no-such-engine-flag": "", "env.A": ""})
    assert changed.engine_args == {"enable-prefix-caching": "true"} and changed.env == {}
    assert flag_args(changed.engine_args) == ["--enable-prefix-caching"]


def test_the_more_box_shows_the_flags_in_effect_and_deleting_a_line_removes_that_flag(token) -> None:
    spec = recorded("more", 18991, engine_args={"no-such-engine-flag": "1", "enable-prefix-caching": "true"},
                    env={"VLLM_X": "2"}).spec
    text = more_lines(spec)
    assert text.splitlines() == ["no-such-engine-flag=1", "enable-prefix-caching=true", "env.VLLM_X=2"]
    assert more_changes(spec, text) == {}
    kept = "enable-prefix-caching=true\nenv.VLLM_X=2\nmax-num-seqs=4"
    assert more_changes(spec, kept) == {"no-such-engine-flag": "", "max-num-seqs": "4"}
    assert "no-such-engine-flag" not in apply_sets(spec, more_changes(spec, kept)).engine_args


def test_the_deployment_page_fills_the_more_box_and_a_replicas_table_without_gpu_fields_on_cpu(client) -> None:
    recorded("page", 18992, engine_args={"enable-prefix-caching": "true"})
    html = client.get("/deployments/page").text
    assert re.search(r'<textarea name="sets"[^>]*>enable-prefix-caching=true</textarea>', html)
    assert "field.gpu_memory_utilization" not in html and "field.tensor_parallel_size" not in html
    assert "field.cpu_kv_cache_gib" in html
    assert "{&#39;replica&#39;" not in html  # no Python repr of the replicas


def test_a_failed_new_spec_puts_the_previous_one_back_before_redeploy_returns(token, monkeypatch) -> None:
    """The engines are stand-ins here (starting vLLM is the e2e test's job): `_start` fails for the new
    spec as an engine that rejects a flag does, and records what it was asked to start."""
    from llmnest.targets.base import Context
    from llmnest.targets.local import units

    dep = recorded("safe", 18993)
    key_before = state.api_key("safe")
    started: list[dict] = []

    def start(name, ctx):
        spec = state.get(name).spec
        started.append(dict(spec.engine_args))
        if "no-such-engine-flag" in spec.engine_args:
            raise LlmnestError("the engine exited: unrecognized arguments: --no-such-engine-flag 1")

    monkeypatch.setattr(units, "start_all", start)
    monkeypatch.setattr(units, "stop_all", lambda dep, grace=30: None)
    target = targets.get("local")
    with pytest.raises(LlmnestError) as failed:
        target.redeploy(dep, apply_sets(dep.spec, {"no-such-engine-flag": "1"}), Context())
    assert "is back on its previous spec" in failed.value.message and "unrecognized arguments" in failed.value.message
    assert started == [{"no-such-engine-flag": "1"}, {}]  # the new spec, then the old one again
    after = state.get("safe")
    assert after.spec == dep.spec and state.api_key("safe") == key_before


def test_the_console_has_a_key_of_its_own_that_survives_revoking_default(client) -> None:
    db = Database(None)
    keys.create(db, "default")
    dep = recorded("gw", 18994, gateway=True)
    secret = key_for(dep)
    assert secret == console_key() and keys.authenticate(db, secret).name == CONSOLE_KEY
    keys.revoke(db, "default")
    assert key_for(dep) == secret  # untouched by revoking default
    keys.revoke(db, CONSOLE_KEY)  # revoked outside the page (the CLI): made again on next use
    fresh = key_for(dep)
    assert fresh != secret and keys.authenticate(db, fresh).problem() is None
    page = client.get("/keys").text
    assert f'action="/keys/{CONSOLE_KEY}/revoke"' not in page and "this console's own key" in page
    refused = client.post(f"/keys/{CONSOLE_KEY}/revoke", data={"csrf": csrf_of(page)})
    assert refused.status_code == 409 and keys.get(db, CONSOLE_KEY).revoked_at is None
    no_gateway = recorded("direct", 18995, gateway=False)
    assert key_for(no_gateway) == state.api_key("direct")  # an engine without the gateway knows one key


def test_revoking_default_asks_first_naming_what_uses_it(client) -> None:
    from llmnest.targets.local.gateway import user_key

    user_key(None)  # the `default` key `up` makes and prints
    dep = recorded("team", 18996, gateway=True)
    from llmnest.home import write_secret
    from llmnest.home import gateway_default_key_path

    write_secret(state.key_path(dep.name), gateway_default_key_path().read_text())  # as `up` records it
    page = client.get("/keys").text
    confirm = re.search(r'action="/keys/default/revoke" data-confirm="([^"]*)"', page)[1]
    assert "team uses it" in confirm and "The console keeps working" in confirm


def test_security_headers_favicon_logout_and_sessions_that_expire(token, client) -> None:
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "cdn" not in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    anon = TestClient(create_app(token), follow_redirects=False)
    assert anon.get("/favicon.ico").status_code == 200
    old = auth.session_value(token, time.time() - auth.SESSION_SECONDS - 5)
    anon.cookies.set(auth.COOKIE, old)
    assert anon.get("/").status_code == 401  # expired
    session = client.cookies.get(auth.COOKIE)
    out = client.post("/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert "Max-Age=0" in out.headers["set-cookie"]
    client.cookies.set(auth.COOKIE, session)  # the same cookie, replayed after logout
    assert client.get("/").status_code == 401


def test_conversations_are_kept_listed_and_deleted(client) -> None:
    csrf = csrf_of(client.get("/playground").text)
    doc = {"title": "colours", "panes": [{"deployment": "demo", "params": {"temperature": "0.2"},
                                          "messages": [{"role": "user", "content": "Name a colour."},
                                                       {"role": "assistant", "content": "Blue.", "finish_reason": "length"}]}]}
    made = client.post("/api/conversations", json=doc, headers={"x-csrf-token": csrf})
    conv_id = made.json()["id"]
    assert [c["title"] for c in client.get("/api/conversations").json()] == ["colours"]
    back = client.get(f"/api/conversations/{conv_id}").json()
    assert back["panes"][0]["messages"][1] == {"role": "assistant", "content": "Blue.", "finish_reason": "length"}
    bad = client.put(f"/api/conversations/{conv_id}", json={"panes": [{"messages": [{"role": "root"}]}]},
                     headers={"x-csrf-token": csrf})
    assert bad.status_code == 400
    assert client.delete(f"/api/conversations/{conv_id}", headers={"x-csrf-token": csrf}).status_code == 200
    assert client.get("/api/conversations").json() == [] and conversations.db_path().stat().st_mode & 0o077 == 0


def test_max_tokens_is_limited_by_the_models_context(client) -> None:
    recorded("ctx", 18997, max_model_len=2048)
    csrf = csrf_of(client.get("/playground").text)
    resp = client.post("/api/chat", json={"deployment": "ctx", "max_tokens": 32768,
                                          "messages": [{"role": "user", "content": "hi"}]}, headers={"x-csrf-token": csrf})
    assert resp.status_code == 400 and "Max tokens" in resp.json()["error"] and "2048" in resp.json()["error"]
    assert 'data-context="2048"' in client.get("/playground").text


def test_usage_stacks_errors_inside_requests_and_days_are_a_time_series(token) -> None:
    from llmnest.console.keys import periods, usage_charts

    now = time.time()
    rows = [{"period": time.strftime("%Y-%m-%d", time.gmtime(now - 2 * 86400)), "key_name": "a", "model": "m",
             "requests": 19, "errors": 3, "prompt_tokens": 100, "completion_tokens": 50}]
    series = periods(rows, "day", now - 7 * 86400, now)
    assert len(series) == 8 and sum(v["ok"] + v["errors"] for _, v in series) == 19
    assert [v["ok"] for _, v in series if v["ok"]] == [16]
    svg = usage_charts([{**rows[0], "period": None}], "key", now - 86400, now)[1]
    assert "ok: 16" in svg and "errors: 3" in svg and ">19<" in svg  # the bar totals 19, not 22


def test_live_figures_read_the_gateways_own_metrics_text(token) -> None:
    from prometheus_client import generate_latest

    from llmnest.console.live import GATEWAY_COUNTERS, rates, totals
    from llmnest.gateway.metrics import Metrics

    m = Metrics()
    m.requests.labels(key_name="k", model="demo", status="200").inc(6)
    m.completion_tokens.labels(key_name="k", model="demo").inc(120)
    m.requests.labels(key_name="k", model="other", status="200").inc(50)
    found = totals(generate_latest(m.registry).decode(), GATEWAY_COUNTERS, "demo")
    assert found == {"requests": 6.0, "tokens": 120.0}
    assert rates("x", 100.0, found)["req_per_s"] is None  # a rate needs two reads
    later = rates("x", 102.0, {"requests": 10.0, "tokens": 180.0})
    assert later["req_per_s"] == 2.0 and later["tok_per_s"] == 30.0
