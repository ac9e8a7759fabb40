"""A redeploy on this machine whose new spec fails is rolled back: the old spec is put back, started again and
answers before `redeploy` returns. Driven through the real code from `create` on: the rollout, the units'
readiness polling, the store, and each unit's supervisor loop (`Supervisor.run`, in a thread of this test).
What stands in: the runner, in place of the engine process (starting vLLM is the e2e tests' job,
tests/e2e/test_replicas_e2e.py), which exits at once with vLLM's own complaint when its spec carries a flag
the engine rejects, else runs until stopped; the readiness and liveness probes, which answer for a runner
that runs; and, behind the gateway, the gateway's answer and its drain (the gateway has tests of its own)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest

from llmnest import state, targets
from llmnest.spec_builder import UpRequest
from llmnest.errors import LlmnestError
from llmnest.probe import ProbeResult
from llmnest.spec import DeploymentSpec, apply_sets
from llmnest.targets.base import Context
from llmnest.targets.local import gateway as local_gateway, supervisor, surge as local_surge, units_store
from llmnest.targets.local.runners import replica_launch
from tests.unit.threaded_supervisors import ThreadedSupervisors

BAD_FLAG = "no-such-engine-flag"
Rejects = Callable[[DeploymentSpec, units_store.Unit], bool]


class FakeEngine:
    """The runner of one unit: its spec is read at each start, as the real runner reads it."""

    def __init__(self, unit_id: str, engines: Engines) -> None:
        self.unit_id, self.engines, self.running = unit_id, engines, False
        self.what = "gateway" if unit_id.startswith("gateway/") else "engine"

    def start(self, attempt: int) -> int | None:
        unit = units_store.get(self.unit_id)
        if self.what == "engine":
            spec, _ = replica_launch(unit)
            self.engines.started.append((unit.id, dict(spec.engine_args)))
            self.running = not self.engines.rejects(spec, unit)
        else:
            self.running = True
        return None

    def exit_reason(self) -> str | None:
        return None if self.running else f"{self.what} exited with code 2"

    def kill(self) -> None:
        self.running = False

    def stop(self, grace: float) -> None:
        self.running = False

    def recent_log(self) -> list[str]:
        return [] if self.running else [f"vllm: error: unrecognized arguments: --{BAD_FLAG} 1"]


class Engines(ThreadedSupervisors):
    """Each unit's supervisor started in a thread (not a detached process) and stopped by asking it to."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch)
        self.rejects: Rejects = lambda spec, unit: BAD_FLAG in spec.engine_args
        self.started: list[tuple[str, dict]] = []
        monkeypatch.setattr(supervisor, "healthy", lambda url, timeout: self.answers(url))
        monkeypatch.setattr(supervisor, "chat_once", lambda url, model, key, timeout: self.probe(url))
        monkeypatch.setattr(local_gateway, "chat_once", lambda url, model, key, timeout: ProbeResult(True, "ready"))
        monkeypatch.setattr(local_surge, "drain", lambda spec, unit, on_wait: None)

    def runner(self, unit_id: str) -> FakeEngine:
        return FakeEngine(unit_id, self)

    def answers(self, url: str) -> bool:
        return any(s.runner.running and units_store.get(s.id).base_url == url
                   for s, _ in list(self.supervisors.values()))

    def probe(self, url: str) -> ProbeResult:
        return ProbeResult(True, "ready") if self.answers(url) else ProbeResult(False, "down")

    def running(self) -> list[str]:
        return sorted(uid for uid, (s, _) in list(self.supervisors.items()) if s.runner.running)

    def stop_all(self) -> None:
        for sup, thread in list(self.supervisors.values()):
            sup.stopping = True
            thread.join(10)


@pytest.fixture
def engines(tmp_path, monkeypatch) -> Iterator[Engines]:
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LLMNEST_GATEWAY_DB", raising=False)
    monkeypatch.setenv("LLMNEST_LIVENESS_SECONDS", "0.2")
    fakes = Engines(monkeypatch)
    yield fakes
    fakes.stop_all()


def create(name: str, options: dict) -> state.Deployment:
    """A deployment made by the local target's own `create` (its weights' folder given, nothing fetched)."""
    target = targets.get("local")
    resolved = target.resolve(UpRequest(model="", name=name, port=local_gateway.free_port(), options=options))
    weights = {"model_path": "/models/smollm2-135m"}
    resolved = dataclasses.replace(resolved, spec=resolved.spec.model_copy(update=weights))
    return target.create(resolved, Context(timeout=30)).deployment


def test_a_new_spec_the_engine_rejects_is_rolled_back_and_the_old_one_answers_again(engines) -> None:
    dep = create("solo", {"no_gateway": True})
    key, engines.started = state.api_key("solo"), []
    said: list[str] = []
    with pytest.raises(LlmnestError) as failed:
        targets.get("local").redeploy(dep, apply_sets(dep.spec, {BAD_FLAG: "1"}), Context(say=said.append, timeout=30))
    assert "the new spec failed: engine exited with code 2 during start-up" in failed.value.message
    assert f"unrecognized arguments: --{BAD_FLAG}" in failed.value.message
    assert "solo is back on its previous spec and answers" in failed.value.message
    assert engines.started == [("solo/0", {BAD_FLAG: "1"}), ("solo/0", {})]  # the new spec, then the old one
    assert "the new spec of solo failed; putting the previous spec back" in said
    after = state.get("solo")
    assert (after.spec, after.status, state.api_key("solo")) == (dep.spec, "ready", key)
    assert [(u.id, u.status, u.last_error) for u in after.replicas] == [("solo/0", "ready", None)]
    assert engines.running() == ["solo/0"]


def test_a_replica_failing_on_the_new_spec_puts_the_replaced_ones_back_one_at_a_time(engines, monkeypatch) -> None:
    monkeypatch.setattr(local_surge, "choose", lambda old, new, model, units: local_surge.Choice(False, "no room"))
    dep = create("pair", {"replicas": 2})
    port = dep.spec.port
    engines.started = []
    engines.rejects = lambda spec, unit: BAD_FLAG in spec.engine_args and unit.index == 1  # e.g. too little memory
    said: list[str] = []
    with pytest.raises(LlmnestError) as failed:
        targets.get("local").redeploy(dep, apply_sets(dep.spec, {BAD_FLAG: "1"}), Context(say=said.append, timeout=30))
    assert "engine exited with code 2 during start-up" in failed.value.message
    assert engines.started == [("pair/0", {BAD_FLAG: "1"}), ("pair/1", {BAD_FLAG: "1"}),  # replica 1 fails
                               ("pair/0", {}), ("pair/1", {})]  # both back on the old spec, one at a time
    assert "replica 1 failed on the new spec; putting replicas back on the old one" in said
    after = state.get("pair")
    assert (after.spec, after.status) == (dep.spec, "ready")
    assert [(u.id, u.status) for u in after.replicas] == [("pair/0", "ready"), ("pair/1", "ready")]
    assert engines.running() == [f"gateway/{port}", "pair/0", "pair/1"]  # the gateway in front never went away
