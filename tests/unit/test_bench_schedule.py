"""Arrival schedules: rate, burstiness, reproducibility, and an absolute schedule that does not drift."""

from __future__ import annotations

import asyncio
import math
import time
from itertools import pairwise

import numpy as np
import pytest

from llmnest.bench.schedule import parse_rates, requests_for, send_offsets
from llmnest.errors import BadInput


def gaps(offsets: list[float]) -> np.ndarray:
    return np.diff([0.0, *offsets])


def test_last_send_is_exactly_n_over_qps_and_times_never_go_back() -> None:
    for burstiness in (0.3, 1.0, 4.0, math.inf):
        offsets = send_offsets(500, 20.0, burstiness, seed=1)
        assert len(offsets) == 500
        assert offsets[-1] == pytest.approx(500 / 20.0)
        assert all(b >= a for a, b in pairwise(offsets))


def test_poisson_gaps_are_exponential() -> None:
    g = gaps(send_offsets(20000, 10.0, 1.0, seed=7))
    assert g.mean() == pytest.approx(0.1, rel=0.01)  # exact after rescaling
    assert g.std() / g.mean() == pytest.approx(1.0, abs=0.05)  # CV of an exponential is 1


def test_burstiness_sets_the_spread_of_gaps() -> None:
    """Gamma with shape b has CV 1/sqrt(b): b < 1 is burstier than Poisson, b > 1 more even."""
    for b in (0.25, 4.0):
        g = gaps(send_offsets(20000, 10.0, b, seed=3))
        assert g.std() / g.mean() == pytest.approx(1 / math.sqrt(b), rel=0.06)


def test_infinite_burstiness_is_constant_spacing() -> None:
    offsets = send_offsets(5, 2.0, math.inf)
    assert offsets == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5])


def test_infinite_qps_sends_everything_at_once() -> None:
    assert send_offsets(4, math.inf) == [0.0] * 4


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    assert send_offsets(100, 5.0, 1.0, seed=42) == send_offsets(100, 5.0, 1.0, seed=42)
    assert send_offsets(100, 5.0, 1.0, seed=42) != send_offsets(100, 5.0, 1.0, seed=43)


def test_draws_match_vllm_bench_serve_for_the_same_seed() -> None:
    """vLLM seeds numpy's global generator and draws one gamma gap per request, then rescales."""
    np.random.seed(11)
    theirs = np.cumsum([np.random.gamma(shape=1.0, scale=1.0 / 4.0) for _ in range(50)])
    theirs *= (50 / 4.0) / theirs[-1]
    assert send_offsets(50, 4.0, 1.0, seed=11) == pytest.approx(theirs.tolist())


def test_duration_means_qps_times_seconds() -> None:
    assert requests_for(20, 60) == 1200  # the seed's "QPS 20 for 1 minute = 1,200 requests"
    assert requests_for(0.5, 3) == 2
    with pytest.raises(BadInput):
        requests_for(math.inf, 10)


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "", "nan"])
def test_qps_must_be_positive(bad: str) -> None:
    with pytest.raises(BadInput):
        parse_rates(bad)


def test_qps_list() -> None:
    assert parse_rates("10, 20,50,inf") == [10.0, 20.0, 50.0, math.inf]


def test_absolute_schedule_does_not_drift_under_a_busy_loop() -> None:
    """Sleeping until absolute times keeps the rate even when every send costs CPU time; the error
    stays one iteration's cost, while gap-after-gap sleeping accumulates it at every request."""
    offsets = send_offsets(200, 200.0, math.inf)
    busy = 0.002  # each send burns 2 ms of the loop, like a client under load

    async def absolute() -> float:
        t0 = time.perf_counter()
        for off in offsets:
            delay = t0 + off - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            end = time.perf_counter() + busy
            while time.perf_counter() < end:
                pass
        return time.perf_counter() - t0

    async def relative() -> float:
        t0 = time.perf_counter()
        for gap in gaps(offsets):
            await asyncio.sleep(gap)
            end = time.perf_counter() + busy
            while time.perf_counter() < end:
                pass
        return time.perf_counter() - t0

    planned = offsets[-1]
    late_absolute = asyncio.run(absolute()) - planned  # one iteration's delay (more on a busy machine)
    late_relative = asyncio.run(relative()) - planned  # at least 200 x 2 ms, plus every sleep's delay
    assert late_relative > 0.4
    assert late_absolute < late_relative - 0.2
