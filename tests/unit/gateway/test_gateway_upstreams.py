"""Upstreams from llmnest's own deployment store, and from a static config."""

from __future__ import annotations

from llmnest import state
from llmnest.build import UpRequest, build_spec
from llmnest.catalog import get_model
from llmnest.gateway.upstreams import StateProvider, StaticProvider, Upstream
from llmnest.host import HostFacts


def _spec(name: str, port: int):
    return build_spec(UpRequest(model="smollm2-135m", name=name, port=port), get_model("smollm2-135m"),
                      HostFacts(gpus=(), has_docker_engine=False))


def test_state_provider_reads_deployments_and_their_replicas(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path / "home"))
    one, key1 = _spec("one", 18001)
    two, key2 = _spec("two", 18002)
    gone, key3 = _spec("gone", 18003)
    for spec, key in ((one, key1), (two, key2), (gone, key3)):
        state.create(spec, key)
    state.update("two", info={"replicas": [{"id": "two-0", "base_url": "http://10.0.0.5:9000/v1/"},
                                           {"id": "two-1", "base_url": "http://10.0.0.6:9000/v1"}]})
    state.update("gone", status="stopped")
    ups = StateProvider().upstreams()
    model = one.served_model_name
    assert ups == [
        Upstream(model, "one", "http://127.0.0.1:18001/v1", key1),
        Upstream(model, "two-0", "http://10.0.0.5:9000/v1", key2),
        Upstream(model, "two-1", "http://10.0.0.6:9000/v1", key2),
    ]
    assert ups[1].root_url == "http://10.0.0.5:9000"
    assert len(StateProvider(active_only=False).upstreams()) == 4


def test_static_provider_from_config() -> None:
    ups = StaticProvider.from_config([{"model": "m", "base_url": "http://h:1/v1/"},
                                      {"model": "m", "base_url": "http://g:1/v1", "replica_id": "g", "internal_key": "k"}])
    assert ups.upstreams() == [Upstream("m", "m-0", "http://h:1/v1", None), Upstream("m", "g", "http://g:1/v1", "k")]
