"""One real demo deployment (vLLM CPU build + SmolLM2-135M), made by `llmnest up`, shared by the session."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from llmnest.targets.local.supervisor import LIVENESS_ENV
from tests.conftest import cli_env, free_port, processes_of, run_cli, serving_on


@dataclass
class Demo:
    name: str
    base_url: str
    api_key: str
    model: str
    home: Path
    env: dict[str, str] = field(repr=False)
    port: int = 0

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "llmnest"]

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run_cli(self.env, *args, timeout=timeout)

    def status(self) -> dict:
        done = self.cli("status", self.name, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def chat(self, prompt: str, *, key: str | None = None, max_tokens: int = 32) -> httpx.Response:
        return httpx.post(
            f"{self.base_url}/chat/completions",
            headers={"Authorization": f"Bearer {self.api_key if key is None else key}"},
            json={"model": self.model, "messages": [{"role": "user", "content": prompt}],
                  "max_tokens": max_tokens, "temperature": 0},
            timeout=120,
        )

    def replica(self, index: int = 0) -> dict:
        """The status of one engine replica: pid, supervisor_pid, port, restarts."""
        return self.status()["replicas"][index]

    @property
    def engine_key(self) -> str:
        """The key the engines take behind the gateway (nobody's user key)."""
        return (self.home / "deployments" / self.name / "engine_key").read_text()

    def wait_ready(self, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.status()
            if info["status"] == "ready":
                return info
            time.sleep(1)
        raise AssertionError(f"{self.name} not ready after {timeout} s: {info}")


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """`llmnest up` of the demo model; on teardown `llmnest down`, which must leave no process behind."""
    home = tmp_path_factory.mktemp("llmnest-e2e")
    env = {**cli_env(home), LIVENESS_ENV: "3"}  # a hang is noticed within about 15 s
    port = free_port()
    done = run_cli(env, "up", "--name", "demo", "--port", str(port), "--json", timeout=1200)
    assert done.returncode == 0, f"llmnest up failed:\n{done.stderr}"
    info = json.loads(done.stdout)
    demo = Demo("demo", info["base_url"], info["api_key"], info["served_model_name"], home, env, port)
    yield demo
    assert processes_of(home), "the deployment's processes are found by their LLMNEST_HOME"
    down = run_cli(env, "down", "demo")
    assert down.returncode == 0, down.stderr
    assert "and the gateway on port" in down.stdout
    assert not serving_on(port) and not processes_of(home), "down left processes behind"
