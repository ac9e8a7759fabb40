"""Output: vLLM's result block per stage, the sweep table, and the run directory (JSON + records)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .runner import StageResult

LINE = "{:<40} {:<10}"
NUM = "{:<40} {:<10.2f}"
LATENCIES = (
    ("ttft", "TTFT", "Time to First Token"),
    ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
    ("itl", "ITL", "Inter-token Latency"),
    ("e2el", "E2EL", "End-to-end Latency"),
)
PERCENTILES = ("90", "95", "99")


def qps_label(rate: Any) -> str:
    if rate == "inf" or (isinstance(rate, float) and math.isinf(rate)):
        return "inf"
    return f"{float(rate):g}"


def result_block(r: dict[str, Any]) -> str:
    """The stage result in the layout of `vllm bench serve`, then llmnest's load and cost lines."""
    out = ["{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="=")]
    out.append(LINE.format("Successful requests:", r["completed"]))
    out.append(LINE.format("Failed requests:", r["failed"]))
    if r.get("max_concurrency"):
        out.append(LINE.format("Maximum request concurrency:", r["max_concurrency"]))
    if r["request_rate"] != "inf":
        out.append(NUM.format("Request rate configured (RPS):", r["request_rate"]))
    out.append(NUM.format("Benchmark duration (s):", r["duration"]))
    out.append(LINE.format("Total input tokens:", r["total_input_tokens"]))
    out.append(LINE.format("Total generated tokens:", r["total_output_tokens"]))
    out.append(NUM.format("Request throughput (req/s):", r["request_throughput"]))
    if r.get("request_goodput") is not None:
        out.append(NUM.format("Request goodput (req/s):", r["request_goodput"]))
    out.append(NUM.format("Output token throughput (tok/s):", r["output_throughput"]))
    out.append(NUM.format("Peak output token throughput (tok/s):", r["max_output_tokens_per_s"]))
    out.append(NUM.format("Peak concurrent requests:", r["max_concurrent_requests"]))
    out.append(NUM.format("Total token throughput (tok/s):", r["total_token_throughput"]))
    for key, short, header in LATENCIES:
        out.append("{s:{c}^{n}}".format(s=header, n=50, c="-"))
        out.append(NUM.format(f"Mean {short} (ms):", r[f"mean_{key}_ms"]))
        out.append(NUM.format(f"Median {short} (ms):", r[f"median_{key}_ms"]))
        for p in PERCENTILES:
            out.append(NUM.format(f"P{p} {short} (ms):", r[f"p{p}_{key}_ms"]))
    out.append("{s:{c}^{n}}".format(s="Load (llmnest)", n=50, c="-"))
    if r.get("achieved_request_rate") is not None:
        out.append(NUM.format("Achieved send rate (req/s):", r["achieved_request_rate"]))
    out.append(NUM.format("Mean schedule lag (ms):", r["mean_schedule_lag_ms"]))
    out.append(NUM.format("Max schedule lag (ms):", r["max_schedule_lag_ms"]))
    out.append(LINE.format("Max requests in flight:", r["max_in_flight"]))
    if "client_processes" in r:
        out.append(LINE.format("Client processes:", r["client_processes"]))
        if r.get("client_cpu_per_token_us") is not None:
            out.append(NUM.format("Client CPU per output token (us):", r["client_cpu_per_token_us"]))
        out.append(LINE.format("Busiest client process CPU:", f"{r['client_busiest_process_cpu']:.0%}"))
        out.append(NUM.format("P99 client event-loop delay (ms):", r["p99_loop_delay_ms"]))
        verdict = "SATURATED (see warnings)" if r["client_saturated"] else "ok (not the bottleneck)"
        out.append(LINE.format("Client:", verdict))
    if r["failures"]:
        causes = ", ".join(f"{cause} {n}" for cause, n in r["failures"].items())
        out.append(LINE.format("Failures by cause:", causes))
    if r.get("cost_per_1m_output_tokens") is not None:
        out.append("{s:{c}^{n}}".format(s="Cost (llmnest)", n=50, c="-"))
        out.append(NUM.format("Price per hour:", r["price_per_hour"]))
        out.append("{:<40} {:<10.4f}".format("Cost per 1M output tokens:", r["cost_per_1m_output_tokens"]))
        out.append("{:<40} {:<10.4f}".format("Cost per 1M total tokens:", r["cost_per_1m_total_tokens"]))
    out.append("=" * 50)
    return "\n".join(out)


SWEEP_COLUMNS = (
    ("QPS", lambda r: qps_label(r["request_rate"])),
    ("ok/sent", lambda r: f"{r['completed']}/{r['requests_sent']}"),
    ("req/s", lambda r: f"{r['request_throughput']:.2f}"),
    ("out tok/s", lambda r: f"{r['output_throughput']:.1f}"),
    ("TTFT med/p99 ms", lambda r: f"{r['median_ttft_ms']:.0f} / {r['p99_ttft_ms']:.0f}"),
    ("TPOT med/p99 ms", lambda r: f"{r['median_tpot_ms']:.1f} / {r['p99_tpot_ms']:.1f}"),
    ("E2EL med/p99 ms", lambda r: f"{r['median_e2el_ms']:.0f} / {r['p99_e2el_ms']:.0f}"),
    ("goodput", lambda r: "" if r.get("request_goodput") is None else f"{r['request_goodput']:.2f}"),
    ("$/1M out", lambda r: "" if r.get("cost_per_1m_output_tokens") is None else f"{r['cost_per_1m_output_tokens']:.3f}"),
)


def sweep_table(results: Sequence[dict[str, Any]], title: str = "Sweep summary") -> Any:
    """A rich table, one row per stage."""
    from rich.table import Table

    table = Table(*(name for name, _ in SWEEP_COLUMNS), title=title)
    for r in results:
        table.add_row(*(cell(r) for _, cell in SWEEP_COLUMNS))
    return table


def stage_file(rate: Any) -> str:
    return f"stage-qps{qps_label(rate)}"


def write_run(out: Path, config: dict[str, Any], stages: Sequence[StageResult]) -> list[Path]:
    """run.json (config + stage summaries), stage-qpsN.json (vLLM keys + ours), stage-qpsN.records.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in stages:
        stem = stage_file(s.result["request_rate"])
        doc = {**config, **s.result, "interrupted": s.interrupted}
        summary, records = out / f"{stem}.json", out / f"{stem}.records.jsonl"
        summary.write_text(json.dumps(plain(doc), indent=2, default=str) + "\n")
        with records.open("w") as f:
            for rec in s.records:
                f.write(json.dumps(asdict(rec)) + "\n")
        written += [summary, records]
    run = {**config, "stages": [stage_file(s.result["request_rate"]) + ".json" for s in stages],
           "interrupted": any(s.interrupted for s in stages)}
    (out / "run.json").write_text(json.dumps(plain(run), indent=2, default=str) + "\n")
    return [out / "run.json", *written]


def load_run(path: Path) -> list[dict[str, Any]]:
    """The stage results of a run directory, in sweep order."""
    from ..errors import BadInput

    index = path / "run.json"
    if not index.is_file():
        raise BadInput(f"{path} is not a bench run directory (no run.json); give a directory made by `llmnest bench --out`")
    run = json.loads(index.read_text())
    return [json.loads((path / name).read_text()) for name in run["stages"]]


def plain(obj: Any) -> Any:
    """NaN -> None recursively, so JSON output stays standard."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj
