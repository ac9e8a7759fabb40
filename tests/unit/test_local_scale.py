"""`llmnest scale NAME N` on this machine: replicas added next to the running ones and removed from the top,
the running ones untouched; refusals before anything starts.

Driven through the real code from `create` on: the lifecycle, the scale, the units' readiness polling, the
store, each unit's supervisor loop (`Supervisor.run`, in a thread of this test) with the real process runner,
and the real gateway `up` runs (`llmnest gateway serve --deployments-on-port`, a process), whose /metrics say
which replicas it routes to and through which chats are sent with the printed key. What stands in for vLLM
(starting it is tests/e2e/test_replicas_e2e.py's job): the OpenAI stand-in tests/fakes/openai_upstream.py,
run by the process runner in place of the engine command, on the unit's port with the engines' key; a
replica made to fail runs a command that exits with vLLM's complaint about memory instead. The machine's
free memory and cores are given to the room check, so that it does not depend on this machine's load."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from llmnest import lifecycle, state, targets
from llmnest.errors import Conflict, LlmnestError
from llmnest.runtimes.process import pid_alive
from llmnest.catalog import demo_model
from llmnest.spec_builder import UpRequest
from llmnest.targets.base import Capability, Context
from llmnest.targets.local import surge as local_surge, units as local_units, units_store
from llmnest.targets.local.runners import CPU_BIND, ChildRunner, GatewayRunner, replica_launch
from tests.unit.threaded_supervisors import ThreadedSupervisors
from tests.conftest import cli_env, free_port, run_cli

GIB = 2**30
STAND_IN = Path(__file__).resolve().parents[1] / "fakes" / "openai_upstream.py"
OOM = "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`"


class StandInRunner(ChildRunner):
    """The real process runner with the OpenAI stand-in as the engine command, launched as the replica's spec
    says (its port, the engines' key, its cores); a replica the test rejects exits with vLLM's complaint."""

    def __init__(self, unit: units_store.Unit, engines: Engines) -> None:
        super().__init__(unit)
        self.engines = engines

    def command(self) -> tuple[list[str], dict[str, str]]:
        unit = units_store.get(self.unit.id)
        spec, key = replica_launch(unit)
        self.engines.launched.append((unit.id, spec.env.get(CPU_BIND)))
        if self.engines.rejects(unit):
            return [sys.executable, "-c", f"raise SystemExit({OOM!r})"], {}
        return [sys.executable, str(STAND_IN), "--port", str(spec.port), "--model", spec.served_model_name,
                "--api-key", str(key), "--replica", unit.id], {}


class Engines(ThreadedSupervisors):
    """Each unit's supervisor in a thread (not a detached process), stopped by asking it to."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch)
        self.rejects: Callable[[units_store.Unit], bool] = lambda unit: False
        self.launched: list[tuple[str, str | None]] = []

    def runner(self, unit_id: str) -> ChildRunner:
        unit = units_store.get(unit_id)
        return GatewayRunner(unit) if unit.kind == "gateway" else StandInRunner(unit, self)

    def stop_all(self) -> None:
        for unit_id in list(self.supervisors):
            self.stop(units_store.Unit(unit_id, "engine", None, 0, "", 0))


@pytest.fixture
def engines(tmp_path, monkeypatch) -> Iterator[Engines]:
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LLMNEST_GATEWAY_DB", raising=False)
    monkeypatch.setenv("LLMNEST_LIVENESS_SECONDS", "2")
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    monkeypatch.setattr(local_surge, "host_memory_bytes", lambda field: 64 * GIB)
    fakes = Engines(monkeypatch)
    yield fakes
    fakes.stop_all()


def create(name: str, options: dict | None = None) -> state.Deployment:
    """A deployment made by the local target's own `create` (its weights' folder given, nothing fetched)."""
    target = targets.get("local")
    resolved = target.resolve(UpRequest(model="", name=name, port=free_port(), options=options or {}))
    resolved = dataclasses.replace(resolved, spec=resolved.spec.model_copy(update={"model_path": "/models/smollm2"}))
    return target.create(resolved, Context(timeout=60)).deployment


def chats_reach(dep: state.Deployment, n: int = 24) -> dict[int, int]:
    """Send `n` chats with distinct prompts through the gateway with the deployment's key (each must be
    answered); how many each replica's stand-in served of them, by replica index."""
    before = {u.index: served(u) for u in state.get(dep.name).replicas}
    base = f"http://127.0.0.1:{dep.spec.port}/v1"
    for _ in range(n):
        body = {"model": dep.spec.served_model_name, "max_tokens": 2,
                "messages": [{"role": "user", "content": f"{uuid.uuid4().hex} hello"}]}
        answer = httpx.post(f"{base}/chat/completions", json=body, timeout=30,
                            headers={"Authorization": f"Bearer {state.api_key(dep.name)}"})
        assert answer.status_code == 200, answer.text
    return {u.index: served(u) - before.get(u.index, 0) for u in state.get(dep.name).replicas}


def served(unit: units_store.Unit) -> int:
    return httpx.get(f"http://127.0.0.1:{unit.port}/stats", timeout=10).json()["requests"]


def in_rotation(dep: state.Deployment) -> set[str]:
    """The replicas the gateway says it routes new requests to."""
    seen = local_surge.rotation(state.get(dep.name).spec)
    assert seen is not None, "the gateway exports its rotation"
    return {unit_id for unit_id, taking in seen.items() if taking}


def test_scale_1_to_3_to_1_keeps_the_first_replica_and_the_gateway_routes_to_the_new_ones(engines) -> None:
    dep = create("grow")
    first = state.get("grow").replicas[0]
    assert first.pid and pid_alive(first.pid)
    said: list[str] = []
    line = lifecycle.scale("grow", 3, Context(say=said.append, timeout=60))
    assert line == "grow: 1 -> 3 replicas (started 1, 2; the gateway routes to them)"
    assert any(s.startswith("starting replicas 1, 2 of grow next to 1 serving") for s in said)
    grown = state.get("grow")
    assert grown.spec.replicas == 3 and grown.target_state.scaling_to is None
    assert [(u.index, u.status) for u in grown.replicas] == [(0, "ready"), (1, "ready"), (2, "ready")]
    kept = grown.replicas[0]
    assert (kept.pid, kept.supervisor_pid, kept.port, kept.started_at, kept.restarts) == (
        first.pid, first.supervisor_pid, first.port, first.started_at, 0)
    assert sorted(engines.launched) == [("grow/0", None), ("grow/1", "1"), ("grow/2", "2")]  # a core each of 4, for 3
    assert in_rotation(dep) == {"grow/0", "grow/1", "grow/2"}
    reached = chats_reach(dep)
    assert reached[1] > 0 and reached[2] > 0, reached

    leaving = [u.pid for u in grown.replicas[1:]]
    line = lifecycle.scale("grow", 1, Context(say=said.append, timeout=60))
    assert line == "grow: 3 -> 1 replica (drained and stopped 1, 2)"
    assert "draining replicas 1, 2 of grow out of the gateway's rotation" in said
    shrunk = state.get("grow")
    assert shrunk.spec.replicas == 1 and [(u.id, u.pid) for u in shrunk.replicas] == [("grow/0", first.pid)]
    assert pid_alive(first.pid) and not any(pid_alive(p) for p in leaving)
    assert chats_reach(dep, 6) == {0: 6}
    assert in_rotation(dep) == {"grow/0"}
    assert lifecycle.scale("grow", 1, Context()) == "grow already runs 1 replica: nothing changed"


def test_a_new_replica_that_fails_leaves_the_deployment_serving_on_its_old_count(engines) -> None:
    dep = create("fail")
    first = state.get("fail").replicas[0]
    engines.rejects = lambda unit: unit.index == 2  # e.g. not enough memory left for its KV cache
    with pytest.raises(LlmnestError) as failed:
        lifecycle.scale("fail", 3, Context(timeout=60))
    assert "engine exited with code 1 during start-up: ValueError: No available memory" in failed.value.message
    assert failed.value.message.endswith("the new replicas were stopped and fail kept serving on its 1 replica "
                                         "throughout")
    after = state.get("fail")
    assert after.spec == dep.spec and after.target_state.scaling_to is None
    assert [(u.id, u.pid, u.status) for u in after.replicas] == [("fail/0", first.pid, "ready")]
    assert sorted(unit_id for unit_id, _ in engines.launched) == ["fail/0", "fail/1", "fail/2"]
    assert sorted(engines.supervisors) == ["fail/0", f"gateway/{dep.spec.port}"]  # replica 1 came up, and went
    assert chats_reach(dep, 4) == {0: 4}
    assert in_rotation(dep) == {"fail/0"}


def test_ctrl_c_while_new_replicas_start_stops_them_and_changes_nothing(engines, monkeypatch) -> None:
    dep = create("int")
    first = state.get("int").replicas[0]

    def interrupted(name, ctx, only=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(local_units, "wait_ready", interrupted)
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        lifecycle.scale("int", 2, Context(say=said.append))
    assert "interrupted: stopping the new replicas of int; the others serve as before" in said
    after = state.get("int")
    assert after.spec == dep.spec and [(u.id, u.pid) for u in after.replicas] == [("int/0", first.pid)]
    assert sorted(engines.supervisors) == [f"gateway/{dep.spec.port}", "int/0"]
    assert state.get("int").target_state.scaling_to is None


def test_ctrl_c_while_replicas_drain_puts_them_back_in_rotation(engines, monkeypatch) -> None:
    dep = create("pair", {"replicas": 2})

    def interrupted(spec, unit, on_wait):
        raise KeyboardInterrupt

    monkeypatch.setattr(local_surge, "drain", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lifecycle.scale("pair", 1, Context())
    after = state.get("pair")
    assert after.spec == dep.spec and [(u.index, u.status) for u in after.replicas] == [(0, "ready"), (1, "ready")]


def test_no_room_is_refused_naming_what_is_short_with_nothing_started(engines, monkeypatch) -> None:
    dep = create("tight")
    engines.launched.clear()
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with pytest.raises(Conflict) as cores:
        lifecycle.scale("tight", 3, Context())
    assert cores.value.message == ("no room for 2 more replica(s) of tight: 3 engines need a core each, this "
                                   "machine has 2; `llmnest scale tight 2` fits")
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setattr(local_surge, "host_memory_bytes", lambda field: GIB // 100)
    with pytest.raises(Conflict) as memory:
        lifecycle.scale("tight", 2, Context())
    assert "one more engine needs" in memory.value.message and "0.0 GiB is free; free memory" in memory.value.message
    assert engines.launched == [] and [u.id for u in state.get("tight").replicas] == ["tight/0"]
    assert state.get("tight").spec == dep.spec and cores.value.exit_code == 3


def test_the_room_for_the_new_total_on_cpus_and_gpus() -> None:
    spec = targets.get("local").resolve(UpRequest(model="", name="r", options={})).spec
    spec = spec.model_copy(update={"model_path": "/models/smollm2"})
    roomy = local_surge.scale_room(spec, demo_model(), 1, 3, available=64 * GIB, cores=4)
    assert roomy.fits and "GiB of 64.0 GiB free memory" in roomy.reason and roomy.most == 4
    need = local_surge._memory_needed(spec, demo_model())
    assert need
    short = local_surge.scale_room(spec, demo_model(), 1, 4, available=2 * need, cores=8)
    assert not short.fits and short.reason.startswith("3 more engines need") and short.most == 3
    assert local_surge.scale_room(spec, demo_model(), 1, 3, available=2 * need, cores=8).fits
    pinned = spec.model_copy(update={"env": {CPU_BIND: "0-1"}})
    assert "pins its engines' cores" in local_surge.scale_room(pinned, demo_model(), 1, 2, available=64 * GIB,
                                                               cores=8).reason
    gpus = spec.model_copy(update={"device": "cuda", "gpu_count": 4, "tensor_parallel_size": 2})
    assert local_surge.scale_room(gpus, None, 1, 2, gpus=4) == local_surge.Room(True, "2 of 4 GPUs for them", 2)
    refused = local_surge.scale_room(gpus, None, 1, 3, gpus=5)
    assert refused == local_surge.Room(False, "3 engines need 6 GPUs (2 each), this machine has 5", 2)


def recorded(name: str, options: dict, units: int = 1, no_api_key: bool = False) -> state.Deployment:
    """A deployment in the store with its units, nothing running (for what is refused before anything starts)."""
    request = UpRequest(model="", name=name, port=free_port(), options=options, no_api_key=no_api_key)
    spec = targets.get("local").resolve(request).spec
    state.create(spec, "sk-recorded-1")
    for i in range(units):
        units_store.put(units_store.Unit(units_store.replica_id(name, i), "engine", name, i, "127.0.0.1", 1 + i,
                                         status="ready"))
    return state.get(name)


def test_refusals_through_the_cli_are_one_line_with_the_right_exit_code(tmp_path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("LLMNEST_HOME", str(home))
    recorded("direct", {"no_gateway": True})
    recorded("open", {}, no_api_key=True)
    recorded("front", {"replicas": 2}, units=2)
    env = cli_env(home)

    def error(*args: str, code: int) -> str:
        done = run_cli(env, "scale", *args, timeout=120)
        assert done.returncode == code and done.stdout == "", (done.returncode, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        return lines[0]

    assert error("direct", "2", code=3) == (
        "error: direct is served straight from one engine (--no-gateway or --no-api-key): replicas need the gateway "
        "in front; `llmnest redeploy direct --set gateway=true` puts it there, then scale")
    assert "`llmnest redeploy open --set api_key_enabled=true --set gateway=true`" in error("open", "2", code=3)
    assert error("front", "17", code=2) == "error: front can have at most 16 replicas, not 17"
    assert "at least 1 replica, not 0" in error("front", "0", code=2)
    same = run_cli(env, "scale", "front", "2", "--json", timeout=120)
    assert same.returncode == 0 and '"result": "front already runs 2 replicas: nothing changed"' in same.stdout
    assert [u.id for u in state.get("front").replicas] == ["front/0", "front/1"]
    recorded("cut", {"replicas": 3}, units=2)  # a scale down cut short between the stops and the record
    caught_up = run_cli(env, "scale", "cut", "2", timeout=120)
    assert caught_up.returncode == 0, caught_up.stderr
    assert "cut already runs 2 replicas; its spec says so now (it said 3)" in caught_up.stdout
    assert state.get("cut").spec.replicas == 2


def test_scale_is_offered_here_and_refused_where_a_target_does_not_offer_it() -> None:
    assert targets.get("local").refusal(Capability.SCALE) is None
    assert "replicas do not change in place there" in targets.get("aliyun").refusal(Capability.SCALE)
