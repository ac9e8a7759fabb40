"""Spreading one stage over several client processes, as one run with one schedule.

The parent draws the stage's absolute send times once and picks a start time a moment ahead; worker
k sends requests k, k+n, k+2n, … each at start + its offset (perf_counter is the system's monotonic
clock, the same in every process), so the arrivals are exactly those of the schedule. Every worker
returns its records, measured from that shared start, and its own CPU and loop delay; the parent
merges the records back into schedule order and computes the metrics once, exactly as for one
process. Ctrl-C in the parent sets a shared stop event: each worker stops sending, cancels what is in
flight and returns what it measured.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .health import ProcessFigures, ProcessMeter
from .record import RequestRecord
from .sender import event_loop_run, frozen_heap, send_all

START_AHEAD_S = 0.5  # the shared start is this far after the parent hands out the slices
POLL_S = 0.25  # how often the parent reads the workers' progress counters and its stop flag
REQUESTS_PER_WORKER = 300.0  # request starts per second one process keeps on schedule with room to spare
CHUNKS_PER_WORKER = 25_000.0  # streamed chunks per second one process reads with room to spare


def auto_workers(qps: float, output_lens: Sequence[int], max_concurrency: int | None = None,
                 cpus: int | None = None) -> int:
    """Client processes for a stage: enough for its request and chunk rates, at most one per CPU."""
    n = len(output_lens)
    if n < 2:
        return 1
    rate = n / 1.0 if math.isinf(qps) else qps  # all at once: as if sent within one second
    chunks = rate * sum(output_lens) / n
    need = math.ceil(max(rate / REQUESTS_PER_WORKER, chunks / CHUNKS_PER_WORKER))
    return clamp(need, n, max_concurrency, cpus or os.cpu_count() or 1)


def clamp(workers: int, requests: int, max_concurrency: int | None, cpus: int) -> int:
    """Never more processes than requests, than --max-concurrency slots, or (automatic) than CPUs."""
    return max(1, min(workers, requests, max_concurrency or workers, cpus))


def split_limit(max_concurrency: int | None, workers: int) -> list[int | None]:
    """--max-concurrency shared out: each worker's own semaphore size (they add up to the limit)."""
    if not max_concurrency:
        return [None] * workers
    return [max_concurrency // workers + (k < max_concurrency % workers) for k in range(workers)]


def merge(slices: Sequence[Sequence[RequestRecord]]) -> list[RequestRecord]:
    """The workers' records as one stage's: in schedule order, as one process would have them."""
    return sorted((r for part in slices for r in part), key=lambda r: r.index)


@dataclass
class SliceResult:
    records: list[RequestRecord]
    interrupted: bool
    figures: ProcessFigures


# Set in each worker by `_init`: the shared stop flag and progress counters.
_shared: dict[str, Any] = {}


def _init(stop: Any, done: Any, failed: Any) -> None:
    """Set up a worker: Ctrl-C is the parent's, the shared flags are remembered, and the worker runs in
    its own session. (With sched_autogroup, as on this machine and most desktop kernels, the CPU is
    first shared out between sessions: workers left in the terminal's session would all share that one
    session's share, and on a busy machine fall behind the schedule together.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and tells us via `stop`
    try:
        os.setsid()
    except OSError:  # already a session or group leader: it keeps the one it has
        pass
    _shared.update(stop=stop, done=done, failed=failed, parent=os.getppid())


def _on_done(record: RequestRecord, in_flight: int) -> None:
    counter = _shared["done"] if record.ok else _shared["failed"]
    with counter.get_lock():
        counter.value += 1


def _run_slice(task: tuple[Any, list[Any], float, int | None]) -> SliceResult:
    return event_loop_run(_slice(*task))


async def _slice(client: Any, jobs: list[Any], t0: float, limit: int | None) -> SliceResult:
    stop = asyncio.Event()

    async def watch() -> None:  # the parent's Ctrl-C, or the parent gone (a worker never outlives its run)
        while not _shared["stop"].is_set() and os.getppid() == _shared["parent"]:
            await asyncio.sleep(0.1)
        stop.set()

    watcher = asyncio.get_running_loop().create_task(watch())
    async with client:
        with frozen_heap():
            meter = ProcessMeter(t0)
            records, interrupted = await send_all(client, jobs, t0, limit, stop, _on_done)
            figures = await meter.stop()
    watcher.cancel()
    return SliceResult(records, interrupted, figures)


class Pool:
    """n spawned client processes, started once per run (they import while the parent pre-flights)."""

    def __init__(self, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.n = n
        self.stop = ctx.Event()
        self.done = ctx.Value("i", 0)
        self.failed = ctx.Value("i", 0)
        self.pool = ctx.Pool(n, initializer=_init, initargs=(self.stop, self.done, self.failed))

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()

    async def run_stage(self, client: Any, jobs: list[Any], workers: int, max_concurrency: int | None,
                        stop: asyncio.Event, progress: Any) -> tuple[list[RequestRecord], bool, float, list[ProcessFigures]]:
        """Run one stage's jobs over `workers` processes: (records, interrupted, start, per-process figures)."""
        for counter in (self.done, self.failed):
            counter.value = 0
        self.stop.clear()
        t0 = time.perf_counter() + START_AHEAD_S
        limits = split_limit(max_concurrency, workers)
        tasks = [(client, list(jobs[k::workers]), t0, limits[k]) for k in range(workers)]
        offsets = [offset for _, _, offset in jobs]
        pending = self.pool.map_async(_run_slice, tasks, chunksize=1)
        while not pending.ready():
            await asyncio.sleep(POLL_S)
            if stop.is_set():
                self.stop.set()
            done, failed = self.done.value, self.failed.value
            due = bisect.bisect_right(offsets, time.perf_counter() - t0)
            progress.counts(done, failed, max(0, due - done - failed))
        slices: list[SliceResult] = pending.get()
        progress.counts(self.done.value, self.failed.value, 0)
        records = merge([s.records for s in slices])
        return records, any(s.interrupted for s in slices), t0, [s.figures for s in slices]
