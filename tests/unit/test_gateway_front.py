"""The gateway `up` puts in front of local deployments: the spec's gateway and replicas, the key `up`
prints (the gateway's `default`), what `show` prints, and what is refused before anything starts.
(The real processes are in tests/e2e/test_replicas_e2e.py.)"""

from __future__ import annotations

import os

import pytest

from llmnest import lifecycle, state
from llmnest.spec_builder import UpRequest, build_spec
from llmnest.catalog import get_model
from llmnest.errors import BadInput, Conflict
from llmnest.gateway import keys
from llmnest.gateway.db import Database
from llmnest.host import Gpu, HostFacts
from llmnest.plan.on_host import plan_for_spec
from llmnest.targets import Context
from llmnest.targets.aliyun.placement import AliyunPlacement
from llmnest.targets.local import gateway as local_gateway, units_store
from tests.conftest import run_cli

CPU = HostFacts(gpus=(), has_docker_engine=False)
A10x8 = HostFacts(gpus=tuple(Gpu("NVIDIA A10", 23028) for _ in range(8)), has_docker_engine=True)


def spec_for(facts: HostFacts = CPU, model: str = "smollm2-135m", **kw):
    return build_spec(UpRequest(model=model, **kw), get_model(model), facts)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_local_deployments_are_behind_the_gateway_unless_asked_not_to():
    assert spec_for()[0].gateway and spec_for()[0].replicas == 1
    assert not spec_for(options={"no_gateway": True})[0].gateway
    direct, key = spec_for(no_api_key=True)  # the gateway is the keyed front: no key, no gateway
    assert not direct.gateway and key is None
    cloud, _ = build_spec(UpRequest(model="Qwen/QwQ-32B", target="aliyun"), get_model("Qwen/QwQ-32B"), None,
                          placement=AliyunPlacement(region="cn-hangzhou"))
    assert not cloud.gateway
    assert spec_for(options={"replicas": 3})[0].replicas == 3


def test_replicas_need_the_gateway_and_their_gpus():
    with pytest.raises(BadInput, match="several replicas need the gateway in front of them: drop --no-gateway"):
        spec_for(options={"replicas": 2, "no_gateway": True})
    with pytest.raises(BadInput, match="x replicas 3 = 12 exceeds the 8 GPUs"):
        spec_for(A10x8, "Qwen/QwQ-32B", options={"replicas": 3}, sets={"tensor_parallel_size": "4"})
    spec, _ = spec_for(A10x8, "Qwen/QwQ-32B", options={"replicas": 2})  # each replica gets half the GPUs
    assert spec.tensor_parallel_size == 4
    assert [spec.listening_on("127.0.0.1", 9000 + i, i).env["CUDA_VISIBLE_DEVICES"] for i in range(2)] == [
        "0,1,2,3", "4,5,6,7"]
    one = spec.model_copy(update={"replicas": 1}).listening_on("127.0.0.1", 9000)
    assert "CUDA_VISIBLE_DEVICES" not in one.env and (one.host, one.port) == ("127.0.0.1", 9000)


def test_the_plan_counts_every_replicas_memory(monkeypatch):
    spec, _ = spec_for(sets={"cpu_kv_cache_gib": "6"})
    model = get_model("smollm2-135m")
    monkeypatch.setattr("llmnest.plan.on_host.host_memory_bytes", lambda: 16 * 2**30)
    assert plan_for_spec(spec.model_copy(update={"replicas": 2}), model, ()).fits
    crowded = plan_for_spec(spec.model_copy(update={"replicas": 3}), model, ())
    assert not crowded.fits and crowded.reason.startswith("does not fit: 3 x (weights ")


def test_up_prints_the_gateways_default_key_and_keeps_it(home):
    first = local_gateway.user_key(None)
    assert first == local_gateway.user_key(None) == (home / "gateway" / "default_key").read_text()
    assert oct((home / "gateway" / "default_key").stat().st_mode & 0o777) == "0o600"
    db = Database(None)
    assert [k.name for k in keys.list_keys(db)] == ["default"]
    _, alice = keys.create(db, "alice")
    assert local_gateway.user_key(alice) == alice  # a key of the gateway may be given with --api-key
    with pytest.raises(Conflict, match="--api-key is not a key of the gateway"):
        local_gateway.user_key("sk-someone-elses-key")  # (no deployment to name it after)
    keys.revoke(db, "default")
    fresh = local_gateway.user_key(None)  # a revoked default is replaced, and printed from then on
    assert fresh != first and keys.authenticate(db, fresh).name == "default"
    db.close()


def test_a_default_key_up_did_not_make_is_not_printed(home):
    db = Database(None)
    keys.create(db, "default")
    with pytest.raises(Conflict, match="a key named `default` exists but `up` did not make it"):
        local_gateway.user_key(None)
    db.close()


def test_an_api_key_given_to_up_opens_its_deployment_and_nothing_else(home):
    """`up --api-key K` where the gateway has keys already: K becomes the key named after the deployment,
    for its model only (again on the next `up`); a live key of that name with another secret is refused."""
    local_gateway.user_key(None)  # the gateway's `default` exists
    assert local_gateway.user_key("sk-chosen-by-me-1234", "demo", "SmolLM2") == "sk-chosen-by-me-1234"
    db = Database(None)
    key = keys.authenticate(db, "sk-chosen-by-me-1234")
    assert (key.name, key.models) == ("demo", ["SmolLM2"])
    assert local_gateway.user_key("sk-chosen-by-me-1234", "demo", "SmolLM2") == "sk-chosen-by-me-1234"
    assert local_gateway.key_label("sk-chosen-by-me-1234") == "demo, for SmolLM2 only"
    with pytest.raises(Conflict, match="may not use Other"):
        local_gateway.user_key("sk-chosen-by-me-1234", "other", "Other")
    with pytest.raises(Conflict, match="a key named 'demo' with another secret"):
        local_gateway.user_key("sk-another-one-5678", "demo", "SmolLM2")
    keys.revoke(db, "demo")
    with pytest.raises(Conflict, match="which is revoked"):
        local_gateway.user_key("sk-chosen-by-me-1234", "demo", "SmolLM2")
    assert [k.name for k in keys.list_keys(db) if k.revoked_at is None] == ["default"]
    db.close()


def test_show_prints_each_replica_and_the_gateway_reading_keys_from_files(home):
    spec, key = spec_for(options={"replicas": 2}, port=18600)
    spec = spec.model_copy(update={"model_path": "/models/smollm2"})
    state.create(spec, key)
    units_store.engine_key_path(spec.name).write_text("sk-internal-secret")
    for index, port in enumerate((18601, 18602)):
        unit_id = units_store.replica_id(spec.name, index)
        units_store.put(units_store.Unit(unit_id, "engine", spec.name, index, "127.0.0.1", port))
    command = lifecycle.show(spec.name, "command")
    assert "sk-internal-secret" not in command and key not in command
    assert command.count("engine_key)") == 2 and "--port 18601" in command and "--port 18602" in command
    assert "\n# the gateway on 127.0.0.1:18600\n" in command
    script = lifecycle.show(spec.name, "script").splitlines()
    backgrounded = [i for i, line in enumerate(script) if line.endswith(" &")]
    execs = [i for i, line in enumerate(script) if line.startswith("exec ")]
    assert len(backgrounded) == 2 and len(execs) == 1 and execs[0] > backgrounded[-1]  # engines, then the gateway
    assert "--deployments-on-port" in lifecycle.show(spec.name, "script")


def test_a_port_someone_else_uses_is_refused_before_anything(home):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(Conflict, match=f"port {port} on 127.0.0.1 is already in use"):
            lifecycle.up(UpRequest(model="smollm2-135m", port=port), Context())
    assert state.names() == [] and not (home / "gateway.db").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--replicas", "2", "--no-gateway"], "several replicas need the gateway in front of them"),
    (["--replicas", "2", "--target", "aliyun", "--region", "cn-hangzhou"],
     "--replicas is for --target local or kubernetes: add --target local, or drop it to deploy on Alibaba Cloud"),
    (["--replicas", "0"], "Invalid value for '--replicas'"),
])
def test_bad_replica_options_get_one_line(args, message, home):
    done = run_cli({"LLMNEST_HOME": str(home), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}, "up", *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_redeploy_may_move_off_or_across_its_own_gateway_but_not_one_it_shares(home):
    import socket

    from llmnest.targets.local.preflight import check_can_start

    with socket.socket() as sock:  # the gateway both are behind holds the port
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        alone = spec_for(name="a", port=port)[0]
        state.create(alone, "sk-a")
        for change in ({"gateway": False}, {"host": "0.0.0.0"}, {"max_model_len": 2048}):
            check_can_start(alone.model_copy(update=change), Context(), replacing=alone)  # its gateway goes with it
        state.create(spec_for(name="b", port=port)[0], "sk-b")
        with pytest.raises(Conflict, match=f"the gateway on port {port} also serves b: to serve a straight from its "
                                           r"engine, give it a port of its own too \(--set port=N\)"):
            check_can_start(alone.model_copy(update={"gateway": False}), Context(), replacing=alone)
        with pytest.raises(Conflict, match="also serves b and keeps listening on 127.0.0.1"):
            check_can_start(alone.model_copy(update={"host": "0.0.0.0"}), Context(), replacing=alone)
        check_can_start(alone.model_copy(update={"max_model_len": 2048}), Context(), replacing=alone)


def test_a_deployment_moving_behind_the_gateway_keeps_its_key_when_it_can(home):
    """Its key becomes the gateway's key named after it, for its model only (as `up --api-key` does);
    when the gateway cannot take it, the deployment gets the `default` key."""
    mine = "sk-mine-from-before-0001"
    assert local_gateway.joining_key(mine, "a", "M") == mine
    assert local_gateway.joining_key(mine, "a", "M") == mine
    assert local_gateway.key_label(mine) == "a, for M only"
    default = local_gateway.user_key(None)
    assert local_gateway.joining_key("sk-another-one-0002", "a", "M") == default != mine  # `a` is taken
    assert local_gateway.joining_key(None, "b", "M") == default


def test_logs_of_each_replica_and_of_the_gateway(home):
    from llmnest.home import gateway_log_path, log_path

    spec = spec_for(name="two", port=18611, options={"replicas": 2})[0]
    state.create(spec, "sk-two")
    for i in range(2):
        units_store.put(units_store.Unit(units_store.replica_id("two", i), "engine", "two", i, "127.0.0.1", 18620 + i))
        log_path("two", i).parent.mkdir(parents=True, exist_ok=True)
        log_path("two", i).write_text(f"replica {i} line 1\nreplica {i} line 2\n")
    gateway_log_path(18611).parent.mkdir(parents=True, exist_ok=True)
    gateway_log_path(18611).write_text("gateway line\n")
    assert list(lifecycle.logs("two", 1, False)) == ["replica 0 line 2"]
    assert list(lifecycle.logs("two", 5, False, replica=1)) == ["replica 1 line 1", "replica 1 line 2"]
    assert list(lifecycle.logs("two", 5, False, gateway=True)) == ["gateway line"]
    with pytest.raises(BadInput, match="two has 2 replicas: pass --replica 0, 1"):
        list(lifecycle.logs("two", 5, False, replica=2))
    state.create(spec_for(name="direct", port=18612, options={"no_gateway": True})[0], "sk-d")
    with pytest.raises(BadInput, match=r"direct is served straight from its engine \(--no-gateway\): it has no gateway"):
        list(lifecycle.logs("direct", 5, False, gateway=True))
    with pytest.raises(BadInput, match="direct runs one engine: leave --replica out"):
        list(lifecycle.logs("direct", 5, False, replica=1))


def test_gateway_ls_shows_each_gateway_and_what_is_behind_it(home):
    import json
    import os

    env = {"LLMNEST_HOME": str(home), "PATH": "/usr/bin:/bin", "NO_COLOR": "1",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}  # a worktree's code, when the tests run it
    empty = run_cli(env, "gateway", "ls")
    assert empty.returncode == 0 and "no gateway runs" in empty.stdout
    for name in ("a", "b"):
        state.create(spec_for(name=name, port=18630, host="0.0.0.0")[0], f"sk-{name}")
    units_store.put(units_store.Unit(units_store.gateway_id(18630), "gateway", None, 0, "0.0.0.0", 18630))
    units_store.update(units_store.gateway_id(18630), status="ready", supervisor_pid=os.getpid(), pid=os.getpid())
    done = run_cli(env, "gateway", "ls", "--json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row | {"log": None} == {"port": 18630, "host": "0.0.0.0", "base_url": "http://127.0.0.1:18630/v1",
                                   "status": "ready", "pid": os.getpid(), "restarts": 0, "last_error": None,
                                   "deployments": ["a", "b"], "log": None}
    table = run_cli(env, "gateway", "ls").stdout
    assert "18630" in table and "a, b" in table
