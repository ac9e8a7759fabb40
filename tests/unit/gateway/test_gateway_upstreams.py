"""Upstreams from llmnest's own deployment store, and from a static config."""

from __future__ import annotations

from llmnest import state
from llmnest.build import UpRequest, build_spec
from llmnest.catalog import get_model
from llmnest.gateway.upstreams import StaticProvider, Upstream
from llmnest.targets.upstream_provider import DeploymentProvider
from llmnest.host import HostFacts
from llmnest.targets import get
from llmnest.targets.local import units_store


def _spec(name: str, port: int, **options):
    return build_spec(UpRequest(model="smollm2-135m", name=name, port=port, options=options),
                      get_model("smollm2-135m"), HostFacts(gpus=(), has_docker_engine=False))


def test_state_provider_reads_the_active_deployments_wherever_they_run(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    one, key1 = _spec("one", 18001, no_gateway=True)
    two, key2 = _spec("two", 18002, no_gateway=True)
    gone, key3 = _spec("gone", 18003, no_gateway=True)
    for spec, key in ((one, key1), (two, key2), (gone, key3)):
        state.create(spec, key)
    state.update("gone", status="stopped")
    cloud = get("aliyun").resolve(UpRequest(model="Qwen/QwQ-32B", target="aliyun", options={"region": "cn-hangzhou"}))
    state.create(cloud.spec, cloud.api_key)  # an engine on another machine: its public endpoint
    state.update(cloud.spec.name, info={"endpoints": [{"label": "public", "base_url": "http://203.0.113.7:8080/v1"},
                                                       {"label": "private", "base_url": "http://192.168.1.10:8080/v1"}]})
    ups = DeploymentProvider().upstreams()
    model = one.served_model_name
    assert ups == [
        Upstream(model, "one", "http://127.0.0.1:18001/v1", key1),
        Upstream(model, "two", "http://127.0.0.1:18002/v1", key2),
        Upstream("Qwen/QwQ-32B", "qwq-32b", "http://203.0.113.7:8080/v1", cloud.api_key),
    ]
    assert ups[2].root_url == "http://203.0.113.7:8080"
    assert DeploymentProvider(port=18001).upstreams() == []  # `one` serves directly: no gateway of ours fronts it


def test_the_gateway_on_a_port_reaches_the_replicas_of_the_deployments_on_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    front, user_key = _spec("front", 8080, replicas=2)
    other, _ = _spec("other", 9090)
    for spec in (front, other):
        state.create(spec, user_key)
        units_store.engine_key_path(spec.name).write_text(f"internal-{spec.name}")
    for index, port in enumerate((18011, 18012)):
        units_store.put(units_store.Unit(f"front/{index}", "engine", "front", index, "127.0.0.1", port))
    units_store.put(units_store.Unit("other/0", "engine", "other", 0, "127.0.0.1", 18013, status="ready"))
    units_store.update("front/0", status="ready")
    units_store.update("front/1", status="restarting")  # out of rotation until it answers again
    model = front.served_model_name
    assert DeploymentProvider(port=8080).upstreams() == [
        Upstream(model, "front/0", "http://127.0.0.1:18011/v1", "internal-front"),
        Upstream(model, "front/1", "http://127.0.0.1:18012/v1", "internal-front", ready=False)]
    assert [u.replica_id for u in DeploymentProvider(port=9090).upstreams()] == ["other/0"]
    assert [u.replica_id for u in DeploymentProvider().upstreams()] == ["front/0", "front/1", "other/0"]
    units_store.update("front/1", status="failed")  # a failed start is not coming back by itself
    assert [u.replica_id for u in DeploymentProvider(port=8080).upstreams()] == ["front/0"]


def test_static_provider_from_config() -> None:
    ups = StaticProvider.from_config([{"model": "m", "base_url": "http://h:1/v1/"},
                                      {"model": "m", "base_url": "http://g:1/v1", "replica_id": "g", "internal_key": "k"}])
    assert ups.upstreams() == [Upstream("m", "m-0", "http://h:1/v1", None), Upstream("m", "g", "http://g:1/v1", "k")]
