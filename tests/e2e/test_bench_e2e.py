"""`llmnest bench` against real vLLM: the shared demo deployment (API key on) at a low QPS, and a
server of the test's own that is stalled and then killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llmnest.bench.health import BUSY_LIMIT
from tests.conftest import MODELS_CACHE, free_port

pytestmark = pytest.mark.e2e

TINY = Path(__file__).resolve().parent.parent / "data" / "sharegpt_tiny.json"
PNG = b"\x89PNG\r\n\x1a\n"


def bench_json(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_random_prompts_have_the_asked_token_length_with_the_real_tokenizer(demo) -> None:
    from llmnest.bench import datasets

    tok = datasets.load_tokenizer(MODELS_CACHE / "smollm2-135m")  # converted by the demo deployment
    prompts = datasets.sample_random(tok, 6, input_len=64, output_len=20, seed=3)
    assert [p.output_len for p in prompts] == [20] * 6
    assert all(p.prompt_len == len(tok.encode(p.text)) for p in prompts)
    assert all(abs(p.prompt_len - 64) <= 2 for p in prompts)
    assert prompts == datasets.sample_random(tok, 6, input_len=64, output_len=20, seed=3)
    assert len({p.text for p in prompts}) == 6


def test_demo_run_json_keys_consistent_and_charts(demo, tmp_path: Path) -> None:
    out = tmp_path / "run"
    doc = bench_json(demo.cli(
        "bench", demo.name, "--dataset-path", str(TINY), "--qps", "0.5,1", "--num-prompts", "5",
        "--output-len", "8", "--ignore-eos", "--goodput", "ttft:60000,tpot:10000", "--price-per-hour", "2.5",
        "--seed", "1", "--json", "--out", str(out)))
    assert doc["model_id"] == demo.model and doc["base_url"] == demo.base_url.rstrip("/")
    assert [s["request_rate"] for s in doc["stages"]] == [0.5, 1.0]
    for stage in doc["stages"]:
        for key in ("completed", "failed", "duration", "request_throughput", "output_throughput",
                    "total_token_throughput", "request_goodput", "total_input_tokens", "total_output_tokens",
                    "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms", "mean_itl_ms",
                    "mean_e2el_ms", "p99_e2el_ms", "achieved_request_rate", "failures", "in_flight",
                    "cost_per_1m_output_tokens", "cost_per_1m_total_tokens"):
            assert key in stage, key
        assert stage["completed"] == 5 and stage["failed"] == 0 and stage["failures"] == {}
        assert stage["requests_sent"] == stage["requests_planned"] == 5
        assert stage["total_output_tokens"] == 5 * 8  # ignore_eos: exactly max_tokens each, from usage
        assert stage["output_tokens_from"] == {"usage": 5}
        assert stage["output_throughput"] * stage["duration"] == pytest.approx(40)
        assert stage["request_throughput"] * stage["duration"] == pytest.approx(5)
        assert 0 < stage["mean_ttft_ms"] <= stage["mean_e2el_ms"]
        assert stage["median_ttft_ms"] == stage["p50_ttft_ms"] <= stage["p99_ttft_ms"]
        assert stage["request_goodput"] <= stage["request_throughput"]
        assert stage["cost_per_1m_output_tokens"] == pytest.approx(2.5 / 3600 / stage["output_throughput"] * 1e6)
        assert stage["max_in_flight"] >= 1
        assert stage["client_processes"] == 1 and stage["client_cpu_s"] > 0  # the client's own health
        # at 1 req/s the client is far from its own limit; on a machine the engine keeps busy it may still be
        # kept off the CPU, which it must then say (and only that)
        assert stage["client_busiest_process_cpu"] < BUSY_LIMIT
        assert stage["client_saturated"] == bool(stage["client_warnings"])
        assert all("quieter machine" in w for w in stage["client_warnings"]), stage["client_warnings"]
    files = {p.name for p in out.iterdir()}
    assert {"run.json", "stage-qps0.5.json", "stage-qps1.json", "stage-qps1.records.jsonl"} <= files
    records = [json.loads(line) for line in (out / "stage-qps1.records.jsonl").read_text().splitlines()]
    assert len(records) == 5 and all(r["ok"] and len(r["chunks"]) >= 1 for r in records)
    saved = json.loads((out / "stage-qps1.json").read_text())
    assert saved["mean_ttft_ms"] == doc["stages"][1]["mean_ttft_ms"]
    charts = sorted(p.name for p in (out / "charts").iterdir())
    assert charts == ["latency_vs_qps.png", "latency_vs_throughput.png", "stage-qps0.5.png", "stage-qps1.png",
                      "throughput_vs_qps.png"]
    assert all((out / "charts" / c).read_bytes().startswith(PNG) for c in charts)

    compare = demo.cli("bench", "compare", str(out), str(out), "--out", str(tmp_path / "cmp"))
    assert compare.returncode == 0, compare.stderr
    assert "Runs compared" in compare.stdout and "run'" in compare.stdout
    assert len(list((tmp_path / "cmp").glob("*.png"))) == 3


def test_worker_processes_against_the_real_server(demo, tmp_path: Path) -> None:
    """Two client processes share one schedule: one set of records, in schedule order, all measured."""
    out = tmp_path / "run"
    doc = bench_json(demo.cli(
        "bench", demo.name, "--dataset-path", str(TINY), "--qps", "2", "--num-prompts", "4", "--output-len", "4",
        "--ignore-eos", "--workers", "2", "--json", "--out", str(out)))
    stage = doc["stages"][0]
    assert stage["client_processes"] == 2 and stage["completed"] == 4 and stage["total_output_tokens"] == 16
    records = [json.loads(line) for line in (out / "stage-qps2.records.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert all(r["ok"] and 1 <= len(r["chunks"]) <= 4 and r["sent"] >= r["scheduled"] - 0.001 for r in records)
    assert (out / "charts" / "stage-qps2.png").read_bytes().startswith(PNG)


def test_human_output_has_the_vllm_result_block(demo) -> None:
    done = demo.cli("bench", demo.name, "--dataset-path", str(TINY), "--qps", "1", "--num-prompts", "2",
                    "--output-len", "4")
    assert done.returncode == 0, done.stderr
    assert "============ Serving Benchmark Result ============" in done.stdout
    for line in ("Successful requests:", "Benchmark duration (s):", "Request throughput (req/s):",
                 "Output token throughput (tok/s):", "Mean TTFT (ms):", "P99 TPOT (ms):", "Mean E2EL (ms):"):
        assert line in done.stdout


@pytest.mark.parametrize("key, text", [("sk-wrong", "refused the API key (HTTP 401)"), (None, "needs an API key")])
def test_wrong_or_missing_key_is_caught_before_the_run(demo, key: str | None, text: str) -> None:
    args = ["bench", "--base-url", demo.base_url, "--dataset-path", str(TINY), "--tokenizer", _model_dir(),
            "--qps", "1", "--num-prompts", "2"]
    env = {k: v for k, v in demo.env.items() if k != "LLMNEST_BENCH_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "llmnest", *args, *(["--api-key", key] if key else [])],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and text in done.stderr and "Traceback" not in done.stderr
    assert "Serving Benchmark Result" not in done.stdout


def test_unknown_model(demo) -> None:
    done = demo.cli("bench", demo.name, "--model", "no-such-model", "--dataset-path", str(TINY), "--num-prompts", "2")
    assert done.returncode == 2
    assert f"model 'no-such-model' is not served at {demo.base_url.rstrip('/')} (it serves: {demo.model})" in done.stderr


def test_ctrl_c_gives_a_partial_report(demo) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmnest", "bench", demo.name, "--dataset-path", str(TINY), "--qps", "0.5",
         "--num-prompts", "30", "--output-len", "4", "--json"],
        env=demo.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(20)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    stage = json.loads(stdout)["stages"][0]
    assert stage["interrupted"] is True
    assert 0 < stage["requests_sent"] < 30 and stage["requests_planned"] == 30
    assert stage["completed"] + stage["failed"] == stage["requests_sent"]
    assert stage["completed"] >= 1


def _model_dir() -> str:
    """The converted demo weights the `demo` deployment serves (cached by the test session)."""
    found = sorted(p.parent for p in MODELS_CACHE.rglob("tokenizer.json") if "smollm2" in str(p).lower())
    assert found, f"no converted demo model under {MODELS_CACHE}"
    return str(found[0])


@pytest.fixture
def own_server(demo, tmp_path: Path):
    """A vLLM server of this test alone (the demo weights, API key on), in its own process group."""
    port = free_port()
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", _model_dir(),
         "--served-model-name", "own", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048",
         "--enforce-eager"],
        env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_API_KEY": "sk-own"},
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    yield proc, f"http://127.0.0.1:{port}/v1", log
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def test_server_stalled_then_killed_mid_run(own_server, tmp_path: Path) -> None:
    """Requests to a stopped server time out (bounded by --timeout), those after it died fail to
    connect; all are counted by cause and the run still ends with a report."""
    server, url, log = own_server
    out = tmp_path / "run"
    bench = subprocess.Popen(
        [sys.executable, "-m", "llmnest", "bench", "--base-url", url, "--api-key", "sk-own", "--dataset-path",
         str(TINY), "--tokenizer", _model_dir(), "--qps", "0.5", "--burstiness", "inf", "--num-prompts", "16",
         "--output-len", "6", "--ignore-eos", "--timeout", "6", "--json", "--out", str(out)],
        env={**os.environ, "NO_COLOR": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while log.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200') < 4:  # pre-flight + 3 requests
        assert time.monotonic() < deadline and bench.poll() is None, "the run did not start"
        time.sleep(0.5)
    time.sleep(2)
    os.killpg(server.pid, signal.SIGSTOP)  # stalls: in-flight and new requests get no answer
    time.sleep(10)
    os.killpg(server.pid, signal.SIGKILL)  # dies: later requests cannot connect
    started = time.monotonic()
    stdout, stderr = bench.communicate(timeout=120)
    assert time.monotonic() - started < 60  # bounded: the schedule's end plus one timeout
    assert bench.returncode == 0, stderr
    stage = json.loads(stdout)["stages"][0]
    assert stage["requests_sent"] == 16 and stage["completed"] + stage["failed"] == 16
    assert stage["completed"] >= 1
    assert stage["failures"].get("timeout", 0) >= 1 and stage["failures"].get("connection", 0) >= 1
    records = [json.loads(line) for line in (out / "stage-qps0.5.records.jsonl").read_text().splitlines()]
    assert sorted({r["error"] for r in records if not r["ok"]}) == sorted(stage["failures"])
    assert (out / "charts" / "stage-qps0.5.png").exists()
