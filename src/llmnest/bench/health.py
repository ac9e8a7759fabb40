"""The client's own health during a stage: its CPU use, its event-loop delay, and the verdict whether
the client (rather than the server) was the bottleneck, so that no one publishes a client-bound figure.

Each client process measures itself (`ProcessMeter`: CPU seconds from getrusage, loop delay from a
probe that sleeps PROBE_S and records how late it wakes); `assess` turns the merged figures and the
stage's schedule lag into result keys and warnings.
"""

from __future__ import annotations

import asyncio
import math
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PROBE_S = 0.02
BUSY_LIMIT = 0.85  # a process busier than this (of one core) delays its own timestamps
LOOP_DELAY_LIMIT_MS = 10.0  # p99 event-loop delay above this (and LOOP_DELAY_SHARE of the mean ITL)
LOOP_DELAY_SHARE = 0.05  # shifts the measured TTFT and ITL by more than their own resolution
LAG_LIMIT_MS = 10.0  # mean lag behind the schedule above this means the offered load was not sent


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class ProcessFigures:
    """What one client process spent during one stage."""

    cpu_s: float
    wall_s: float
    loop_delays_s: list[float] = field(default_factory=list)


class ProcessMeter:
    """Measures this process from now (wall time from `start`, default now); `await stop()` gives its figures."""

    def __init__(self, start: float | None = None) -> None:
        self.cpu0 = cpu_seconds()
        self.wall0 = time.perf_counter() if start is None else start
        self.delays: list[float] = []
        self._probe = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        now = time.perf_counter
        while True:
            before = now()
            await asyncio.sleep(PROBE_S)
            self.delays.append(max(0.0, now() - before - PROBE_S))

    async def stop(self) -> ProcessFigures:
        self._probe.cancel()
        try:
            await self._probe
        except asyncio.CancelledError:
            pass
        return ProcessFigures(cpu_seconds() - self.cpu0, time.perf_counter() - self.wall0, self.delays)


def assess(processes: Sequence[ProcessFigures], result: dict[str, Any]) -> dict[str, Any]:
    """Health keys for a stage result (which must hold total_output_tokens and the schedule lag)."""
    import numpy as np

    cpu = sum(p.cpu_s for p in processes)
    busy = max((p.cpu_s / p.wall_s for p in processes if p.wall_s > 0), default=0.0)
    delays = np.asarray([d for p in processes for d in p.loop_delays_s] or [0.0]) * 1000.0
    tokens = result.get("total_output_tokens") or 0
    health: dict[str, Any] = {
        "client_processes": len(processes),
        "client_cpu_s": cpu,
        "client_cpu_per_token_us": cpu / tokens * 1e6 if tokens else None,
        "client_busiest_process_cpu": busy,
        "mean_loop_delay_ms": float(delays.mean()),
        "p99_loop_delay_ms": float(np.percentile(delays, 99)),
        "max_loop_delay_ms": float(delays.max()),
    }
    health["client_warnings"] = warnings(health, result.get("mean_schedule_lag_ms", 0.0), result.get("mean_itl_ms"))
    health["client_saturated"] = bool(health["client_warnings"])
    return health


def warnings(health: dict[str, Any], mean_lag_ms: float, mean_itl_ms: float | None = None) -> list[str]:
    """Why the client may have limited or distorted this stage's figures (empty when it did not)."""
    out = []
    n = health["client_processes"]
    more = f"use --workers {n + 1} or more, or a bigger client machine"
    if health["client_busiest_process_cpu"] >= BUSY_LIMIT:
        out.append(f"a client process used {health['client_busiest_process_cpu']:.0%} of a CPU core: the client, "
                   f"not the server, may have limited this stage; {more}")
    delay = health["p99_loop_delay_ms"]
    cause = (more if health["client_busiest_process_cpu"] >= BUSY_LIMIT / 2 else
             "the client was mostly idle, so other processes kept it off the CPU: run it on a quieter machine")
    if delay > LOOP_DELAY_LIMIT_MS and delay > LOOP_DELAY_SHARE * (mean_itl_ms or 0.0):
        out.append(f"the client's event loop ran {delay:.1f} ms late (p99), {delay / (mean_itl_ms or 1):.0%} of the "
                   f"mean ITL: TTFT and ITL include that delay; {cause}")
    if not math.isnan(mean_lag_ms) and mean_lag_ms > LAG_LIMIT_MS:
        out.append(f"requests went out {mean_lag_ms:.1f} ms behind the schedule on average: the offered rate was "
                   f"not reached; {cause}")
    return out
