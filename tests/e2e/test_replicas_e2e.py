"""Two real vLLM replicas behind the gateway `up` runs (`llmnest up --replicas 2`): both serve, usage is
exact across them, a killed replica or gateway costs no request that starts after the kill, and a
rolling redeploy never stops the endpoint from answering."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from llmnest.targets.local.supervisor import LIVENESS_ENV
from tests.conftest import cli_env, free_port, processes_of, run_cli, serving_on
from tests.e2e.conftest import Demo
from tests.e2e.test_gateway_e2e import vllm_tokens

pytestmark = pytest.mark.e2e


def _deployed(tmp_path_factory: pytest.TempPathFactory, name: str, *up_args: str) -> Iterator[Demo]:
    """`llmnest up --name NAME *up_args` of the demo model; on teardown `down`, which must leave nothing behind."""
    home = tmp_path_factory.mktemp(f"llmnest-{name}")
    env = {**cli_env(home), LIVENESS_ENV: "3"}
    port = free_port()
    done = run_cli(env, "up", "--name", name, *up_args, "--port", str(port), "--json", timeout=1800)
    assert done.returncode == 0, f"llmnest up {' '.join(up_args)} failed:\n{done.stderr}"
    info = json.loads(done.stdout)
    yield Demo(name, info["base_url"], info["api_key"], info["served_model_name"], home, env, port)
    down = run_cli(env, "down", name)
    assert down.returncode == 0, down.stderr
    assert not serving_on(port) and not processes_of(home), "down left processes behind"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    yield from _deployed(tmp_path_factory, "pair", "--replicas", "2")


@dataclass
class Outcome:
    started: float
    ended: float
    ok: bool
    detail: str
    usage: tuple[int, int] = (0, 0)  # prompt and completion tokens, as the client received them


class Load:
    """Requests from `workers` threads until stopped, every outcome kept. With `mixed`, worker i uses
    key i % 2 and each request is one of chat or completions, streamed (usage asked for) or not."""

    def __init__(self, demo: Demo, keys: list[str], workers: int = 2, mixed: bool = False) -> None:
        self.demo, self.keys, self.mixed = demo, keys, mixed
        self.outcomes: list[Outcome] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(workers)]

    def _one(self, n: int, key: str) -> Outcome:
        t0 = time.monotonic()
        chat, stream = (n % 2 == 0, n % 3 != 0) if self.mixed else (True, True)
        body: dict = {"model": self.demo.model, "max_tokens": 8 + n % 5, "stream": stream,
                      **({"stream_options": {"include_usage": True}} if stream else {})}
        if chat:
            body["messages"] = [{"role": "user", "content": f"Say a word about the number {n}."}]
        else:
            body["prompt"] = f"The number {n} is"
        url = f"{self.demo.base_url}/{'chat/completions' if chat else 'completions'}"
        headers = {"Authorization": f"Bearer {key}"}
        try:
            if not stream:
                resp = httpx.post(url, json=body, headers=headers, timeout=90)
                if resp.status_code != 200:
                    return Outcome(t0, time.monotonic(), False, f"HTTP {resp.status_code}: {resp.text[:200]}")
                used = resp.json()["usage"]
                return Outcome(t0, time.monotonic(), True, "", (used["prompt_tokens"], used["completion_tokens"]))
            with httpx.stream("POST", url, json=body, timeout=90, headers=headers) as resp:
                if resp.status_code != 200:
                    return Outcome(t0, time.monotonic(), False, f"HTTP {resp.status_code}: {resp.read()[:200]!r}")
                events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
        except httpx.HTTPError as exc:
            return Outcome(t0, time.monotonic(), False, type(exc).__name__)
        errors = [e for e in events if '"error"' in e]
        ok = not errors and events[-1:] == ["[DONE]"]
        usage = [json.loads(e)["usage"] for e in events[:-1] if ok and json.loads(e).get("usage")]
        received = (usage[-1]["prompt_tokens"], usage[-1]["completion_tokens"]) if usage else (0, 0)
        return Outcome(t0, time.monotonic(), ok, errors[0] if errors else ("" if ok else "no [DONE]"), received)

    def _run(self, worker: int) -> None:
        n = worker * 100_000
        while not self.stop.is_set():
            self.outcomes.append(self._one(n, self.keys[worker % len(self.keys)]))
            n += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in self.threads), "a request hung"


def _key(demo: Demo, name: str) -> str:
    done = demo.cli("keys", "create", name, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["key"]


def _requests_of(demo: Demo, key_name: str) -> dict:
    rows = json.loads(demo.cli("usage", "--by", "key", "--json").stdout)
    return next(r for r in rows if r["key_name"] == key_name)


def _wait_all_ready(demo: Demo, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = demo.status()
        if info["ready_replicas"] == 2 and info["status"] == "ready":
            return info
        time.sleep(1)
    raise AssertionError(f"replicas not ready again: {info['replicas']}")


def test_both_replicas_serve_and_usage_is_exact(pair) -> None:
    """A mixed run (chat and completions, streamed and not, two keys, two replicas): the usage rows sum to
    what the clients received and to the change in the replicas' own vLLM token counters."""
    keys = [_key(pair, "mixed-a"), _key(pair, "mixed-b")]
    roots = [f"http://127.0.0.1:{r['port']}" for r in pair.status()["replicas"]]
    before = [vllm_tokens(root) for root in roots]
    with Load(pair, keys, workers=4, mixed=True) as load:
        time.sleep(30)
    assert load.outcomes and all(o.ok for o in load.outcomes), [o.detail for o in load.outcomes if not o.ok]
    after = [vllm_tokens(root) for root in roots]
    served = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
    assert all(s > 0 for s in served), f"a replica got no work: {served}"
    rows = [_requests_of(pair, "mixed-a"), _requests_of(pair, "mixed-b")]
    assert sum(r["requests"] for r in rows) == len(load.outcomes) and all(r["requests"] for r in rows)
    recorded = (sum(r["prompt_tokens"] for r in rows), sum(r["completion_tokens"] for r in rows))
    received = (sum(o.usage[0] for o in load.outcomes), sum(o.usage[1] for o in load.outcomes))
    engines = (sum(a[0] - b[0] for a, b in zip(after, before, strict=True)), sum(served))
    assert recorded == received == engines


def test_a_killed_replica_costs_no_request_that_starts_after_it(pair) -> None:
    key = _key(pair, "replica-fault")
    victim = pair.status()["replicas"][1]
    with Load(pair, [key]) as load:
        time.sleep(5)
        killed_at = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        time.sleep(15)
    later = [o for o in load.outcomes if o.started > killed_at + 0.5]  # the OS needs a moment to close its port
    assert later and all(o.ok for o in later), [o.detail for o in later if not o.ok]
    during = [o for o in load.outcomes if not o.ok]
    assert all("replica failed mid-stream" in o.detail or "HTTP 5" in o.detail for o in during), during
    info = _wait_all_ready(pair)
    assert info["replicas"][1]["restarts"] == victim["restarts"] + 1 and "SIGKILL" in info["replicas"][1]["last_error"]


def test_a_killed_gateway_comes_back_and_loses_no_completed_usage(pair) -> None:
    key = _key(pair, "gateway-fault")
    gateway = pair.status()["gateway"]
    with Load(pair, [key]) as load:
        time.sleep(5)
        os.kill(gateway["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while pair.status()["gateway"]["restarts"] == gateway["restarts"]:
            assert time.monotonic() < deadline, "the gateway was not restarted"
            time.sleep(0.5)
        time.sleep(10)
    completed = [o for o in load.outcomes if o.ok]
    assert completed and load.outcomes[-1].ok, [o.detail for o in load.outcomes[-3:]]
    assert _requests_of(pair, "gateway-fault")["requests"] >= len(completed)
    assert "SIGKILL" in pair.status()["gateway"]["last_error"]


def test_rolling_redeploy_never_stops_answering(pair) -> None:
    key = _key(pair, "rolling")
    with Load(pair, [key], workers=1) as load:
        done = pair.cli("redeploy", "pair", "--set", "max_model_len=2048", "--json", timeout=1800)
        time.sleep(2)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["api_key"] == pair.api_key
    assert load.outcomes and all(o.ok for o in load.outcomes), [o.detail for o in load.outcomes if not o.ok]
    info = _wait_all_ready(pair)
    for replica in info["replicas"]:
        models = httpx.get(f"http://127.0.0.1:{replica['port']}/v1/models", timeout=30,
                           headers={"Authorization": f"Bearer {pair.engine_key}"}).json()
        assert models["data"][0]["max_model_len"] == 2048


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One replica behind the gateway: a redeploy surges (this machine has a core and memory for a second)."""
    yield from _deployed(tmp_path_factory, "single")


def test_a_bad_flag_on_one_replica_leaves_the_old_engine_serving_throughout(single) -> None:
    before = single.status()
    with Load(single, [single.api_key], workers=1) as load:
        done = single.cli("redeploy", "single", "--set", "no-such-engine-flag=1", "--json", timeout=1800)
    assert done.returncode == 1, done.stdout
    assert "surge" in done.stderr and "kept serving on its previous spec throughout" in done.stderr, done.stderr
    assert load.outcomes and all(o.ok for o in load.outcomes), [o.detail for o in load.outcomes if not o.ok]
    after = single.status()
    assert "no-such-engine-flag" not in single.cli("show", "single", "--as", "command").stdout
    assert [(r["replica"], r["pid"]) for r in after["replicas"]] == [(r["replica"], r["pid"]) for r in before["replicas"]]


def test_a_redeploy_of_one_replica_surges_and_never_stops_answering(single) -> None:
    before = single.status()["replicas"]
    with Load(single, [single.api_key], workers=1) as load:
        done = single.cli("redeploy", "single", "--set", "max_model_len=2048", "--json", timeout=1800)
        time.sleep(2)  # requests on the new engine alone, the old one stopped
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["replaced"].startswith("surge"), info["replaced"]
    assert load.outcomes and all(o.ok for o in load.outcomes), [o.detail for o in load.outcomes if not o.ok]
    after = single.status()["replicas"]
    assert [r["replica"] for r in after] == [1 - before[0]["replica"]] and after[0]["status"] == "ready"
    models = httpx.get(f"http://127.0.0.1:{after[0]['port']}/v1/models", timeout=30,
                       headers={"Authorization": f"Bearer {single.engine_key}"}).json()
    assert models["data"][0]["max_model_len"] == 2048
    lines = single.cli("logs", "single", "--replica", str(after[0]["replica"]), "-n", "50")
    assert lines.returncode == 0 and lines.stdout.strip(), lines.stderr


def test_scale_up_and_down_keeps_the_running_replica_and_never_stops_answering(single) -> None:
    """`scale single 2` starts one engine next to the running one (untouched, serving throughout), the gateway
    routes to it; `scale single 1` drains the highest-index replica and stops it, no request failing."""
    (kept,) = single.status()["replicas"]
    with Load(single, [single.api_key], workers=2) as load:
        up = single.cli("scale", "single", "2", "--json", timeout=1800)
        time.sleep(2)
    assert up.returncode == 0, up.stderr
    assert load.outcomes and all(o.ok for o in load.outcomes), [o.detail for o in load.outcomes if not o.ok]
    replicas = single.status()["replicas"]
    assert [(r["pid"], r["restarts"]) for r in replicas if r["replica"] == kept["replica"]] == [
        (kept["pid"], kept["restarts"])]
    (new,) = [r for r in replicas if r["replica"] != kept["replica"]]
    assert new["status"] == "ready" and new["replica"] == 1 - kept["replica"]
    root = f"http://127.0.0.1:{new['port']}"
    before = vllm_tokens(root)
    with Load(single, [single.api_key], workers=2) as load:
        time.sleep(15)
    assert vllm_tokens(root)[1] > before[1], "the gateway sent the new replica no request"
    with Load(single, [single.api_key], workers=2) as load:
        down = single.cli("scale", "single", "1", "--json", timeout=600)
        time.sleep(2)
    assert down.returncode == 0, down.stderr
    assert load.outcomes and all(o.ok for o in load.outcomes), [o.detail for o in load.outcomes if not o.ok]
    (left,) = single.status()["replicas"]
    assert left["replica"] == 0 and left["pid"] == next(r["pid"] for r in replicas if r["replica"] == 0)
    assert "replicas: 1" in single.cli("show", "single").stdout
