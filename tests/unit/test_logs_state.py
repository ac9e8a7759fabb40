"""Log reading (failure lines, KV cache size) and the SQLite deployment store."""

from __future__ import annotations

import os
import signal

import pytest

from llmnest import state
from llmnest.build import UpRequest, build_spec
from llmnest.catalog import get_model
from llmnest.lifecycle import kv_cache_comparison
from llmnest.errors import Conflict, NotFound
from llmnest.host import HostFacts
from llmnest.logs import error_line, kv_cache_tokens, last_attempt
from llmnest.plan import plan_cpu
from llmnest.targets.local import units_store
from llmnest.targets.local.records import LocalState
from llmnest.targets.local.runners import exit_description

VLLM_ARGPARSE = [
    "INFO 11-25 00:43:21 [utils.py:1] vLLM API server version 0.32.0",
    "WARNING 11-25 00:43:21 [utils.py:597] Failed to create oneDNN linear. Exception: no primitive",
    "usage: api_server.py [-h] [--host HOST]",
    "api_server.py: error: unrecognized arguments: --no-such-flag 1",
]


def test_error_line_is_the_engines_own_error_not_a_warning():
    assert error_line(VLLM_ARGPARSE) == "api_server.py: error: unrecognized arguments: --no-such-flag 1"
    assert error_line(["(APIServer pid=1) ValueError: max_model_len too large", "INFO fine"]) == \
        "ValueError: max_model_len too large"
    assert error_line(VLLM_ARGPARSE[:2]) is None


def test_kv_cache_tokens_from_the_vllm_log():
    line = "(EngineCore pid=2353) INFO [kv_cache_utils.py:2327] CPU KV cache size: 93,184 tokens, Maximum concurrency"
    assert kv_cache_tokens(["x", line, "y"]) == 93184
    assert kv_cache_tokens(["GPU KV cache size: 1,234,560 tokens"]) == 1234560
    assert kv_cache_tokens(["nothing"]) is None


def test_last_attempt_reads_since_the_last_start_mark(tmp_path):
    log = tmp_path / "engine.log"
    log.write_text("=== llmnest: starting engine (attempt 1)\nold error\n=== llmnest: starting engine (attempt 2)\nnew\n")
    assert last_attempt(log) == ["new"]


def test_exit_description_names_signals():
    assert exit_description(-signal.SIGKILL) == "was killed by SIGKILL"
    assert exit_description(2) == "exited with code 2"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    spec, key = build_spec(UpRequest(model="smollm2-135m"), get_model("smollm2-135m"),
                           HostFacts(gpus=(), has_docker_engine=False))
    return spec, key, tmp_path / "home"


def test_store_round_trip_secrets_and_conflicts(store):
    spec, key, home = store
    dep = state.create(spec, key)
    assert dep.status == "starting" and dep.spec == spec
    assert state.api_key(spec.name) == key
    assert oct(os.stat(home / "deployments" / spec.name / "api_key").st_mode & 0o777) == "0o600"
    assert oct(os.stat(home / "state.db").st_mode & 0o777) == "0o600"
    with pytest.raises(Conflict):
        state.create(spec, key)
    state.update(spec.name, status="ready", info={"kv_cache_tokens_planned": 1})
    state.update(spec.name, info={"kv_cache_tokens_actual": 2})
    dep = state.get(spec.name)
    assert (dep.status, dep.restarts, dep.info) == (
        "ready", 0, LocalState(kv_cache_tokens_planned=1, kv_cache_tokens_actual=2))
    with pytest.raises(ValueError, match="LocalState has no field stack_id"):
        state.update(spec.name, info={"stack_id": "x"})  # the target's state is typed: a typo fails loudly
    assert state.resolve_name(None) == spec.name
    units_store.put(units_store.Unit(units_store.replica_id(spec.name, 0), "engine", spec.name, 0, "127.0.0.1", 18001))
    units_store.put(units_store.Unit(units_store.replica_id(spec.name, 1), "engine", spec.name, 1, "127.0.0.1", 18002))
    units_store.put(units_store.Unit("gateway/8080", "gateway", None, 0, "127.0.0.1", 8080, status="ready"))
    units_store.update("%s/0" % spec.name, status="ready", ready_at=5.0, pid=11)
    units_store.update("%s/1" % spec.name, status="ready", ready_at=7.0)
    units_store.bump_restarts("%s/1" % spec.name, "boom")
    dep = state.get(spec.name)  # a deployment with replicas shows them together: the worst status leads
    assert (dep.status, dep.restarts, dep.last_error, dep.pid, dep.ready_replicas) == ("restarting", 1, "boom", 11, 1)
    units_store.update("%s/1" % spec.name, status="ready")
    dep = state.get(spec.name)
    assert (dep.status, dep.ready_at) == ("ready", 7.0)
    assert [u.base_url for u in dep.replicas] == ["http://127.0.0.1:18001/v1", "http://127.0.0.1:18002/v1"]
    assert [g.id for g in units_store.gateways()] == ["gateway/8080"]
    state.delete(spec.name)
    assert units_store.find("%s/0" % spec.name) is None and units_store.find("gateway/8080") is not None
    assert state.api_key(spec.name) is None
    with pytest.raises(NotFound, match="no deployment named"):
        state.get(spec.name)
    with pytest.raises(NotFound, match="no deployments"):
        state.resolve_name(None)


def test_resolve_name_needs_a_name_when_several_exist(store):
    spec, key, _ = store
    state.create(spec, key)
    state.create(spec.model_copy(update={"name": "second"}), None)
    with pytest.raises(NotFound, match="several deployments"):
        state.resolve_name(None)
    with pytest.raises(NotFound, match="Did you mean: second"):
        state.get("secnd")


def test_planned_against_logged_kv_cache():
    line = "(EngineCore pid=7838) INFO [kv_cache_utils.py:2327] CPU KV cache size: 45,500 tokens, Maximum concurrency"
    planned = plan_cpu(get_model("smollm2-135m"), kv_cache_gib=1, max_model_len=4000).kv_cache_tokens
    assert kv_cache_comparison(planned, kv_cache_tokens([line])) == {
        "kv_cache_tokens_planned": 45_500, "kv_cache_tokens_actual": 45_500, "kv_cache_plan_error_pct": 0.0}
    assert kv_cache_comparison(planned, None)["kv_cache_plan_error_pct"] is None


def test_records_stored_before_the_placement_was_the_targets_still_load(store):
    """Specs used to keep the Alibaba Cloud placement under `aliyun` (null on every other spec)."""
    import json
    import sqlite3

    from tests.fakes.cloud_specs import cloud_spec

    cloud = cloud_spec(name="cloud")
    here = build_spec(UpRequest(model="smollm2-135m", name="here"), get_model("smollm2-135m"),
                      HostFacts(gpus=(), has_docker_engine=False))[0]
    for spec in (cloud, here):
        state.create(spec, None)
        old = {k: v for k, v in spec.model_dump(mode="json").items() if k != "placement"}
        old["aliyun"] = spec.model_dump(mode="json")["placement"]
        with sqlite3.connect(state.home() / "state.db") as conn:
            conn.execute("UPDATE deployments SET spec = ?, info = '{}' WHERE name = ?", (json.dumps(old), spec.name))
    assert state.get("cloud").spec == cloud and state.get("here").spec == here
    assert type(state.get("cloud").info).__name__ == "AliyunState" and state.get("here").info == LocalState()
    assert "aliyun" not in state.get("cloud").spec.model_dump() and state.get("cloud").spec.placement.region
