"""`llmnest plan` as a user meets it: JSON, the ranking, and one clear line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli_env, run_cli


def assert_one_line_error(done, *needles: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and not done.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_json_has_the_promised_fields(cli):
    done = cli("plan", "qwq-32b", "--instance", "ecs.gn7i-4x.8xlarge", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    for field in ["fits", "reason", "weights_bytes", "kv_bytes_per_token", "kv_cache_tokens", "max_model_len",
                  "max_concurrent_requests", "tensor_parallel_size", "valid_tensor_parallel_sizes"]:
        assert field in plan
    assert plan["fits"] is True and plan["tensor_parallel_size"] == 4
    assert plan["price"]["estimate"] is True and plan["price"]["region"] and plan["price"]["date"]


def test_cpu_target_shows_the_arithmetic(cli):
    done = cli("plan", "smollm2-135m", "--cpu-kv-gib", "2", "--max-model-len", "4096")
    assert done.returncode == 0, done.stderr
    assert "93,184 tokens" in done.stdout and "floor(2,147,483,648 B / (128 tokens x 23,040 B)) = 728" in done.stdout


def test_gpu_target_that_does_not_fit_suggests(cli):
    done = cli("plan", "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "--gpu", "A10", "--gpus", "4", "--json")
    plan = json.loads(done.stdout)
    assert done.returncode == 0 and plan["fits"] is False
    assert plan["reason"].startswith("does not fit: weights need")
    # 16: the CUDA graph estimate at tp > 1 (captured all-reduces, ~3 GiB per GPU for 80 layers) leaves 8 too little
    assert plan["suggestion"] == "needs 16 x A10 (tensor parallel 16) at max-model-len 32,768"


def test_no_target_ranks_instance_types_cheapest_first(cli):
    done = cli("plan", "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "--json")
    assert done.returncode == 0, done.stderr
    ranking = json.loads(done.stdout)
    prices = [i["price"]["cny_per_hour"] for i in ranking["instances"]]
    assert prices and prices == sorted(prices) and all(i["plan"]["fits"] for i in ranking["instances"])
    assert "ecs.gn7i-8x.16xlarge" in {i["instance_type"] for i in ranking["instances"]}
    table = cli("plan", "deepseek-ai/DeepSeek-R1-Distill-Llama-70B").stdout
    for column in ["instance type", "price", "region", "taken", "source", "KV tokens", "estimates"]:
        assert column in table


def test_a_local_model_directory_is_planned_from_its_config(cli, tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({
        "num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
        "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192,
        "torch_dtype": "bfloat16", "tie_word_embeddings": True, "model_type": "llama",
    }))
    done = cli("plan", str(tmp_path), "--cpu-kv-gib", "2", "--max-model-len", "4096", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["kv_cache_tokens"] == 93_184 and plan["weights_bytes"] == 134_515_008 * 2


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["qwq-32b", "--gpu", "A1O"], ["unknown GPU 'A1O'", "Did you mean: A10"]),
        (["qwq-32b", "--instance", "ecs.gn7i-4x.8xlarg"], ["unknown instance type", "ecs.gn7i-4x.8xlarge"]),
        (["qwq-33b"], ["unknown model 'qwq-33b'", "qwq-32b"]),
        (["qwq-32b", "--gpu", "T4", "--dtype", "bf16"], ["no bf16", "use --dtype fp16"]),
        (["qwq-32b", "--gpu", "A10", "--dtype", "int4"], ["pre-quantized checkpoint"]),
        (["qwq-32b", "--cpu-kv-gib", "2", "--dtype", "fp8"], ["CPU build serves"]),
        (["qwq-32b", "--gpu", "A10", "--kv-dtype", "int3"], ["unknown --kv-dtype 'int3'"]),
        (["qwq-32b", "--cpu-kv-gib", "0"], ["--cpu-kv-gib must be positive"]),
        (["qwq-32b", "--gpu", "A10", "--gpus", "-2"], ["--gpus must be positive"]),
        (["qwq-32b", "--gpu", "A10", "--max-model-len", "0"], ["--max-model-len must be positive"]),
        (["qwq-32b", "--gpu", "A10", "--gpu-memory-utilization", "1.5"], ["(0, 1]"]),
        (["qwq-32b", "--gpus", "2"], ["--gpus needs --gpu"]),
        (["qwq-32b", "--gpu", "A10", "--instance", "ecs.gn7i-4x.8xlarge"], ["give one target"]),
        (["/", "--cpu-kv-gib", "1"], ["no config.json"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, args, needles):
    assert_one_line_error(cli("plan", *args), *needles)


def test_a_model_without_architecture_figures(cli, tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mystery", "hidden_size": 64}))
    assert_one_line_error(cli("plan", str(tmp_path), "--cpu-kv-gib", "1"), "lacks architecture figures",
                          "num_hidden_layers")


def test_help_lists_every_option(cli, home: Path):
    out = run_cli({**cli_env(home), "COLUMNS": "250"}, "plan", "--help").stdout  # wide: every flag in full
    for option in ["--gpu", "--gpus", "--instance", "--cpu-kv-gib", "--max-model-len", "--gpu-memory-utilization",
                   "--tensor-parallel-size", "--dtype", "--kv-dtype", "--all", "--json", "--target", "--context",
                   "--gpu-type", "--nodes", "--region"]:
        assert option in out, option
    assert " plan " in cli("--help").stdout


def test_gpu_plan_says_what_is_measured_and_how_sure(cli):
    done = cli("plan", "Qwen/Qwen3-8B", "--gpu", "A100-40G", "--gpu-memory-utilization", "0.9")
    assert done.returncode == 0, done.stderr
    assert "40,325 MiB as CUDA reports it" in done.stdout
    for needle in ["facts and estimates:", "measured: A100-40G total 40,325 MiB", "estimate: activation peak",
                   "how sure: on held-out published logs"]:
        assert needle in done.stdout, needle
    estimated = cli("plan", "Qwen/Qwen3-8B", "--gpu", "A10").stdout
    assert "estimate: A10 total 22,337 MiB" in estimated and "conservative" in estimated


def test_engine_settings_change_the_overhead(cli):
    def overhead(*flags: str) -> int:
        done = cli("plan", "Qwen/Qwen3-8B", "--gpu", "H20", "--json", *flags)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["overhead_bytes"]

    default = overhead("--vllm-version", "0.19.0")
    assert overhead("--vllm-version", "0.19.0", "--max-num-seqs", "64") < default  # fewer sampler rows
    graphs = overhead("--vllm-version", "0.20.0")
    assert graphs > default and overhead("--vllm-version", "0.20.0", "--enforce-eager") == default
    sort = overhead("--vllm-version", "0.12.0")
    assert overhead("--vllm-version", "0.12.0", "--set", "env.VLLM_USE_FLASHINFER_SAMPLER=1") < sort
    pcie = overhead("--vllm-version", "0.10.0", "--gpus", "2", "--interconnect", "pcie")
    assert pcie < overhead("--vllm-version", "0.10.0", "--gpus", "2") == overhead(
        "--vllm-version", "0.10.0", "--gpus", "2", "--interconnect", "nvlink")


def test_a_card_outside_the_catalog_by_its_memory(cli):
    done = cli("plan", "Qwen/Qwen3-8B", "--gpu", "RTX PRO 6000", "--gpu-memory-gib", "94.97", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["gpu_memory_bytes"] == round(94.97 * 2**30) and plan["fits"]
    assert_one_line_error(cli("plan", "Qwen/Qwen3-8B", "--gpu", "RTX PRO 6000"), "--gpu-memory-gib")


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, "GPTQ checkpoint"),
        ({"quantization_config": {"quant_method": "awq"}}, "AWQ checkpoint"),
        ({"quantization_config": {"quant_method": "mxfp4"}}, "MXFP4 checkpoint"),
        ({"layer_types": ["sliding_attention", "full_attention"]}, "sliding_attention layers"),
        ({"sliding_window": 4096, "max_position_embeddings": 32768}, "sliding-window attention (window 4,096"),
        ({"full_attention_interval": 4}, "hybrid"),
        ({"vision_config": {"hidden_size": 1024}}, "multimodal"),
    ],
)
def test_what_the_model_does_not_cover_is_refused_in_one_line(cli, tmp_path: Path, config, needle):
    base = {"model_type": "x", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
            "num_attention_heads": 4, "vocab_size": 1000, "max_position_embeddings": 32768}
    (tmp_path / "config.json").write_text(json.dumps({**base, **config}))
    assert_one_line_error(cli("plan", str(tmp_path), "--gpu", "A10"), needle, "not modelled")


def test_a_qwen2_window_that_is_switched_off_is_planned(cli, tmp_path: Path):
    config = {"model_type": "qwen2", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
              "num_attention_heads": 4, "vocab_size": 1000, "max_position_embeddings": 32768,
              "sliding_window": 4096, "use_sliding_window": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    done = cli("plan", str(tmp_path), "--gpu", "A10", "--json")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-num-seqs", "8", "--cpu-kv-gib", "1"], "apply to GPU targets"),
        (["--gpu", "A10", "--interconnect", "infiniband"], "use nvlink or pcie"),
        (["--gpu", "A10", "--set", "max-num-seqs=8"], "plan takes --set env.NAME=VALUE"),
        (["--gpu-memory-gib", "20"], "--gpu-memory-gib needs --gpu"),
        (["--gpu", "A10", "--max-num-seqs", "0"], "--max-num-seqs must be positive"),
        (["--gpu", "A10", "--vllm-version", "latest"], "not a version like 0.11.0"),
    ],
)
def test_bad_engine_settings_are_one_line(cli, args, needle):
    assert_one_line_error(cli("plan", "Qwen/Qwen3-8B", *args), needle)


def test_a_hand_given_old_version_may_lack_flashinfer(cli):
    """0.8 to 0.11.0: the images ship FlashInfer, a pip install does not. A version given by hand plans the sort and
    says it is unsure, unless the environment says which; the cloud image's version (0.11.0) plans FlashInfer's."""
    def plan(*flags: str) -> str:
        done = cli("plan", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "--gpu", "A10", *flags)
        assert done.returncode == 0, done.stderr
        return done.stdout

    hand = plan("--vllm-version", "0.10.2")
    assert "sort sampler" in hand and "a pip install does not" in hand
    told = plan("--vllm-version", "0.10.2", "--set", "env.VLLM_USE_FLASHINFER_SAMPLER=1")
    assert "flashinfer sampler" in told and "unsure" not in told
    assert "flashinfer sampler" in cli("plan", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "--instance",
                                       "ecs.gn7i-c8g1.2xlarge").stdout
