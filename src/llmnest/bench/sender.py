"""Sending one stage's requests on their schedule, in whichever process runs them (the runner's or a
worker's): each at its absolute time, a late one at once, Ctrl-C cancelling what is in flight."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .datasets import Prompt
from .record import RequestRecord
from .request import Client

STOP_POLL_S = 0.2  # the sender checks for Ctrl-C at least this often while it waits


def event_loop_run(coro: Any) -> Any:
    """Run a coroutine to the end on uvloop where it is installed (a cheaper loop per chunk), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """The objects made before the stage (prompts, records of earlier stages) left out of the garbage
    collector's passes during it, so a full collection cannot stall the sender for tens of ms."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


Job = tuple[int, Prompt, float]  # the request's index in the stage, its prompt, its send offset


async def send_all(
    client: Client, jobs: Sequence[Job], t0: float, max_concurrency: int | None, stop: asyncio.Event,
    on_done: Callable[[RequestRecord, int], None],
) -> tuple[list[RequestRecord], bool]:
    """Send each job at t0 + its offset (a late one at once, never shifting the rest); wait for all, or
    stop sending and cancel what is in flight when `stop` is set. Returns the records sent, in order."""
    limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    pending: set[asyncio.Task[RequestRecord]] = set()
    records: list[RequestRecord] = []
    in_flight = 0

    async def one(prompt: Prompt, record: RequestRecord) -> RequestRecord:
        nonlocal in_flight
        if limit:
            await limit.acquire()
        in_flight += 1
        try:
            return await client.send(prompt, record, t0)
        finally:
            in_flight -= 1
            if limit:
                limit.release()
            on_done(record, in_flight)

    now = time.perf_counter
    for i, prompt, offset in jobs:
        while (delay := t0 + offset - now()) > 0 and not stop.is_set():
            await asyncio.sleep(min(delay, STOP_POLL_S))
        if stop.is_set():
            break
        record = RequestRecord(i, offset, prompt.prompt_len, prompt.output_len)
        records.append(record)
        task = asyncio.create_task(one(prompt, record))
        pending.add(task)
        task.add_done_callback(pending.discard)
    everything = asyncio.gather(*pending, return_exceptions=True)
    if pending and not stop.is_set():
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({everything, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    if stop.is_set():
        for task in list(pending):
            task.cancel()
        await everything
        return records, True
    return records, False
