"""`llmnest keys`, `llmnest usage` and `llmnest gateway serve` through the real CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from llmnest.cli.main import app

from tests.conftest import cli_env, free_port
from tests.unit.gateway.conftest import start_replica


def serve_gateway(home, tmp_path, replica, port: int) -> subprocess.Popen:
    """`llmnest gateway serve` over one stand-in replica, once it answers /health."""
    config = tmp_path / "upstreams.json"
    config.write_text(json.dumps([{"model": replica.model, "replica_id": replica.replica,
                                   "base_url": replica.base_url, "internal_key": replica.key}]))
    proc = subprocess.Popen([sys.executable, "-m", "llmnest", "gateway", "serve", "--port", str(port),
                             "--upstreams", str(config)], env=cli_env(home), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            assert time.monotonic() < deadline and proc.poll() is None, "gateway did not start"
            time.sleep(0.1)


@pytest.fixture
def cli_here(home, monkeypatch):
    """The real CLI in this process (typer's runner), against a fresh LLMNEST_HOME: quicker than a
    subprocess per call for the many calls below."""
    monkeypatch.setenv("LLMNEST_HOME", str(home))
    monkeypatch.delenv("LLMNEST_GATEWAY_DB", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_keys_lifecycle_and_exit_codes(cli_here, home) -> None:
    cli = cli_here
    made = cli("keys", "create", "alice", "--models", "m1,m2", "--rpm", "5", "--token-budget", "1000",
               "--budget-period", "month", "--expires", "2999-01-01", "--json")
    assert made.exit_code == 0, made.stderr
    secret = json.loads(made.stdout)
    assert secret["name"] == "alice" and secret["key"].startswith("sk-")
    assert cli("keys", "create", "alice").exit_code == 3
    for bad in (["--rpm", "0"], ["--tpm", "-5"], ["--token-budget", "5"], ["--budget-period", "week", "--token-budget", "1"],
                ["--expires", "2000-01-01"], ["--rpm", "many"]):
        done = cli("keys", "create", "bob", *bad)
        assert done.exit_code == 2 and "Traceback" not in done.output, (bad, done.output)
    listed = cli("keys", "ls", "--json")
    assert listed.exit_code == 0 and secret["key"] not in listed.stdout
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["status"], row["models"], row["rpm"], row["token_budget"], row["budget_used"]) == (
        "alice", "active", ["m1", "m2"], 5, 1000, 0)
    assert cli("keys", "update", "alice", "--clear", "rpm", "--tpm", "50").exit_code == 0
    (row,) = json.loads(cli("keys", "ls", "--json").stdout)
    assert row["rpm"] is None and row["tpm"] == 50
    assert cli("keys", "update", "nobody", "--rpm", "1").exit_code == 4
    assert cli("keys", "revoke", "alice").exit_code == 0
    assert json.loads(cli("keys", "ls", "--json").stdout)[0]["status"] == "revoked"
    assert "alice" in cli("keys", "ls").stdout
    assert (home / "gateway.db").stat().st_mode & 0o777 == 0o600
    assert cli("usage", "--by", "week").exit_code == 2
    assert cli("usage", "--since", "whenever").exit_code == 2


@pytest.fixture
def served(cli, home, tmp_path):
    """(gateway URL, a key, the gateway process) over one stand-in replica; both stopped afterwards."""
    replica = start_replica("m1", "r1")
    key = json.loads(cli("keys", "create", "app", "--json").stdout)["key"]
    port = free_port()
    proc = serve_gateway(home, tmp_path, replica, port)
    yield f"http://127.0.0.1:{port}", key, proc
    proc.kill()
    replica.proc.kill()


def test_gateway_serve_routes_records_and_stops(cli, served, tmp_path) -> None:
    url, key, proc = served
    answer = httpx.post(url + "/v1/completions", headers={"Authorization": f"Bearer {key}"},
                        json={"model": "m1", "prompt": "a b", "max_tokens": 3}, timeout=10).json()
    assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    busy = cli("gateway", "serve", "--port", url.rsplit(":", 1)[1], "--upstreams", str(tmp_path / "upstreams.json"))
    assert busy.returncode == 3 and "pick another --port" in busy.stderr
    rows = json.loads(cli("usage", "--by", "model", "--json").stdout)
    assert [(r["key_name"], r["model"], r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [
        ("*", "m1", 1, 2, 3)]
    csv_lines = cli("usage", "--by", "day", "--csv").stdout.splitlines()
    assert csv_lines[0].startswith("period,key_name,model") and ",app,m1,1,0,2,3," in csv_lines[1]
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so a supervisor sees why it ended
    assert proc.wait(timeout=20) == -signal.SIGTERM and "Application shutdown complete" in proc.stderr.read()


def test_gateway_serve_rejects_bad_upstreams_file(cli, tmp_path) -> None:
    bad = tmp_path / "u.json"
    bad.write_text("[{]")
    done = cli("gateway", "serve", "--port", str(free_port()), "--upstreams", str(bad))
    assert done.returncode == 2 and "--upstreams" in done.stderr


def test_kill_9_of_the_gateway_loses_no_completed_requests_usage(cli, served) -> None:
    """Usage is written before the client gets the end of its answer, so whatever a client saw
    complete is on disk when the gateway is killed right after."""
    url, key, proc = served
    auth = {"Authorization": f"Bearer {key}"}
    for i in range(5):
        body = {"model": "m1", "prompt": "a b c", "max_tokens": 2 + i, "stream": i % 2 == 1}
        assert httpx.post(url + "/v1/completions", headers=auth, json=body, timeout=10).status_code == 200
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    (row,) = json.loads(cli("usage", "--json").stdout)
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (5, 15, 2 + 3 + 4 + 5 + 6)


def test_gateway_serve_rejects_a_bad_metrics_network(cli, tmp_path) -> None:
    done = cli("gateway", "serve", "--port", str(free_port()), "--metrics-from", "192.168.0.0/16,not-a-net")
    assert done.returncode == 2 and "--metrics-from" in done.stderr and "Traceback" not in done.stderr


def test_keys_create_takes_an_existing_secret_from_a_file_and_never_prints_it(cli_here, home, tmp_path) -> None:
    """How the instance's bootstrap imports the key `up` printed: the secret is in a 0600 file, on no command line."""
    from llmnest.gateway import keys
    from llmnest.gateway.db import Database

    secret = "sk-given-by-up-0123456789"
    key_file = tmp_path / "key"
    key_file.write_text(secret + "\n")
    made = cli_here("keys", "create", "default", "--key-file", str(key_file), "--models", "m1", "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout) == {"name": "default", "prefix": secret[:7]} and secret not in made.output
    found = keys.authenticate(Database(f"sqlite:///{home / 'gateway.db'}"), secret)
    assert found is not None and found.name == "default" and found.models == ["m1"]
    again = cli_here("keys", "create", "other", "--key-file", str(key_file))
    assert again.exit_code == 3 and "already" in again.output
    for bad in ("", "two words here", "short"):
        key_file.write_text(bad)
        done = cli_here("keys", "create", "bad", "--key-file", str(key_file))
        assert done.exit_code == 2 and "--key-file" in done.output and "Traceback" not in done.output, bad
    missing = cli_here("keys", "create", "bad", "--key-file", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "--key-file" in missing.output
