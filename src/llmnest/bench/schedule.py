"""Arrival schedules: when each request of a stage is sent, as offsets in seconds from the stage start.

The offsets are drawn once and the sender sleeps until each absolute time, so a slow loop iteration
delays one send and never shifts the rest (sleeping gap after gap drifts). As in `vllm bench serve`:
gaps are Gamma(shape=b, scale=1/(qps*b)) (b=1 is Poisson), b=inf gives even spacing, qps=inf sends
all at once, and the gaps are rescaled so the last request goes out at exactly n/qps. The draws use
numpy's legacy generator seeded with `seed`, the same stream vLLM draws from after `np.random.seed`.
"""

from __future__ import annotations

import math

from ..errors import BadInput


def parse_rate(text: str) -> float:
    """A QPS value: a positive number or 'inf'."""
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"QPS {text!r} is not a number; use e.g. --qps 1,2,4 or inf") from None
    if not value > 0 or math.isnan(value):
        raise BadInput(f"QPS must be greater than 0 (got {text})")
    return value


def parse_rates(text: str) -> list[float]:
    """'10,20,50' -> [10.0, 20.0, 50.0]."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise BadInput("--qps needs at least one value, e.g. --qps 10,20,50")
    return [parse_rate(p) for p in parts]


def requests_for(qps: float, duration_s: float) -> int:
    """`--duration`: QPS x seconds requests (QPS 20 for 60 s = 1,200)."""
    if duration_s <= 0:
        raise BadInput(f"--duration must be greater than 0 (got {duration_s})")
    if math.isinf(qps):
        raise BadInput("--duration needs a finite QPS; with --qps inf give --num-prompts")
    return max(1, round(qps * duration_s))


def send_offsets(n: int, qps: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """n absolute send times (seconds from the stage start), non-decreasing, the last at n/qps."""
    import numpy as np

    if n < 1:
        return []
    if not burstiness > 0:
        raise BadInput(f"--burstiness must be greater than 0 (got {burstiness})")
    if math.isinf(qps):
        return [0.0] * n
    if math.isinf(burstiness):
        gaps = np.full(n, 1.0 / qps)
    else:
        gaps = np.random.RandomState(seed).gamma(shape=burstiness, scale=1.0 / (qps * burstiness), size=n)
    times = np.cumsum(gaps)
    if times[-1] > 0:
        times *= (n / qps) / times[-1]
    return times.tolist()
