"""`llmnest console` in a real browser (Debian's chromium through Playwright) with a real demo
deployment of its own: log in with the printed URL, plan and deploy the demo model from the Deploy page
(the key shown once), see the deployment with its live figures, chat (two panes, streamed, markdown and
code rendered, Stop frees the engine, a failed turn leaves the transcript clean, conversations kept),
read the live log, create a key and use it with curl through the gateway, see its usage, revoke
`default` (the Playground keeps working on the console's own key), run a short benchmark, see a taken
port refused on the Deploy form with the form kept, redeploy with a bad engine flag (the deployment
answers on its old spec), check that no page scrolls sideways on a 390 px phone, and take the deployment
down. Screenshots of every page, desktop and phone, go to test-artifacts/console/."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, cli_env, free_port, run_cli

pytestmark = pytest.mark.e2e

SHOTS = REPO / "test-artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
NAME = "console-demo"
PHONE = {"width": 390, "height": 844}
CODE_PROMPT = "Write a Python function that adds two numbers."


def _serve(argv: list[str], env: dict[str, str], ready: str, log: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "llmnest", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=log.open("w"), text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready, timeout=2).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
        assert proc.poll() is None, f"{argv[0]} ended: {log.read_text()}"
    raise AssertionError(f"{argv[0]} did not answer at {ready}: {log.read_text()}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The console in a home of this module's own (the test deploys through the console; `up` puts the
    gateway in front of the deployment)."""
    home = tmp_path_factory.mktemp("llmnest-console")
    env = cli_env(home)
    console_port = free_port()
    console = _serve(["console", "--port", str(console_port)], env, f"http://127.0.0.1:{console_port}/login",
                     home / "console.err")
    url = console.stdout.readline().split(": ", 1)[1].strip()
    yield {"home": home, "env": env, "url": url, "base": url.split("/?")[0]}
    console.terminate()
    console.wait(timeout=30)
    if NAME in run_cli(env, "ls", "--json").stdout:
        run_cli(env, "down", NAME)


@pytest.fixture(scope="module")
def page(stack):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.set_default_timeout(60_000)
        yield pg
        pg.screenshot(path=str(SHOTS / "zz-last-page.png"), full_page=True)  # where a failure left it
        browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def page_width(page) -> int:
    """How wide the page is laid out (more than the viewport: the whole page scrolls sideways)."""
    return page.evaluate("() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)")


def engine_running(base: str, page) -> float | None:
    return page.request.get(f"{base}/api/deployments/{NAME}/metrics").json().get("running")


def test_console_end_to_end(stack, page) -> None:
    from playwright.sync_api import expect

    base = stack["base"]
    # without the token: the login page and nothing else
    page.goto(base + "/")
    expect(page.locator("h1")).to_have_text("llmnest console")
    assert NAME not in page.content()
    shot(page, "01-login")
    page.set_viewport_size(PHONE)
    assert page_width(page) <= PHONE["width"]
    shot(page, "phone-login")
    page.set_viewport_size({"width": 1280, "height": 900})
    assert page.request.get(base + "/favicon.ico").status == 200

    page.goto(stack["url"])  # the printed URL logs in and drops the token from the address
    assert "token=" not in page.url

    # deploy the demo model from the page: the plan first, then the job with its phases, the key once
    page.goto(base + "/deploy")
    host, kube = page.locator('input[name="host"]'), page.locator('fieldset[data-target="kubernetes"]')
    page.select_option('select[name="target"]', "kubernetes")  # a cluster: this machine's fields go, its own come
    expect(host).to_be_hidden()
    expect(kube).to_be_visible()
    assert host.is_disabled() and page.locator('input[name="force"]').is_disabled()
    page.select_option('select[name="target"]', "local")
    expect(host).to_be_visible()
    expect(kube).to_be_hidden()
    page.fill('input[name="name"]', NAME)
    page.fill('input[name="port"]', str(free_port()))
    page.fill('input[name="max_model_len"]', "2048")
    page.click("#plan-button")
    expect(page.locator("#plan")).to_contain_text("KV capacity")
    expect(page.locator("#plan")).to_contain_text("2,048 requested")
    shot(page, "02-deploy-plan")
    page.click("#deploy-form button[type=submit]")
    expect(page.locator("#job-phases li").first).to_be_visible(timeout=60_000)
    shot(page, "03-deploy-running")
    expect(page.locator("#job-state")).to_have_text("done", timeout=900_000)
    secret_of_demo = page.locator("#new-secret").inner_text()
    assert secret_of_demo.startswith("sk-") and secret_of_demo in page.locator("pre.copy").first.inner_text()
    shot(page, "04-deploy-done")
    page.reload()
    assert secret_of_demo not in page.content()  # shown once
    deployed = json.loads(run_cli(stack["env"], "status", NAME, "--json").stdout)
    model, base_url = deployed["model"], deployed["base_url"]

    page.goto(base + "/")
    row = page.locator(f'tr[data-name="{NAME}"]')
    expect(row.locator('[data-field="status"]')).to_have_text("ready")
    shot(page, "05-deployments")

    page.goto(f"{base}/deployments/{NAME}")
    expect(page.locator("h1")).to_contain_text(NAME)
    expect(page.get_by_text("KV cache", exact=True)).to_be_visible()
    assert secret_of_demo not in page.content()  # the key is never shown after creation
    shot(page, "06-deployment")

    # playground: the same prompt to two panes, answers streamed with their figures
    page.goto(f"{base}/playground?deployment={NAME}")
    page.check("#side-by-side")
    page.select_option('select[name="deployment1"]', NAME)
    for pane in (0, 1):
        page.locator(f'.pane[data-pane="{pane}"] details.params summary').click()
        page.fill(f'.pane[data-pane="{pane}"] .max_tokens', "24")
    assert page.locator('.pane[data-pane="0"] .max_tokens').get_attribute("max") == "2048"  # the model's context
    page.fill('textarea[name="prompt"]', "Name three colours.")
    page.click("#send")
    figures = page.locator('.figures[data-done="1"]')
    expect(figures).to_have_count(2, timeout=180_000)
    for text in figures.all_inner_texts():
        assert re.search(r"TTFT \d+ ms · [\d.]+ tok/s · \d+ prompt \+ \d+ completion tokens", text), text
    answers = page.locator(".msg.assistant .answer").all_inner_texts()
    assert len(answers) == 2 and all(a.strip() for a in answers)
    expect(page.locator(".cut-off").first).to_be_visible()  # 24 tokens: cut off by max tokens
    assert secret_of_demo not in page.content()
    shot(page, "07-playground")

    # one pane: an answer with code is rendered as code, highlighted, with a copy button
    page.click("#clear")
    page.uncheck("#side-by-side")
    page.fill('.pane[data-pane="0"] .max_tokens', "160")
    page.fill('.pane[data-pane="0"] .temperature', "0")
    page.fill('textarea[name="prompt"]', CODE_PROMPT)
    page.click("#send")
    expect(page.locator('.pane[data-pane="0"] .figures[data-done="1"]')).to_have_count(1, timeout=180_000)
    code = page.locator(".msg.assistant .answer pre code")
    expect(code.first).to_be_visible()
    assert "def " in code.first.inner_text() and page.locator(".answer pre .copy-code").count() >= 1
    assert page.locator(".answer pre code .hljs-keyword").count() >= 1  # highlighted
    shot(page, "07b-playground-code")

    # Stop ends the stream and frees the engine
    page.fill('.pane[data-pane="0"] .max_tokens', "1500")
    page.fill('.pane[data-pane="0"] .temperature', "1")
    page.fill('textarea[name="prompt"]', "Write a very long story about a dragon and a lighthouse.")
    page.click("#send")
    expect(page.locator("#stop")).to_be_visible()
    expect(page.locator(".msg.assistant .figures").last).to_have_text("streaming…", timeout=120_000)
    page.wait_for_timeout(1500)
    assert engine_running(base, page) == 1
    page.click("#stop")
    expect(page.locator(".msg.assistant .figures").last).to_have_text("stopped")
    expect(page.locator("#send")).to_be_enabled()
    deadline = time.monotonic() + 15
    while engine_running(base, page) != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert engine_running(base, page) == 0  # the engine dropped the request
    shot(page, "07c-playground-stopped")

    # a prompt over the context: the error stays, no empty bubble, the text comes back to the box
    bubbles = page.locator(".pane[data-pane='0'] .msg").count()
    too_long = "lighthouse " * 3000
    page.fill('textarea[name="prompt"]', too_long)
    page.click("#send")
    error = page.locator(".pane[data-pane='0'] .pane-error")
    expect(error).to_be_visible(timeout=60_000)
    assert page.locator(".pane[data-pane='0'] .msg").count() == bubbles
    assert page.input_value('textarea[name="prompt"]').strip() == too_long.strip()
    shot(page, "07d-playground-error")

    # the conversation is kept: after a reload it is listed and opens again
    page.fill('textarea[name="prompt"]', "")
    page.reload()
    expect(page.locator("#conversations li a").first).to_be_visible()
    page.locator("#conversations li a", has_text="Write a Python function").first.click()
    expect(page.locator(".msg.assistant .answer pre code").first).to_be_visible()
    shot(page, "07e-playground-reopened")

    # the deployment page: replicas table and live figures from the engine's and the gateway's metrics
    page.goto(f"{base}/deployments/{NAME}")
    expect(page.locator("#replicas tbody tr")).to_have_count(1)
    expect(page.locator('#live [data-m="kv_cache"]')).to_contain_text("%", timeout=15_000)
    expect(page.locator('#live [data-m="req_per_s"]')).to_contain_text("/s", timeout=15_000)
    shot(page, "06b-deployment-live")

    # the live log, with search
    page.goto(f"{base}/deployments/{NAME}/logs")
    expect(page.locator("#log")).to_contain_text("chat/completions", timeout=30_000)
    assert "GET /health" not in page.locator("#log").inner_text()  # health checks hidden by default
    page.fill("#log-search", "chat/completions")
    expect(page.locator("#log mark").first).to_be_visible()
    expect(page.locator("#log-count")).to_contain_text("matching")
    shot(page, "08-logs")
    page.click("nav.tabs >> text=gateway")
    expect(page.locator("#log")).not_to_be_empty(timeout=30_000)
    shot(page, "08b-logs-gateway")

    # a key, shown once, used with curl through the gateway
    page.goto(f"{base}/keys")
    page.fill('input[name="name"]', "e2e-user")
    page.fill('input[name="rpm"]', "100")
    page.click("text=Create key")
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("sk-")
    shot(page, "09-key-created")
    body = json.dumps({"model": model, "max_tokens": 8,
                       "messages": [{"role": "user", "content": "Say hi."}]})
    curl = subprocess.run(["curl", "-sS", "-o", "/dev/stdout", "-w", "\n%{http_code}",
                           f"{base_url}/chat/completions", "-H", "Content-Type: application/json",
                           "-H", f"Authorization: Bearer {secret}", "-d", body], check=False, capture_output=True, text=True,
                          timeout=180)
    answer, code = curl.stdout.rsplit("\n", 1)
    assert code == "200", curl.stdout + curl.stderr
    assert json.loads(answer)["usage"]["completion_tokens"] > 0
    page.goto(f"{base}/keys")
    assert secret not in page.content()
    expect(page.locator('tr[data-name="e2e-user"]')).to_contain_text("active")

    page.goto(f"{base}/usage?by=key&since=1d")
    expect(page.locator("#usage")).to_contain_text("e2e-user")
    expect(page.locator("svg.chart").first).to_be_visible()
    shot(page, "10-usage")
    csv = page.request.get(f"{base}/usage.csv?by=key&since=1d").text()
    assert csv.startswith("period,key_name,model") and "e2e-user" in csv

    # revoking `default` asks first, saying what uses it; the Playground keeps working on the console's key
    page.goto(f"{base}/keys")
    asked: list[str] = []
    page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    page.click('tr[data-name="default"] button.danger')
    expect(page.locator('tr[data-name="default"]')).to_contain_text("revoked")
    assert NAME in asked[0] and "console keeps working" in asked[0], asked
    assert page.locator('tr[data-name="llmnest-console"] button.danger').count() == 0
    shot(page, "09b-keys-default-revoked")
    page.goto(f"{base}/playground?deployment={NAME}")
    page.locator('.pane[data-pane="0"] details.params summary').click()
    page.fill('.pane[data-pane="0"] .max_tokens', "8")
    page.fill('textarea[name="prompt"]', "Say hi.")
    page.click("#send")
    expect(page.locator('.figures[data-done="1"]')).to_have_count(1, timeout=120_000)
    assert not page.locator(".pane-error").first.is_visible()

    # a short benchmark with live progress, then its charts
    page.goto(f"{base}/bench?deployment={NAME}")
    page.fill('input[name="qps"]', "2")
    page.fill('input[name="num_prompts"]', "4")
    page.fill('input[name="input_len"]', "32")
    page.fill('input[name="output_len"]', "8")
    page.click("text=Start")
    expect(page.locator("#job-state")).to_have_text("done", timeout=300_000)
    shot(page, "11-bench-job")
    page.click("text=Continue")
    expect(page.locator("#sweep tbody tr")).to_have_count(1)
    images = page.locator(".chart-png img")
    assert images.count() >= 4
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    shot(page, "12-bench-run")

    # a taken port is refused on the Deploy form, next to the field, the form and the plan kept, no job
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        page.goto(base + "/deploy")
        page.fill('input[name="name"]', "second-demo")
        page.fill('input[name="port"]', str(taken))
        page.fill('input[name="max_model_len"]', "2048")
        page.click("#deploy-form button[type=submit]")
        expect(page.locator('p.field-error[data-field="port"]')).to_contain_text("already in use")
    assert page.input_value('input[name="name"]') == "second-demo"
    assert page.input_value('input[name="port"]') == str(taken)
    expect(page.locator("#plan")).to_contain_text("KV capacity")
    assert "--port" not in page.locator("p.field-error").first.inner_text()
    shot(page, "14-deploy-port-taken")
    assert "second-demo" not in run_cli(stack["env"], "ls", "--json").stdout

    # a redeploy with a bad engine flag: the old engine keeps serving (a surge, where the machine has room) or the
    # previous spec comes back, and the deployment answers on it
    page.goto(f"{base}/deployments/{NAME}")
    more = page.locator('textarea[name="sets"]')
    more.fill((more.input_value() + "\nno-such-engine-flag=1").strip())
    page.once("dialog", lambda d: d.accept())
    page.click("form[action$='/redeploy'] button[type=submit]")
    expect(page.locator("#job-state")).to_have_text("failed", timeout=900_000)
    expect(page.locator(".error").first).to_contain_text(re.compile("kept serving on its previous spec|back on its previous spec"))
    shot(page, "15-redeploy-bad-flag")
    after = json.loads(run_cli(stack["env"], "status", NAME, "--json").stdout)
    assert after["status"] == "ready", after
    assert "no-such-engine-flag" not in run_cli(stack["env"], "show", NAME, "--as", "spec").stdout
    again = httpx.post(f"{base_url}/chat/completions", headers={"Authorization": f"Bearer {secret}"}, timeout=120,
                       json={"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
    assert again.status_code == 200, again.text
    page.goto(f"{base}/deployments/{NAME}")
    assert "no-such-engine-flag" not in page.locator('textarea[name="sets"]').input_value()

    # every page, desktop and phone: at 390 px nothing scrolls the whole page sideways
    pages = {"deployments": "/", "deployment": f"/deployments/{NAME}", "deploy": "/deploy",
             "playground": f"/playground?deployment={NAME}", "logs": f"/deployments/{NAME}/logs", "keys": "/keys",
             "usage": "/usage?by=hour&since=1d", "usage-by-key": "/usage?by=key&since=1d", "bench": "/bench"}
    runs = page.request.get(f"{base}/bench").text()
    if (found := re.search(r'href="(/bench/runs/[^"]+)"', runs)):
        pages["bench-run"] = found[1]
    for label, path in pages.items():
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(base + path)
        page.wait_for_load_state("networkidle") if label != "logs" else page.wait_for_timeout(1500)
        shot(page, f"desktop-{label}")
        page.set_viewport_size(PHONE)
        page.goto(base + path)
        page.wait_for_timeout(1500)
        assert page_width(page) <= PHONE["width"], (label, page_width(page))
        shot(page, f"phone-{label}")
    page.set_viewport_size(PHONE)
    page.goto(f"{base}/playground?deployment={NAME}")
    page.locator("#conversations li a").first.click()
    page.wait_for_timeout(1000)
    assert page_width(page) <= PHONE["width"]
    shot(page, "phone-playground-conversation")
    page.click("#menu")
    expect(page.locator("#nav a", has_text="Keys")).to_be_visible()
    shot(page, "phone-menu-open")
    page.set_viewport_size({"width": 1280, "height": 900})

    # down, confirmed in the page
    page.goto(f"{base}/deployments/{NAME}")
    page.once("dialog", lambda d: d.accept())
    page.click("button.danger")
    expect(page.locator("#job-state")).to_have_text("done", timeout=120_000)
    shot(page, "13-down")
    page.goto(base + "/")
    expect(page.locator(f'tr[data-name="{NAME}"]')).to_have_count(0)
    assert NAME not in run_cli(stack["env"], "ls", "--json").stdout
