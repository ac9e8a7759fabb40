"""Metric arithmetic on recorded request traces, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmnest.bench import metrics
from llmnest.bench.request import RequestRecord


def rec(i: int, sent: float, chunks: list[float], out: int | None = None, prompt: int | None = 10,
        error: str | None = None, ended: float | None = None, scheduled: float | None = None,
        written: float | None = None) -> RequestRecord:
    r = RequestRecord(i, sent if scheduled is None else scheduled, prompt_len=8, max_tokens=64)
    r.sent = sent
    r.written = sent if written is None else written
    r.chunks = chunks
    r.ok = error is None
    r.error = error
    r.output_tokens = out if error is None else None
    r.prompt_tokens = prompt if error is None else None
    r.ended = ended if ended is not None else sent + (chunks[-1] if chunks else 0.5)
    return r


# Two successes and one failure, over a 4-second stage.
A = rec(0, 0.0, [0.1, 0.3, 0.5, 0.7], out=4)  # TTFT 100, E2EL 700, TPOT 200, ITL 200 x3
B = rec(1, 1.0, [0.2, 0.25, 1.2], out=5)  # TTFT 200, E2EL 1200, TPOT 250, ITL 50, 950
C = rec(2, 2.0, [], error="timeout", ended=4.0)
TRACE = [A, B, C]


def test_vllm_definitions_on_a_trace() -> None:
    r = metrics.summarize(TRACE, 4.0)
    assert (r["completed"], r["failed"]) == (2, 1)
    assert r["total_input_tokens"] == 20  # the server's prompt_tokens
    assert r["total_output_tokens"] == 9  # the server's completion_tokens, not the chunk count
    assert r["request_throughput"] == pytest.approx(2 / 4)
    assert r["output_throughput"] == pytest.approx(9 / 4)
    assert r["total_token_throughput"] == pytest.approx(29 / 4)
    assert r["mean_ttft_ms"] == pytest.approx(150)
    assert r["median_ttft_ms"] == pytest.approx(150)
    assert r["std_ttft_ms"] == pytest.approx(50)
    assert r["mean_tpot_ms"] == pytest.approx(225)  # (600/3 + 1000/4) / 2
    assert r["mean_e2el_ms"] == pytest.approx(950)
    itl = [200, 200, 200, 50, 950]
    assert r["mean_itl_ms"] == pytest.approx(np.mean(itl))
    assert r["p99_itl_ms"] == pytest.approx(np.percentile(itl, 99))
    assert r["p90_e2el_ms"] == pytest.approx(np.percentile([700, 1200], 90))
    assert r["failures"] == {"timeout": 1}
    assert r["request_goodput"] is None


def test_keys_use_vllm_names() -> None:
    r = metrics.summarize(TRACE, 4.0)
    for name in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std", "p50", "p90", "p95", "p99"):
            assert f"{stat}_{name}_ms" in r
    for key in ("duration", "completed", "failed", "request_throughput", "output_throughput",
                "total_token_throughput", "max_output_tokens_per_s", "max_concurrent_requests"):
        assert key in r


def test_prompt_len_is_the_fallback_for_input_tokens() -> None:
    r = metrics.summarize([rec(0, 0.0, [0.1, 0.2], out=2, prompt=None)], 1.0)
    assert r["total_input_tokens"] == 8


def test_chunk_count_is_the_last_fallback_for_output_tokens() -> None:
    r = metrics.summarize([rec(0, 0.0, [0.1, 0.2, 0.3], out=None)], 1.0)
    assert r["total_output_tokens"] == 3


def test_one_token_requests_have_no_tpot_but_pass_a_tpot_slo() -> None:
    one = rec(0, 0.0, [0.1], out=1)
    assert metrics.tpot(one) is None
    r = metrics.summarize([one], 1.0, goodput_ms={"tpot": 1.0})
    assert r["mean_tpot_ms"] == 0.0
    assert r["request_goodput"] == 1.0


def test_goodput_counts_requests_meeting_every_limit() -> None:
    r = metrics.summarize(TRACE, 4.0, goodput_ms={"ttft": 150, "tpot": 240})
    assert r["request_goodput"] == pytest.approx(1 / 4)  # A meets both; B's TTFT 200 > 150
    r = metrics.summarize(TRACE, 4.0, goodput_ms={"e2el": 1500})
    assert r["request_goodput"] == pytest.approx(2 / 4)


def test_all_failed_gives_zeros_not_errors() -> None:
    r = metrics.summarize([C], 4.0)
    assert r["completed"] == 0 and r["mean_ttft_ms"] == 0.0 and r["output_throughput"] == 0.0


def test_send_rate_and_schedule_lag() -> None:
    """The lag is that of the request's first byte: a connection opened first (written after sent)
    counts; a request whose bytes never went out (its connection failed) has no lag."""
    late = [rec(0, 0.01, [0.1], out=1, scheduled=0.0), rec(1, 1.03, [0.1], out=1, scheduled=1.0, written=1.05),
            rec(2, 2.0, [0.1], out=1, scheduled=2.0)]
    never = rec(3, 2.5, [], error="connection", scheduled=2.4)
    never.written = None
    r = metrics.summarize([*late, never], 3.0, planned=5)
    assert r["requests_sent"] == 4 and r["requests_planned"] == 5
    assert r["achieved_request_rate"] == pytest.approx(4 / 2.5)
    assert r["mean_schedule_lag_ms"] == pytest.approx(60 / 3)
    assert r["max_schedule_lag_ms"] == pytest.approx(50)


def test_in_flight_series_counts_sent_but_not_ended() -> None:
    series = {t: n for t, n in metrics.in_flight(TRACE, 4.0)}
    assert series[0.0] == 1  # A sent at 0
    assert series[1.1] == 1  # A ended at 0.7, B in flight
    assert series[2.1] == 2  # B (ends 2.2) and C
    assert series[3.0] == 1  # C until 4.0
    assert metrics.summarize(TRACE, 4.0)["max_in_flight"] == 2


def test_peaks_over_one_second_buckets() -> None:
    """vLLM's peaks: chunks counted per whole second since the first send; a request is active in
    every second from its send to its last chunk."""
    assert metrics.peaks([A, B]) == {"max_output_tokens_per_s": 4.0, "max_concurrent_requests": 1}
    d = rec(3, 0.5, [0.1, 0.9], out=2)  # chunks at 0.6 (second 0) and 1.4 (second 1)
    assert metrics.peaks([A, B, d]) == {"max_output_tokens_per_s": 5.0, "max_concurrent_requests": 2}
    assert metrics.peaks([]) == {"max_output_tokens_per_s": 0.0, "max_concurrent_requests": 0}


def test_cost_per_million_tokens() -> None:
    c = metrics.cost(3.6, {"output_throughput": 100.0, "total_token_throughput": 400.0})
    assert c["cost_per_1m_output_tokens"] == pytest.approx(10.0)  # 3.6/h = 0.001/s; 1e6 tok / 100 tok/s = 1e4 s
    assert c["cost_per_1m_total_tokens"] == pytest.approx(2.5)
    none = metrics.cost(None, {"output_throughput": 100.0, "total_token_throughput": 400.0})
    assert none["cost_per_1m_output_tokens"] is None
    assert metrics.cost(1.0, {"output_throughput": 0.0, "total_token_throughput": math.nan})["cost_per_1m_total_tokens"] is None


def test_parse_goodput() -> None:
    assert metrics.parse_goodput("ttft:500,tpot:50,e2el:8000") == {"ttft": 500, "tpot": 50, "e2el": 8000}
    assert metrics.parse_goodput(None) == {}
    for bad in ("ttft", "ttft:x", "foo:10", "tpot:-1"):
        with pytest.raises(Exception, match="--goodput"):
            metrics.parse_goodput(bad)
