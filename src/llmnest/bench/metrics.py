"""Stage metrics: pure arithmetic over request records, with the definitions and key names of
`vllm bench serve`, plus what it lacks (send rate, schedule lag, failures by cause, requests in flight).

Latency statistics cover successful requests only (failures are counted apart):
- TTFT = first content chunk - send; E2EL = last content chunk - send;
- TPOT (excl. 1st token) = (E2EL - TTFT) / (output tokens - 1), for requests with more than one token;
- ITL = every gap between consecutive content chunks, pooled across requests.
Throughputs divide by the stage duration (schedule start to the last request's end, as vLLM does).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from .record import RequestRecord

DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0)
GOODPUT_KEYS = ("ttft", "tpot", "e2el")
MAX_SERIES_POINTS = 600


def stats(name: str, values_s: Sequence[float], percentiles: Sequence[float]) -> dict[str, float]:
    """mean/median/std/pNN of seconds, in ms, under vLLM's key names (0 when there is no value)."""
    import numpy as np

    arr = np.asarray(values_s if len(values_s) else [0.0], dtype=float) * 1000.0
    out = {
        f"mean_{name}_ms": float(arr.mean()),
        f"median_{name}_ms": float(np.median(arr)),
        f"std_{name}_ms": float(arr.std()),
    }
    for p in percentiles:
        word = str(int(p)) if int(p) == p else str(p)
        out[f"p{word}_{name}_ms"] = float(np.percentile(arr, p))
    return out


def ttft(r: RequestRecord) -> float:
    return r.chunks[0]


def e2el(r: RequestRecord) -> float:
    return r.chunks[-1]


def output_tokens(r: RequestRecord) -> int:
    """The server's completion_tokens, else the count the runner filled in, else one per content chunk."""
    return r.output_tokens if r.output_tokens is not None else len(r.chunks)


def tpot(r: RequestRecord) -> float | None:
    n = output_tokens(r)
    return (e2el(r) - ttft(r)) / (n - 1) if n > 1 else None


def itls(r: RequestRecord) -> list[float]:
    return [b - a for a, b in pairwise(r.chunks)]


def meets(r: RequestRecord, slo_ms: dict[str, float]) -> bool:
    """Every given limit holds (a request with one token has TPOT 0, as vLLM counts it)."""
    values = {"ttft": ttft(r), "tpot": tpot(r) or 0.0, "e2el": e2el(r)}
    return all(values[k] * 1000.0 <= limit for k, limit in slo_ms.items())


def summarize(
    records: Sequence[RequestRecord],
    duration_s: float,
    *,
    goodput_ms: dict[str, float] | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    planned: int | None = None,
) -> dict[str, Any]:
    """The result of one stage; `planned` is how many requests the schedule held (default: all sent)."""
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    dur = duration_s if duration_s > 0 else math.nan
    total_in = sum(r.prompt_tokens if r.prompt_tokens is not None else r.prompt_len for r in ok)
    total_out = sum(output_tokens(r) for r in ok)
    result: dict[str, Any] = {
        "duration": duration_s,
        "completed": len(ok),
        "failed": len(failed),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / dur,
        "request_goodput": sum(meets(r, goodput_ms) for r in ok) / dur if goodput_ms else None,
        "output_throughput": total_out / dur,
        "total_token_throughput": (total_in + total_out) / dur,
    }
    result |= stats("ttft", [ttft(r) for r in ok], percentiles)
    result |= stats("tpot", [t for r in ok if (t := tpot(r)) is not None], percentiles)
    result |= stats("itl", [g for r in ok for g in itls(r)], percentiles)
    result |= stats("e2el", [e2el(r) for r in ok], percentiles)
    result |= peaks(ok)
    result |= sending(records, planned)
    result["failures"] = dict(Counter(r.error for r in failed).most_common())
    result["in_flight"] = in_flight(records, duration_s)
    result["max_in_flight"] = max((n for _, n in result["in_flight"]), default=0)
    result["output_tokens_from"] = dict(Counter(r.tokens_from for r in ok))
    return result


def peaks(ok: Sequence[RequestRecord]) -> dict[str, float]:
    """vLLM's peak output tokens/s and peak concurrent requests, over one-second buckets."""
    if not ok:
        return {"max_output_tokens_per_s": 0.0, "max_concurrent_requests": 0}
    start = min(r.sent for r in ok)
    end = max(r.sent + e2el(r) for r in ok)
    buckets = math.ceil(end - start) + 1
    tokens = [0] * buckets
    active = [0] * buckets
    for r in ok:
        for c in r.chunks:
            b = int(r.sent + c - start)
            if 0 <= b < buckets:
                tokens[b] += 1
        for b in range(int(r.sent - start), int(r.sent + e2el(r) - start) + 1):
            active[b] += 1
    return {"max_output_tokens_per_s": float(max(tokens)), "max_concurrent_requests": max(active)}


def sending(records: Sequence[RequestRecord], planned: int | None) -> dict[str, Any]:
    """How well the schedule was kept: requests sent, achieved send rate, and the lag of each request's
    first byte (`written`) behind its planned time, over the requests whose bytes went out."""
    import numpy as np

    sent = len(records)
    lags = [r.written - r.scheduled for r in records if r.written is not None]
    last = max((r.sent for r in records), default=0.0)
    out: dict[str, Any] = {
        "requests_planned": planned if planned is not None else sent,
        "requests_sent": sent,
        "achieved_request_rate": sent / last if last > 0 else None,
    }
    out |= {
        "mean_schedule_lag_ms": float(np.mean(lags)) * 1000 if lags else 0.0,
        "p99_schedule_lag_ms": float(np.percentile(lags, 99)) * 1000 if lags else 0.0,
        "max_schedule_lag_ms": max(lags, default=0.0) * 1000,
    }
    return out


def in_flight(records: Sequence[RequestRecord], duration_s: float) -> list[list[float]]:
    """[[t, requests in flight at t]] on an even grid of at most MAX_SERIES_POINTS points."""
    import numpy as np

    if not records or duration_s <= 0:
        return []
    step = max(0.1, duration_s / MAX_SERIES_POINTS)
    grid = np.arange(0.0, duration_s + step, step)
    starts = np.sort([r.sent for r in records])
    ends = np.sort([r.ended for r in records])
    counts = np.searchsorted(starts, grid, side="right") - np.searchsorted(ends, grid, side="right")
    return [[round(float(t), 3), int(n)] for t, n in zip(grid, counts)]


def cost(price_per_hour: float | None, result: dict[str, Any]) -> dict[str, float | None]:
    """Cost per 1M output tokens and per 1M total tokens at the stage's measured throughput."""
    def per_million(rate: float) -> float | None:
        if not price_per_hour or not rate or math.isnan(rate):
            return None
        return price_per_hour / 3600.0 / rate * 1e6

    return {
        "price_per_hour": price_per_hour,
        "cost_per_1m_output_tokens": per_million(result["output_throughput"]),
        "cost_per_1m_total_tokens": per_million(result["total_token_throughput"]),
    }


def parse_goodput(text: str | None) -> dict[str, float]:
    """'ttft:500,tpot:50' -> {'ttft': 500.0, 'tpot': 50.0} (milliseconds)."""
    from ..errors import BadInput

    if not text:
        return {}
    slo: dict[str, float] = {}
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        key, _, value = part.partition(":")
        try:
            limit = float(value)
        except ValueError:
            limit = -1.0
        if key not in GOODPUT_KEYS or limit <= 0:
            raise BadInput(f"--goodput {part!r} is not KEY:MS with KEY in ttft, tpot, e2el and MS > 0")
        slo[key] = limit
    return slo
