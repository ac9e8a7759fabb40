"""Redeploy and restart behind the gateway with room for one more engine: the choice (room or not, and
why), the surge sequence (new replica ready and routed before the old one drains and stops) and a failed
surge (the old replica untouched, the spec unchanged). The engines are stand-ins (starting vLLM is the
e2e test's job, tests/e2e/test_replicas_e2e.py): `units.start_unit`, `wait_ready` and `stop_unit` are
replaced by fakes that record what they were asked, and the gateway's word by a function that says yes."""

from __future__ import annotations

import pytest

from llmnest import state, targets
from llmnest.build import UpRequest
from llmnest.catalog import demo_model
from llmnest.errors import LlmnestError
from llmnest.spec import apply_sets
from llmnest.targets.base import Context
from llmnest.targets.local import surge as local_surge, units as local_units, units_store
from llmnest.targets.local.runners import cpu_bind

GIB = 2**30


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LLMNEST_GATEWAY_DB", raising=False)
    return tmp_path / "home"


def spec_of(name: str = "one", port: int = 18771, options: dict | None = None):
    resolved = targets.get("local").resolve(UpRequest(model="", name=name, port=port, options=options or {}))
    return resolved.spec.model_copy(update={"model_path": "/models/smollm2-135m"})


def test_room_means_free_memory_for_weights_and_kv_space_and_a_core_of_its_own(home) -> None:
    spec = spec_of()
    roomy = local_surge.choose(spec, spec, demo_model(), 1, available=64 * GIB, cores=2)
    assert roomy.surge and "cores 1 for it" in roomy.reason and roomy.line.startswith("surge: ")
    tight = local_surge.choose(spec, spec, demo_model(), 1, available=GIB // 4, cores=2)
    assert not tight.surge and "one more engine needs" in tight.reason and "0.2 GiB is free" in tight.reason
    assert tight.line.startswith("replace in place: ")
    one_core = local_surge.choose(spec, spec, demo_model(), 1, available=64 * GIB, cores=1)
    assert not one_core.surge and "no CPU core left" in one_core.reason
    two = spec_of(options={"replicas": 2})
    assert not local_surge.choose(two, two, demo_model(), 2, available=64 * GIB, cores=2).surge  # a core each, none left
    assert "cores 2 for it" in local_surge.choose(two, two, demo_model(), 2, available=64 * GIB, cores=3).reason


@pytest.mark.parametrize(("new", "units", "why"), [
    ({"served_model_name": "other"}, 1, "served model name changes"),
    ({"replicas": 2}, 1, "number of replicas changes"),
    ({"device": "cuda"}, 1, "the device changes"),
    ({"env": {"VLLM_CPU_OMP_THREADS_BIND": "0"}}, 1, "pins its engines' cores"),
    ({}, 0, "0 of its 1 replica(s) run"),
])
def test_no_surge_and_why(home, new, units, why) -> None:
    old = spec_of()
    choice = local_surge.choose(old, old.model_copy(update=new), demo_model(), units, available=64 * GIB, cores=4)
    assert not choice.surge and why in choice.reason


def test_on_gpus_room_means_gpus_no_replica_uses_and_the_surge_slot_sees_only_its_own(home) -> None:
    one = spec_of().model_copy(update={"device": "cuda", "gpu_count": 4, "tensor_parallel_size": 2})
    assert local_surge.choose(one, one, demo_model(), 1, gpus=4) == local_surge.Choice(True, "2 of 4 GPUs free")
    assert "no free GPUs" in local_surge.choose(one, one, demo_model(), 1, gpus=3).reason
    wider = one.model_copy(update={"tensor_parallel_size": 4})
    assert "GPUs per engine change" in local_surge.choose(one, wider, demo_model(), 1, gpus=8).reason
    assert "CUDA_VISIBLE_DEVICES" not in one.listening_on("127.0.0.1", 1, 0).env  # as before: vLLM takes GPUs 0-1
    assert one.listening_on("127.0.0.1", 1, 1).env["CUDA_VISIBLE_DEVICES"] == "2,3"
    two = one.model_copy(update={"replicas": 2, "gpu_count": 6})
    assert [two.listening_on("127.0.0.1", 1, i).env["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["0,1", "2,3", "4,5"]
    assert local_surge.choose(two, two, demo_model(), 2, gpus=6).surge


def test_no_surge_without_the_gateway_in_front(home) -> None:
    direct = spec_of(options={"no_gateway": True})
    assert "no gateway" in local_surge.choose(direct, direct, demo_model(), 1, available=64 * GIB, cores=4).reason


def test_each_slot_has_cores_of_its_own_and_the_surge_slot_the_ones_left_over() -> None:
    assert [cpu_bind(i, 1, 2) for i in (0, 1)] == [None, None]  # alone: vLLM's own choice
    assert [cpu_bind(i, 1, 2, alone=False) for i in (0, 1)] == ["0", "1"]  # next to the other (a surge)
    assert [cpu_bind(i, 1, 8, alone=False) for i in (0, 1)] == ["0-3", "4-7"]
    assert [cpu_bind(i, 2, 2) for i in (0, 1, 2)] == ["0", "1", None]
    assert [cpu_bind(i, 2, 5) for i in (0, 1, 2)] == ["0-1", "2-3", "4"]
    assert cpu_bind(0, 1, 1, alone=False) is None and cpu_bind(1, 1, 1, alone=False) is None


class Engines:
    """Stand-ins for the supervised engines: every call recorded in order; `failing` spec flags fail."""

    def __init__(self, monkeypatch, failing: str | None = None, fail_at: int | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        engines = self

        def start_unit(unit):
            engines.calls.append(("start", unit.id))
            units_store.update(unit.id, status="starting")

        def wait_ready(name, ctx, only=None):
            spec = state.get(name).spec
            if failing and failing in spec.engine_args:
                raise LlmnestError(f"the engine exited: unrecognized arguments: --{failing}")
            if fail_at is not None and sum(c[0] == "start" for c in engines.calls) == fail_at:
                raise LlmnestError("the engine exited: out of memory")
            engines.calls.append(("ready", only.id))
            units_store.update(only.id, status="ready")
            return state.get(name)

        monkeypatch.setattr(local_units, "start_unit", start_unit)
        monkeypatch.setattr(local_units, "wait_ready", wait_ready)
        monkeypatch.setattr(local_units, "stop_unit",
                            lambda dep, unit, grace=30: engines.calls.append(("stop", unit.id)))
        monkeypatch.setattr(local_surge, "wait_rotation",
                            lambda spec, uid, taking, on_wait, timeout=30: engines.calls.append(("routed", uid)) or True)
        monkeypatch.setattr(local_surge, "drain",
                            lambda spec, unit, on_wait: engines.calls.append(("drained", unit.id)))
        monkeypatch.setattr(local_surge, "choose", lambda old, new, model, units: local_surge.Choice(True, "room"))
        monkeypatch.setattr("llmnest.targets.local.preflight.check_can_start", lambda *a, **k: None)


def running(name: str, replicas: int = 1) -> state.Deployment:
    spec = spec_of(name, options={"replicas": replicas} if replicas > 1 else {})
    state.create(spec, f"sk-{name}-secret-1")
    for i in range(replicas):
        unit_id = units_store.replica_id(name, i)
        units_store.put(units_store.Unit(unit_id, "engine", name, i, "127.0.0.1", 18800 + i, status="ready"))
    return state.get(name)


def test_a_surge_starts_the_new_replica_routes_it_then_drains_and_stops_the_old_one(home, monkeypatch) -> None:
    engines = Engines(monkeypatch)
    dep = running("one")
    said: list[str] = []
    how = targets.get("local").redeploy(dep, apply_sets(dep.spec, {"max_model_len": "1024"}), Context(say=said.append))
    assert how == "surge: the old engine serves until the new one answers (room)" and how in said
    assert engines.calls == [("start", "one/1"), ("ready", "one/1"), ("routed", "one/1"), ("drained", "one/0"),
                             ("stop", "one/0")]
    after = state.get("one")
    assert [u.index for u in after.replicas] == [1] and after.spec.max_model_len == 1024
    engines.calls.clear()
    targets.get("local").restart(after, Context())  # the next surge takes the slot that is free again
    assert engines.calls[0] == ("start", "one/0") and [u.index for u in state.get("one").replicas] == [0]


def test_several_replicas_surge_one_slot_at_a_time(home, monkeypatch) -> None:
    engines = Engines(monkeypatch)
    dep = running("two", replicas=2)
    targets.get("local").redeploy(dep, apply_sets(dep.spec, {"max_model_len": "1024"}), Context())
    assert engines.calls == [("start", "two/2"), ("ready", "two/2"), ("routed", "two/2"), ("drained", "two/0"),
                             ("stop", "two/0"), ("start", "two/0"), ("ready", "two/0"), ("routed", "two/0"),
                             ("drained", "two/1"), ("stop", "two/1")]
    assert sorted(u.index for u in state.get("two").replicas) == [0, 2]


def test_a_failed_surge_leaves_the_old_replica_serving_and_the_spec_unchanged(home, monkeypatch) -> None:
    engines = Engines(monkeypatch, failing="no-such-engine-flag")
    dep = running("bad")
    with pytest.raises(LlmnestError) as failed:
        targets.get("local").redeploy(dep, apply_sets(dep.spec, {"no-such-engine-flag": "1"}), Context())
    assert "kept serving on its previous spec throughout" in failed.value.message
    assert "unrecognized arguments" in failed.value.message
    assert engines.calls == [("start", "bad/1"), ("stop", "bad/1")]  # the old replica never drained nor stopped
    after = state.get("bad")
    assert after.spec == dep.spec and [(u.id, u.status) for u in after.replicas] == [("bad/0", "ready")]


def test_a_surge_failing_on_the_second_replica_puts_the_first_back_on_the_old_spec(home, monkeypatch) -> None:
    engines = Engines(monkeypatch, fail_at=2)
    dep = running("two", replicas=2)
    with pytest.raises(LlmnestError, match="out of memory"):
        targets.get("local").redeploy(dep, apply_sets(dep.spec, {"max_model_len": "1024"}), Context())
    assert engines.calls == [("start", "two/2"), ("ready", "two/2"), ("routed", "two/2"), ("drained", "two/0"),
                             ("stop", "two/0"), ("start", "two/0"), ("stop", "two/0"),  # the second surge failed
                             ("start", "two/0"), ("ready", "two/0"), ("routed", "two/0"), ("drained", "two/2"),
                             ("stop", "two/2")]  # the first one back on the old spec, the same way
    after = state.get("two")
    assert after.spec == dep.spec and sorted(u.index for u in after.replicas) == [0, 1]


def test_a_surge_replica_of_one_takes_its_own_cores_and_one_alone_keeps_vllms_choice(home, monkeypatch) -> None:
    from llmnest.targets.local.runners import CPU_BIND, replica_launch

    monkeypatch.setattr("os.cpu_count", lambda: 4)
    running("one")
    assert CPU_BIND not in replica_launch(units_store.get("one/0"))[0].env
    units_store.put(units_store.Unit("one/1", "engine", "one", 1, "127.0.0.1", 18900))
    assert replica_launch(units_store.get("one/1"))[0].env[CPU_BIND] == "2-3"
    units_store.delete("one/0")  # the old one stopped: a restart of the surge replica alone gets vLLM's choice again
    assert CPU_BIND not in replica_launch(units_store.get("one/1"))[0].env


def test_ctrl_c_during_the_first_surge_leaves_the_old_replica_serving_on_its_spec(home, monkeypatch) -> None:
    engines = Engines(monkeypatch)
    dep = running("int")

    def interrupted(name, ctx, only=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(local_units, "wait_ready", interrupted)
    with pytest.raises(KeyboardInterrupt):
        targets.get("local").redeploy(dep, apply_sets(dep.spec, {"max_model_len": "1024"}), Context())
    assert engines.calls == [("start", "int/1"), ("stop", "int/1")]  # the surge replica stopped and forgotten
    after = state.get("int")
    assert after.spec == dep.spec and [(u.id, u.status) for u in after.replicas] == [("int/0", "ready")]
