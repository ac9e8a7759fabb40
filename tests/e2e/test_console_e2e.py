"""`llmnest console` in a real browser (Debian's chromium through Playwright) with a real demo
deployment of its own: log in with the printed URL, plan and deploy the demo model from the Deploy page
(the key shown once), see the deployment, chat (two panes, streamed),
read the live log, create a key and use it with curl through the gateway, see its usage, run a short
benchmark and see its charts, take the deployment down. Screenshots go to test-artifacts/console/."""

from __future__ import annotations

import json
import re
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
        browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_console_end_to_end(stack, page) -> None:
    from playwright.sync_api import expect

    base = stack["base"]
    # without the token: the login page and nothing else
    page.goto(base + "/")
    expect(page.locator("h1")).to_have_text("llmnest console")
    assert NAME not in page.content()
    shot(page, "01-login")

    page.goto(stack["url"])  # the printed URL logs in and drops the token from the address
    assert "token=" not in page.url

    # deploy the demo model from the page: the plan first, then the job with its phases, the key once
    page.goto(base + "/deploy")
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
    expect(page.get_by_text("KV cache")).to_be_visible()
    assert secret_of_demo not in page.content()  # the key is never shown after creation
    shot(page, "06-deployment")

    # playground: the same prompt to two panes, answers streamed with their figures
    page.goto(f"{base}/playground?deployment={NAME}")
    page.check("#side-by-side")
    page.select_option('select[name="deployment1"]', NAME)
    page.fill('input[name="max_tokens"]', "24")
    page.fill('textarea[name="prompt"]', "Name three colours.")
    page.click("#send")
    figures = page.locator('.figures[data-done="1"]')
    expect(figures).to_have_count(2, timeout=180_000)
    for text in figures.all_inner_texts():
        assert re.search(r"TTFT \d+ ms · [\d.]+ tok/s · \d+ prompt \+ \d+ completion tokens", text), text
    answers = page.locator(".msg.assistant .answer").all_inner_texts()
    assert len(answers) == 2 and all(a.strip() for a in answers)
    assert secret_of_demo not in page.content()
    shot(page, "07-playground")

    # the live log, with search
    page.goto(f"{base}/deployments/{NAME}/logs")
    expect(page.locator("#log")).to_contain_text("chat/completions", timeout=30_000)
    page.fill("#log-search", "chat/completions")
    expect(page.locator("#log mark").first).to_be_visible()
    shot(page, "08-logs")

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

    # down, confirmed in the page
    page.goto(f"{base}/deployments/{NAME}")
    page.once("dialog", lambda d: d.accept())
    page.click("button.danger")
    expect(page.locator("#job-state")).to_have_text("done", timeout=120_000)
    shot(page, "13-down")
    page.goto(base + "/")
    expect(page.locator(f'tr[data-name="{NAME}"]')).to_have_count(0)
    assert NAME not in run_cli(stack["env"], "ls", "--json").stdout
