"""The engine commands the cloud instances run, parsed by the engines' own argument parsers
(tests/engine_parsers.py): a flag the engine does not know fails here, not on the instance an
hour into a stack. The stack's values (API key, node rank, head address) are filled in as the
bootstrap fills them."""

from __future__ import annotations

import pytest

from llmnest.targets.aliyun import bootstrap
from llmnest.targets.aliyun.sizing import resolve
from tests.engine_parsers import SGLANG_VERSION, sglang_parse, vllm_parse
from tests.fakes.cloud_specs import cloud_spec

STACK_VALUES = {bootstrap.KEY_PLACEHOLDER: "sk-stack-key-0123456789", bootstrap.RANK_PLACEHOLDER: "1",
                bootstrap.HEAD_ADDR_PLACEHOLDER: "192.168.1.10:20000"}
EDITIONS = {
    "QwQ-32B": {"model": "Qwen/QwQ-32B"},
    "DeepSeek-R1 two-node": {"model": "deepseek-ai/DeepSeek-R1", "nodes": 2},
}


def _args(spec, module: str) -> list[str]:
    """The engine's arguments as it receives them: SGLang's key comes from the key-file launcher, which
    appends it (tests/unit/test_aliyun_bootstrap.py runs the launcher itself)."""
    command = bootstrap.engine_command(spec)
    if command[0] == "-c":
        assert command[1:4] == [bootstrap.KEY_FILE_LAUNCHER, bootstrap.ENGINE_KEY_FILE, module]
        assert "--api-key" not in command and bootstrap.KEY_PLACEHOLDER not in command
        return [STACK_VALUES.get(word, word) for word in command[4:]] + ["--api-key", STACK_VALUES[bootstrap.KEY_PLACEHOLDER]]
    assert command[:2] == ["-m", module]
    return [STACK_VALUES.get(word, word) for word in command[2:]]


@pytest.mark.parametrize("edition", EDITIONS)
def test_vllm_commands_parse_with_vllms_own_parser(edition: str) -> None:
    spec = resolve(cloud_spec(**EDITIONS[edition]))
    parsed = vllm_parse(_args(spec, "vllm.entrypoints.openai.api_server"))
    assert parsed["model"] == f"/root/llm-model/{bootstrap.catalog_model(spec).modelscope_id}"
    assert parsed["tensor_parallel_size"] == spec.tensor_parallel_size
    assert parsed["pipeline_parallel_size"] == spec.pipeline_parallel_size
    assert parsed["served_model_name"] == [spec.served_model_name]
    assert (parsed["host"], parsed["port"]) == ("127.0.0.1", bootstrap.engine_port(spec))  # behind the gateway
    if spec.placement.nodes == 2:
        assert parsed["distributed_executor_backend"] == "ray"


def test_vllms_parser_rejects_a_flag_it_does_not_know() -> None:
    spec = resolve(cloud_spec("Qwen/QwQ-32B"))
    with pytest.raises(SystemExit):
        vllm_parse([*_args(spec, "vllm.entrypoints.openai.api_server"), "--no-such-engine-flag", "1"])


SGLANG_REGION = "ap-southeast-1"  # outside mainland China: the Docker Hub image, whose SGLang the parser is
SGLANG_EDITIONS = {**EDITIONS, "DeepSeek-V3 two-node": {"model": "deepseek-ai/DeepSeek-V3", "nodes": 2}}
UNKNOWN_FLAG = ["--no-such-engine-flag", "1"]


@pytest.fixture(scope="module")
def sglang_parsed() -> dict[str, dict]:
    """Every edition's SGLang command (and one with an unknown flag) through SGLang's parser, at once."""
    specs = {name: resolve(cloud_spec(**kw, engine="sglang", region=SGLANG_REGION))
             for name, kw in SGLANG_EDITIONS.items()}
    assert {s.image for s in specs.values()} == {f"lmsysorg/sglang:v{SGLANG_VERSION}-cu129"}  # the parser's version
    commands = {name: _args(spec, "sglang.launch_server") for name, spec in specs.items()}
    commands["unknown flag"] = [*commands["QwQ-32B"], *UNKNOWN_FLAG]
    commands["own fraction"] = _args(resolve(cloud_spec(**SGLANG_EDITIONS["QwQ-32B"], engine="sglang",
                                                        region=SGLANG_REGION, sets={"mem-fraction-static": "0.8"})),
                                     "sglang.launch_server")
    results = sglang_parse(list(commands.values()))
    return {name: {**result, "spec": specs.get(name)} for name, result in zip(commands, results, strict=True)}


@pytest.mark.parametrize("edition", SGLANG_EDITIONS)
def test_sglang_commands_parse_with_sglangs_own_parser(edition: str, sglang_parsed: dict) -> None:
    parsed = sglang_parsed[edition]
    spec = parsed["spec"]
    assert parsed["exit"] == 0, parsed.get("stderr")
    assert parsed["version"] == SGLANG_VERSION
    assert parsed["tp_size"] == spec.tensor_parallel_size and parsed["port"] == bootstrap.engine_port(spec)
    command = bootstrap.engine_command(spec)
    assert command[command.index("--host") + 1] == "127.0.0.1"  # behind the gateway
    assert parsed["api_key"] == STACK_VALUES[bootstrap.KEY_PLACEHOLDER]
    assert parsed["mem_fraction_static"] is None  # left to SGLang, which sizes it from the card and TP at start
    if spec.placement.nodes == 2:
        assert (parsed["nnodes"], parsed["node_rank"], parsed["dist_init_addr"]) == (2, 1, "192.168.1.10:20000")
    else:
        assert parsed["nnodes"] == 1


def test_a_memory_fraction_the_user_gives_reaches_sglang(sglang_parsed: dict) -> None:
    assert sglang_parsed["own fraction"]["exit"] == 0 and sglang_parsed["own fraction"]["mem_fraction_static"] == 0.8


def test_sglangs_parser_rejects_a_flag_it_does_not_know(sglang_parsed: dict) -> None:
    rejected = sglang_parsed["unknown flag"]
    assert rejected["exit"] == 2 and "unrecognized arguments: --no-such-engine-flag" in rejected["stderr"]
