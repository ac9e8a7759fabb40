"""The console's guard: no data without the login token, no change without the CSRF token, and the
forms' bad input answered with the CLI's one line next to the field, nothing started."""

from __future__ import annotations

import re
import stat

import pytest
from starlette.testclient import TestClient

from llmnest import state
from llmnest.console import auth
from llmnest.console.app import create_app
from llmnest.gateway import keys
from llmnest.gateway.db import Database


@pytest.fixture
def anon(token) -> TestClient:
    return TestClient(create_app(token), follow_redirects=False)


@pytest.fixture
def client(token) -> TestClient:
    c = TestClient(create_app(token), follow_redirects=False)
    resp = c.get(f"/keys?token={token}")
    assert resp.status_code == 303 and resp.headers["location"] == "/keys"
    return c


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" content="([0-9a-f]+)"', html)[1]


def test_token_is_kept_0600_and_reused(token, tmp_path) -> None:
    path = auth.token_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.load_or_create_token() == token and len(token) >= 40


def test_missing_or_wrong_token_gets_the_login_page_never_data(anon, token) -> None:
    keys.create(Database(None), "alice-secret-name")
    for path in ("/", "/keys", "/usage", "/usage.csv", "/api/deployments", "/deploy", "/bench"):
        resp = anon.get(path)
        assert resp.status_code == 401 and "Log in" in resp.text, path
        assert "alice-secret-name" not in resp.text
    wrong = anon.get("/keys?token=not-the-token")
    assert wrong.status_code == 401 and "not this console" in wrong.text
    anon.cookies.set(auth.COOKIE, "forged")
    forged = anon.get("/keys")
    assert forged.status_code == 401 and "alice-secret-name" not in forged.text
    assert anon.post("/keys/create", data={"name": "x"}).status_code == 401


def test_token_login_sets_a_strict_httponly_cookie_without_the_token(anon, token) -> None:
    resp = anon.get(f"/usage?by=key&token={token}")
    assert resp.status_code == 303 and resp.headers["location"] == "/usage?by=key"
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
    assert anon.get("/usage?by=key").status_code == 200


def test_login_form(anon, token) -> None:
    bad = anon.post("/login", data={"token": "nope", "next": "/keys"})
    assert bad.status_code == 401 and "not this console" in bad.text
    ok = anon.post("/login", data={"token": token, "next": "//evil.example/"})
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    assert anon.get("/keys").status_code == 200


def test_posts_need_the_csrf_token_and_the_same_origin(client) -> None:
    page = client.get("/keys")
    csrf = csrf_of(page.text)
    assert client.post("/keys/create", data={"name": "bob"}).status_code == 403
    assert client.post("/keys/create", data={"name": "bob", "csrf": "0" * 64}).status_code == 403
    cross = client.post("/keys/create", data={"name": "bob", "csrf": csrf}, headers={"origin": "http://evil.example"})
    assert cross.status_code == 403
    assert keys.list_keys(Database(None)) == []
    assert client.post("/api/chat", json={"deployment": "x"}).status_code == 403


def test_a_new_key_is_shown_once(client) -> None:
    csrf = csrf_of(client.get("/keys").text)
    resp = client.post("/keys/create", data={"name": "carol", "rpm": "60", "csrf": csrf})
    assert resp.status_code == 200
    secret = re.search(r'id="new-secret">(sk-[^<]+)<', resp.text)[1]
    assert keys.authenticate(Database(None), secret).rpm == 60
    again = client.get("/keys")
    assert "carol" in again.text and secret not in again.text and secret[:7] in again.text


def test_key_form_bad_input_is_one_line_next_to_the_field(client) -> None:
    csrf = csrf_of(client.get("/keys").text)
    resp = client.post("/keys/create", data={"name": "dave", "rpm": "abc", "csrf": csrf})
    assert resp.status_code == 400
    assert "error: Requests / minute must be a positive whole number, not &#39;abc&#39;" in resp.text
    assert re.search(r'name="rpm"[^>]*class="invalid"', resp.text)
    bad_name = client.post("/keys/create", data={"name": "no spaces", "csrf": csrf})
    assert bad_name.status_code == 400 and re.search(r'name="name"[^>]*class="invalid"', bad_name.text)
    assert keys.list_keys(Database(None)) == []


def test_deploy_form_bad_input_starts_nothing(client) -> None:
    csrf = csrf_of(client.get("/deploy").text)
    cases = {"port": ({"port": "99999"}, "Port must be a whole number from 1 to 65535"),
             "model": ({"model": "no-such-model-xyz"}, "unknown model"),
             "max_model_len": ({"max_model_len": "many"}, "Max model length must be a whole number"),
             "sets": ({"sets": "justaword"}, "KEY=VALUE"),
             "replicas": ({"replicas": "0"}, "Replicas must be a whole number from 1 to 16")}
    for field, (values, line) in cases.items():
        resp = client.post("/deploy", data={"model": "", "target": "local", "csrf": csrf, **values})
        assert resp.status_code == 400, (field, resp.text[:300])
        assert line in resp.text and re.search(rf'name="{field}"[^>]*class="invalid"', resp.text), field
    assert state.names() == [] and "Recent jobs" not in client.get("/").text


def test_deploy_form_shows_every_mistake_at_its_field_in_the_page_words_and_keeps_the_form(client) -> None:
    csrf = csrf_of(client.get("/deploy").text)
    resp = client.post("/deploy", data={"model": "", "target": "local", "csrf": csrf, "port": "0",
                                        "max_model_len": "many", "host": "10.255.255.7", "name": "mine"})
    assert resp.status_code == 400
    errors = dict(re.findall(r'<p class="error field-error" data-field="(\w+)">([^<]*)</p>', resp.text))
    assert set(errors) == {"port", "max_model_len", "host"}, errors
    assert "not an address of this machine" in errors["host"] and "--" not in "".join(errors.values())
    assert 'value="mine"' in resp.text and 'value="10.255.255.7"' in resp.text
    assert state.names() == []


def test_deploy_form_refuses_a_taken_port_and_a_taken_name_before_any_job(client) -> None:
    import socket

    from llmnest import targets
    from llmnest.spec_builder import UpRequest

    resolved = targets.get("local").resolve(UpRequest(model="", name="taken", port=18998, api_key="sk-taken-secret"))
    state.create(resolved.spec.model_copy(update={"model_path": "/models/smollm2-135m"}), resolved.api_key)
    csrf = csrf_of(client.get("/deploy").text)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        resp = client.post("/deploy", data={"model": "", "target": "local", "csrf": csrf, "port": str(port),
                                            "name": "fresh", "max_model_len": "2048"})
    assert resp.status_code == 409
    assert re.search(rf'<p class="error field-error" data-field="port">port {port} on 127.0.0.1 is already in use; '
                     r"change Port", resp.text)
    assert re.search(r'name="port"[^>]*class="invalid"', resp.text) and 'value="fresh"' in resp.text
    assert "KV capacity" in resp.text  # the plan stays beside the form
    name = client.post("/deploy", data={"model": "", "target": "local", "csrf": csrf, "name": "taken"})
    assert name.status_code == 409 and 'data-field="name"' in name.text and "exists" in name.text
    assert state.names() == ["taken"] and "Recent jobs" not in client.get("/").text


def test_plan_of_the_demo_model_on_this_machine(client) -> None:
    csrf = csrf_of(client.get("/deploy").text)
    resp = client.post("/deploy/plan", data={"model": "", "target": "local", "max_model_len": "2048"},
                       headers={"x-csrf-token": csrf})
    assert resp.status_code == 200, resp.text
    assert "KV capacity" in resp.text and "Arithmetic" in resp.text and "2,048 requested" in resp.text
    bad = client.post("/deploy/plan", data={"model": "nope-zz"}, headers={"x-csrf-token": csrf})
    assert bad.status_code == 400 and 'data-field="model"' in bad.text
    assert state.names() == []


def test_bench_and_chat_refuse_bad_input(client) -> None:
    csrf = csrf_of(client.get("/bench").text)
    zero = client.post("/bench", data={"deployment": "demo", "qps": "1", "num_prompts": "0", "csrf": csrf})
    assert zero.status_code == 400 and "--num-prompts must be a whole number of at least 1" in zero.text
    missing = client.post("/bench", data={"deployment": "ghost", "qps": "1", "num_prompts": "2", "input_len": "8",
                                          "csrf": csrf})
    assert missing.status_code == 404 and "ghost" in missing.text
    chat = client.post("/api/chat", json={"deployment": "ghost", "messages": [{"role": "user", "content": "hi"}]},
                       headers={"x-csrf-token": csrf})
    assert chat.status_code == 404 and "ghost" in chat.json()["error"]
    empty = client.post("/api/chat", json={"deployment": "ghost", "messages": []}, headers={"x-csrf-token": csrf})
    assert empty.status_code == 400 and "messages" in empty.json()["error"]


def test_cloud_plan_lists_fitting_types_with_price_and_the_dry_run(client) -> None:
    csrf = csrf_of(client.get("/deploy").text)
    resp = client.post("/deploy/plan", data={"model": "Qwen/QwQ-32B", "target": "aliyun", "region": "cn-hangzhou"},
                       headers={"x-csrf-token": csrf})
    assert resp.status_code == 200, resp.text
    rows = re.findall(r"<tr><td>(ecs\.[\w.-]+)</td>.*?CNY/h</td>", resp.text, re.DOTALL)
    assert rows and "ROS template" in resp.text and "Bootstrap script" in resp.text
    assert 'data-filename="qwq-32b-template.yaml"' in resp.text
    assert state.names() == []


def test_key_limits_change_and_blank_removes_a_limit(client) -> None:
    keys.create(Database(None), "erin", rpm=10, models=["a", "b"])
    page = client.get("/keys/erin")
    assert page.status_code == 200 and 'name="rpm" value="10"' in page.text and 'value="a,b"' in page.text
    csrf = csrf_of(page.text)
    bad = client.post("/keys/erin", data={"rpm": "10", "tpm": "-1", "models": "a,b", "csrf": csrf})
    assert bad.status_code == 400 and re.search(r'name="tpm"[^>]*class="invalid"', bad.text)
    assert keys.get(Database(None), "erin").tpm is None
    ok = client.post("/keys/erin", data={"rpm": "", "tpm": "500", "models": "", "csrf": csrf})
    assert ok.status_code == 303
    key = keys.get(Database(None), "erin")
    assert (key.rpm, key.tpm, key.models) == (None, 500, None)
    assert client.get("/keys/ghost").status_code == 404


def test_redeploy_form_refuses_bad_values_before_anything_stops(client) -> None:
    from llmnest import targets
    from llmnest.spec_builder import UpRequest

    resolved = targets.get("local").resolve(UpRequest(model="", name="idle", port=18999, api_key="sk-idle-secret"))
    spec = resolved.spec.model_copy(update={"model_path": "/models/smollm2-135m"})
    state.create(spec, resolved.api_key)  # recorded, never started
    page = client.get("/deployments/idle")
    assert page.status_code == 200 and 'name="field.max_model_len" value="4096"' in page.text
    assert "sk-idle-secret" not in page.text and "YOUR_API_KEY" in page.text
    csrf = csrf_of(page.text)
    same = client.post("/deployments/idle/redeploy", data={"field.max_model_len": "4096", "csrf": csrf})
    assert same.status_code == 400 and "nothing to change" in same.text
    bad = client.post("/deployments/idle/redeploy", data={"field.max_model_len": "lots", "csrf": csrf})
    assert bad.status_code == 400 and 'value="lots"' in bad.text and "max_model_len" in bad.text
    assert re.search(r'<textarea name="sets"[^>]*class="invalid"', bad.text)
    assert state.get("idle").spec.max_model_len == 4096 and "Recent jobs" not in client.get("/").text


def test_a_failed_job_shows_its_line_and_the_engine_tail_and_a_secret_only_once(token) -> None:
    import time

    from llmnest.errors import LlmnestError

    app = create_app(token)
    c = TestClient(app, follow_redirects=False)
    c.get(f"/?token={token}")
    jobs = app.app.state.jobs

    def fail(job) -> None:
        job.on_phase("loading model", "INFO loading weights")
        raise LlmnestError("the engine exited during start-up: unrecognized arguments: --bogus",
                           detail="vllm: error: unrecognized arguments: --bogus")

    def succeed(job) -> None:
        job.secret = "sk-only-once-0123456789"
        job.result = {"message": "demo answers"}

    failed, done = jobs.start("up", "demo", fail), jobs.start("up", "demo", succeed)
    while failed.state == "running" or done.state == "running":
        time.sleep(0.01)
    page = c.get(f"/jobs/{failed.id}")
    assert "error: the engine exited during start-up: unrecognized arguments: --bogus" in page.text
    assert "vllm: error: unrecognized arguments" in page.text and "loading model" in page.text
    assert c.get(f"/api/jobs/{failed.id}").json()["state"] == "failed"
    assert "sk-only-once-0123456789" in c.get(f"/jobs/{done.id}").text
    assert "sk-only-once-0123456789" not in c.get(f"/jobs/{done.id}").text
    assert "sk-only" not in c.get(f"/api/jobs/{done.id}").text
