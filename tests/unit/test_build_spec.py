"""From `llmnest up` options and host facts to a spec: defaults, --set, and refusals."""

from __future__ import annotations

import pytest

from llmnest.spec_builder import UpRequest, build_spec
from llmnest.catalog import get_model
from llmnest.errors import BadInput
from llmnest.host import Gpu, HostFacts
from llmnest.spec import DeploymentSpec, apply_sets, parse_sets
from llmnest.targets.aliyun.placement import AliyunPlacement

CPU = HostFacts(gpus=(), has_docker_engine=False)
A10x8 = HostFacts(gpus=tuple(Gpu("NVIDIA A10", 23028) for _ in range(8)), has_docker_engine=True)


def spec_for(model: str, facts: HostFacts = CPU, **kw) -> tuple[DeploymentSpec, str | None]:
    return build_spec(UpRequest(model=model, **kw), get_model(model), facts)


def test_demo_on_a_cpu_host_is_private_keyed_vllm_process():
    spec, key = spec_for("smollm2-135m")
    assert (spec.engine, spec.runtime, spec.device, spec.host, spec.port) == ("vllm", "process", "cpu", "127.0.0.1", 8080)
    assert spec.enforce_eager and spec.max_model_len == 4096 and spec.tensor_parallel_size == 1
    assert key and key.startswith("sk-") and len(key) > 20 and spec.api_key_enabled


def test_gpu_host_uses_all_gpus_the_model_divides_and_docker():
    spec, _ = spec_for("Qwen/QwQ-32B", A10x8)
    assert spec.device == "cuda" and spec.runtime == "docker" and spec.tensor_parallel_size == 8
    assert spec.reasoning_parser == "deepseek_r1" and spec.max_model_len == 32768
    # 28 attention heads and 4 KV heads: 8 GPUs do not divide them, the largest valid size is 4
    spec7, _ = spec_for("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", A10x8)
    assert spec7.tensor_parallel_size == 4 and spec7.gpu_memory_utilization == 0.9


def test_set_overrides_fields_and_passes_engine_flags_through():
    spec, _ = spec_for("smollm2-135m", sets=parse_sets(["max_model_len=2048", "enable-prefix-caching=true",
                                                        "env.OMP_NUM_THREADS=1", "enforce-eager=false"]))
    assert spec.max_model_len == 2048 and not spec.enforce_eager
    assert spec.engine_args == {"enable-prefix-caching": "true"} and spec.env == {"OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("pairs, message", [
    (["max_model_len=abc"], "max_model_len"),
    (["port=70000"], "port"),
    (["name=other"], "cannot change 'name'"),
    (["model=Qwen/Qwen3-8B"], r"cannot change 'model'; create a new deployment instead \(`llmnest up MODEL`\)"),
    (["novalue"], "KEY=VALUE"),
    (["max_model_len=99999"], "exceeds smollm2-135m's context"),
    (["placement.region=cn-hangzhou"], "a local deployment's placement has no fields"),
])
def test_bad_sets_are_one_line_of_bad_input(pairs, message):
    with pytest.raises(BadInput, match=message):
        spec_for("smollm2-135m", sets=parse_sets(pairs))


def test_sglang_needs_a_gpu():
    with pytest.raises(BadInput, match="SGLang needs an NVIDIA GPU"):
        spec_for("smollm2-135m", engine="sglang")
    spec, _ = spec_for("Qwen/Qwen3-8B", A10x8, engine="sglang")
    assert spec.engine == "sglang"


def test_open_endpoint_on_the_network_needs_insecure():
    with pytest.raises(BadInput, match="without an API key"):
        spec_for("smollm2-135m", host="0.0.0.0", no_api_key=True)
    spec, key = spec_for("smollm2-135m", host="0.0.0.0", no_api_key=True, insecure=True)
    assert key is None and not spec.api_key_enabled
    _, key = spec_for("smollm2-135m", no_api_key=True)  # loopback without a key is fine
    assert key is None
    with pytest.raises(BadInput, match=r"on an Alibaba Cloud instance without an API key.*Drop --no-api-key, or pass"):
        build_spec(UpRequest(model="Qwen/QwQ-32B", no_api_key=True, target="aliyun"), get_model("Qwen/QwQ-32B"), None,
                   placement=AliyunPlacement(region="cn-hangzhou"))


def test_user_key_is_kept_and_checked():
    _, key = spec_for("smollm2-135m", api_key="my-secret-key")
    assert key == "my-secret-key"
    with pytest.raises(BadInput, match="too short"):
        spec_for("smollm2-135m", api_key="abc")
    with pytest.raises(BadInput, match="contradict"):
        spec_for("smollm2-135m", api_key="my-secret-key", no_api_key=True)


def test_local_directory_model(tmp_path):
    (tmp_path / "My Model").mkdir()
    (tmp_path / "My Model" / "config.json").write_text("{}")
    spec, _ = build_spec(UpRequest(model=str(tmp_path / "My Model")), None, CPU)
    assert spec.name == "my-model" and spec.served_model_name == "My Model"
    assert spec.model_path == str(tmp_path / "My Model")


def test_spec_round_trips_through_json():
    spec, _ = spec_for("Qwen/QwQ-32B", A10x8, sets={"enable-prefix-caching": "true"})
    assert DeploymentSpec.from_json(spec.to_json()) == spec
    assert apply_sets(spec, {}) == spec


def test_a_placement_field_is_set_by_its_name_or_placement_dot_name():
    spec, _ = build_spec(UpRequest(model="Qwen/QwQ-32B", target="aliyun"), get_model("Qwen/QwQ-32B"), None,
                         placement=AliyunPlacement(region="cn-hangzhou"))
    moved = apply_sets(spec, {"placement.region": "cn-beijing"})
    assert moved.placement.region == "cn-beijing" and spec.placement.region == "cn-hangzhou"
    assert apply_sets(spec, {"region": "cn-beijing"}) == moved
    assert "region" not in apply_sets(spec, {"region": "cn-beijing"}).engine_args
