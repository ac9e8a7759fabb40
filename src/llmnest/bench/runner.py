"""Running stages: pre-flight, warm-up, then one stage per QPS on its absolute send schedule.

Each stage waits for all its requests (each bounded by the client timeout) before the next starts.
The first Ctrl-C stops sending, cancels what is in flight (counted as "interrupted") and returns the
stages measured so far; a second Ctrl-C aborts at once. A stage whose rate one process cannot keep
runs over several client processes (`workers`), still as one schedule with one set of records; every
stage result carries the client's own health (CPU, loop delay, a warning when it was the bottleneck).
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import LlmnestError
from . import metrics
from .datasets import Prompt, Tokenizer
from .health import ProcessFigures, ProcessMeter, assess
from .record import RequestRecord
from .request import Client
from .schedule import send_offsets
from .sender import event_loop_run, frozen_heap, send_all
from .workers import Pool, auto_workers, clamp


@dataclass(frozen=True)
class Stage:
    """One QPS of a sweep and the prompts it sends, in order."""

    qps: float
    prompts: Sequence[Prompt]


@dataclass
class StageResult:
    qps: float
    result: dict[str, Any]
    records: list[RequestRecord]
    interrupted: bool = False
    processes: list[ProcessFigures] = field(default_factory=list)  # the client's own CPU and loop delay


@dataclass(frozen=True)
class BenchPlan:
    """Everything a run needs besides the client."""

    stages: Sequence[Stage]
    burstiness: float = 1.0
    max_concurrency: int | None = None
    warmup: int = 0
    seed: int = 0
    goodput_ms: dict[str, float] = field(default_factory=dict)
    price_per_hour: float | None = None
    workers: int | None = None  # client processes per stage; None: automatic (see workers.auto_workers)


class Progress:
    """What a run reports while it works; the CLI draws it (rich), the console sends it to the page, tests
    may ignore it."""

    def note(self, text: str) -> None: ...  # one line for the user: what is being done, what was written
    def stage_started(self, qps: float, total: int) -> None: ...
    def request_done(self, record: RequestRecord, in_flight: int) -> None: ...
    def counts(self, done: int, failed: int, in_flight: int) -> None: ...  # from worker processes
    def stage_done(self, result: StageResult) -> None: ...


def run(client: Client, plan: BenchPlan, tokenizer: Tokenizer | None, progress: Progress | None = None) -> list[StageResult]:
    """Pre-flight, warm up and run every stage; returns the stage results (partial after Ctrl-C)."""
    return event_loop_run(_run(client, plan, tokenizer, progress or Progress()))


async def _run(client: Client, plan: BenchPlan, tokenizer: Tokenizer | None, progress: Progress) -> list[StageResult]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_sigint() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C raises KeyboardInterrupt

    counts = [workers_for(plan, stage) for stage in plan.stages]
    pool = Pool(max(counts)) if max(counts) > 1 else None  # spawned now: they import during the pre-flight
    try:
        async with client:
            await client.check_model()
            first = plan.stages[0].prompts[0]
            await preflight(client, first)
            if plan.warmup:
                await warm_up(client, first, plan.warmup)
            loop.add_signal_handler(signal.SIGINT, on_sigint)
            results = []
            for index, stage in enumerate(plan.stages):
                if pool is not None and counts[index] > 1:
                    result = await run_stage_in_workers(pool, counts[index], client, plan, stage, index, stop, progress)
                else:
                    result = await run_stage(client, plan, stage, index, stop, progress)
                fill_output_tokens(result.records, tokenizer)
                result.result = summarize(plan, stage, result.records, result.result["duration"])
                result.result |= assess(result.processes, result.result)
                progress.stage_done(result)
                results.append(result)
                if result.interrupted:
                    break
            return results
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if pool is not None:
            pool.close()


def workers_for(plan: BenchPlan, stage: Stage) -> int:
    """The stage's client processes: --workers (bounded by requests and --max-concurrency), else automatic."""
    if plan.workers:
        return clamp(plan.workers, len(stage.prompts), plan.max_concurrency, plan.workers)
    return auto_workers(stage.qps, [p.output_len for p in stage.prompts], plan.max_concurrency)


async def preflight(client: Client, prompt: Prompt) -> None:
    """One short request with the first prompt before any measurement (vLLM's initial test run)."""
    record = await client.send(replace(prompt, output_len=1), RequestRecord(-1, 0.0, prompt.prompt_len, 1), 0.0)
    if not record.ok:
        raise LlmnestError(
            f"the pre-flight request to {client.url} failed ({record.error}: {record.detail}); nothing was measured"
        )


async def warm_up(client: Client, prompt: Prompt, n: int) -> None:
    """n concurrent unmeasured requests with the first prompt."""
    await asyncio.gather(*(client.send(prompt, RequestRecord(-1, 0.0, prompt.prompt_len, prompt.output_len), 0.0)
                           for _ in range(n)))


async def run_stage(
    client: Client, plan: BenchPlan, stage: Stage, index: int, stop: asyncio.Event, progress: Progress
) -> StageResult:
    """Send each prompt at its absolute time from the stage start; wait for all, or stop on Ctrl-C."""
    offsets = send_offsets(len(stage.prompts), stage.qps, plan.burstiness, plan.seed + index)
    progress.stage_started(stage.qps, len(offsets))
    jobs = list(zip(range(len(offsets)), stage.prompts, offsets))
    with frozen_heap():
        meter = ProcessMeter()
        t0 = time.perf_counter()
        records, interrupted = await send_all(client, jobs, t0, plan.max_concurrency, stop, progress.request_done)
        figures = await meter.stop()
    duration = time.perf_counter() - t0 if interrupted else max((r.ended for r in records), default=0.0)
    return StageResult(stage.qps, {"duration": duration}, records, interrupted, [figures])


async def run_stage_in_workers(
    pool: Pool, workers: int, client: Client, plan: BenchPlan, stage: Stage, index: int, stop: asyncio.Event,
    progress: Progress,
) -> StageResult:
    """The same stage as `run_stage`, its schedule shared out over `workers` processes."""
    offsets = send_offsets(len(stage.prompts), stage.qps, plan.burstiness, plan.seed + index)
    progress.stage_started(stage.qps, len(offsets))
    jobs = list(zip(range(len(offsets)), stage.prompts, offsets))
    records, interrupted, t0, processes = await pool.run_stage(client, jobs, workers, plan.max_concurrency, stop,
                                                               progress)
    duration = time.perf_counter() - t0 if interrupted else max((r.ended for r in records), default=0.0)
    return StageResult(stage.qps, {"duration": duration}, records, interrupted, processes)


def fill_output_tokens(records: list[RequestRecord], tokenizer: Tokenizer | None) -> None:
    """Count output tokens with the tokenizer where the server sent no usage (else one per chunk)."""
    for r in records:
        if r.ok and r.output_tokens is None:
            if tokenizer is not None and r.text is not None:
                r.output_tokens, r.tokens_from = len(tokenizer.encode(r.text)), "tokenizer"
            else:
                r.output_tokens, r.tokens_from = len(r.chunks), "chunks"
        r.text = None


def summarize(plan: BenchPlan, stage: Stage, records: list[RequestRecord], duration: float) -> dict[str, Any]:
    """The stage's metrics plus its configuration and cost."""
    result = metrics.summarize(records, duration, goodput_ms=plan.goodput_ms or None, planned=len(stage.prompts))
    result |= metrics.cost(plan.price_per_hour, result)
    rate = stage.qps
    return {
        "request_rate": "inf" if math.isinf(rate) else rate,
        "burstiness": plan.burstiness,
        "max_concurrency": plan.max_concurrency,
        "num_prompts": len(stage.prompts),
        **result,
    }
