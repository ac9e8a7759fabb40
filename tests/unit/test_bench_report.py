"""Output from recorded traces: vLLM's result block, the run directory round trip, charts, compare."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest

from llmnest.bench import charts, compare, report, runner
from llmnest.bench.datasets import Prompt
from llmnest.bench.request import RequestRecord
from llmnest.errors import BadInput

PNG = b"\x89PNG\r\n\x1a\n"


def trace(rate: float) -> runner.StageResult:
    records = []
    for i in range(4):
        r = RequestRecord(i, scheduled=i * 0.5, prompt_len=10, max_tokens=4)
        r.sent, r.ok, r.chunks = i * 0.5 + 0.001, True, [0.1, 0.2, 0.3, 0.4]
        r.output_tokens, r.prompt_tokens, r.ended = 4, 12, i * 0.5 + 0.45
        records.append(r)
    failed = RequestRecord(4, 2.0, 10, 4)
    failed.sent, failed.ended, failed.error = 2.0, 2.1, "http 500"
    records.append(failed)
    stage = runner.Stage(rate, [Prompt("p", 10, 4)] * 5)
    plan = runner.BenchPlan([stage], goodput_ms={"ttft": 150.0}, price_per_hour=1.8)
    return runner.StageResult(rate, runner.summarize(plan, stage, records, 2.5), records)


def test_result_block_has_vllm_lines_and_ours() -> None:
    block = report.result_block(trace(2.0).result)
    lines = block.splitlines()
    assert lines[0] == "============ Serving Benchmark Result ============"
    assert lines[1].split() == ["Successful", "requests:", "4"]
    assert "Request rate configured (RPS):           2.00" in block
    assert "Benchmark duration (s):                  2.50" in block
    for text in ("Output token throughput (tok/s):", "Mean TTFT (ms):", "P99 TPOT (ms):", "Median ITL (ms):",
                 "P99 E2EL (ms):", "Request goodput (req/s):", "Failures by cause:                       http 500 1",
                 "Cost per 1M output tokens:", "Achieved send rate (req/s):"):
        assert text in block
    assert lines[-1] == "=" * 50


def test_infinite_rate_has_no_configured_rate_line() -> None:
    assert "Request rate configured" not in report.result_block(trace(math.inf).result)


def test_run_directory_round_trip_with_fractional_and_infinite_rates(tmp_path: Path) -> None:
    stages = [trace(0.5), trace(2.0), trace(math.inf)]
    files = report.write_run(tmp_path, {"model_id": "m"}, stages)
    names = sorted(p.name for p in files)
    assert names == sorted(["run.json", "stage-qps0.5.json", "stage-qps0.5.records.jsonl", "stage-qps2.json",
                            "stage-qps2.records.jsonl", "stage-qpsinf.json", "stage-qpsinf.records.jsonl"])
    loaded = report.load_run(tmp_path)
    assert [r["request_rate"] for r in loaded] == [0.5, 2.0, "inf"]
    assert loaded[0]["model_id"] == "m" and loaded[0]["completed"] == 4 and loaded[0]["interrupted"] is False
    assert loaded[1]["cost_per_1m_output_tokens"] == pytest.approx(1.8 / 3600 / (16 / 2.5) * 1e6)
    lines = (tmp_path / "stage-qps0.5.records.jsonl").read_text().splitlines()
    assert [json.loads(x)["error"] for x in lines] == [None] * 4 + ["http 500"]


def test_nan_becomes_null() -> None:
    assert report.plain({"a": [math.nan, 1.0], "b": math.inf}) == {"a": [None, 1.0], "b": None}


def test_charts_and_compare_write_pngs(tmp_path: Path) -> None:
    stages = [trace(0.5), trace(2.0), trace(math.inf)]
    results = [s.result for s in stages]
    paths = charts.run_charts(results, [[asdict(r) for r in s.records] for s in stages], tmp_path / "charts")
    assert len(paths) == 6 and all(p.read_bytes().startswith(PNG) for p in paths)
    report.write_run(tmp_path / "a", {}, stages)
    report.write_run(tmp_path / "b", {}, stages[:2])
    runs = compare.load_runs([tmp_path / "a", tmp_path / "b"])
    assert list(runs) == ["a", "b"]
    out = compare.compare_charts(runs, tmp_path / "cmp")
    assert all(p.read_bytes().startswith(PNG) for p in out)
    assert compare.compare_table(runs).row_count == 5


def test_compare_rejects_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not a bench run directory"):
        compare.load_runs([tmp_path])
