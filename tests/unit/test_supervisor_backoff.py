"""The supervisor's restart policy, driven by a fake runner and a fake clock (no process is started):
a failed start is not retried, a crash after it answered is restarted with exponential backoff that
starts over after a stable run, and a hang (running, not answering) is killed and restarted."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from llmnest.targets.local import supervisor, units_store
from llmnest.targets.local.supervisor import BACKOFF_MAX, BACKOFF_START, HANG_AFTER_FAILURES, STABLE_AFTER, Supervisor

UNIT = "gateway/9999"


class Clock:
    """Stands in for the `time` module inside the supervisor: sleeping moves the clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1.7e9 + self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Attempt:
    answers: bool = True  # whether /health answers while it runs
    lives: float = 10.0  # seconds after its start at which it exits by itself


@dataclass
class FakeRunner:
    """A runner whose attempts follow a script; after the last one the supervisor is asked to stop."""

    clock: Clock
    script: list[Attempt]
    owner: Supervisor | None = None
    what: str = "gateway"
    starts: list[float] = field(default_factory=list)
    killed: int = 0
    stopped: bool = False
    running: bool = False

    def current(self) -> Attempt:
        return self.script[len(self.starts) - 1]

    def start(self, attempt: int) -> int:
        assert attempt == len(self.starts) + 1
        if attempt > len(self.script):
            assert self.owner is not None
            self.owner.stopping = True
            self.script.append(Attempt())
        self.starts.append(self.clock.now)
        self.running = True
        return 1000 + attempt

    def exit_reason(self) -> str | None:
        if self.running and self.clock.now - self.starts[-1] >= self.current().lives:
            self.running = False
        return None if self.running else "exited with code 1"

    def kill(self) -> None:
        self.killed += 1
        self.running = False

    def stop(self, grace: float) -> None:
        self.stopped = True
        self.running = False

    def recent_log(self) -> list[str]:
        return ["INFO loading", "ValueError: no such flag"]


@pytest.fixture
def make(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMNEST_HOME", str(tmp_path))
    clock = Clock()
    monkeypatch.setattr(supervisor, "time", clock)
    units_store.put(units_store.Unit(UNIT, "gateway", None, 0, "127.0.0.1", 9999))

    def build(*script: Attempt) -> FakeRunner:
        runner = FakeRunner(clock, list(script))
        runner.owner = Supervisor(UNIT, runner)
        monkeypatch.setattr(supervisor, "healthy", lambda url, timeout: runner.running and runner.current().answers)
        return runner

    return build


def gaps(runner: FakeRunner) -> list[float]:
    """Seconds between an attempt's exit and the next start: the backoff waited."""
    return [round(b - (a + att.lives), 1) for a, b, att in zip(runner.starts, runner.starts[1:], runner.script)]


def test_a_failed_start_is_not_retried(make) -> None:
    runner = make(Attempt(answers=False, lives=3.0))
    assert runner.owner.run() == 1
    unit = units_store.get(UNIT)
    assert len(runner.starts) == 1 and unit.status == "failed" and unit.restarts == 0
    assert unit.last_error == "exited with code 1 during start-up: ValueError: no such flag"


def test_crashes_are_restarted_with_exponential_backoff_up_to_the_cap(make) -> None:
    runner = make(*[Attempt(lives=10.0) for _ in range(8)])
    assert runner.owner.run() == 0
    expected = [min(BACKOFF_START * 2 ** k, BACKOFF_MAX) for k in range(8)]
    assert all(abs(g - e) <= 5.0 for g, e in zip(gaps(runner), expected)), (gaps(runner), expected)
    assert gaps(runner)[-1] >= BACKOFF_MAX - 5.0  # capped, not 256 s
    unit = units_store.get(UNIT)
    assert unit.restarts == 8 and unit.status == "stopped" and runner.stopped
    assert unit.last_error == "exited with code 1: ValueError: no such flag"


def test_the_backoff_starts_over_after_a_stable_run(make) -> None:
    runner = make(Attempt(lives=10.0), Attempt(lives=10.0), Attempt(lives=STABLE_AFTER + 100.0), Attempt(lives=10.0))
    runner.owner.run()
    backoffs = gaps(runner)
    assert backoffs[1] > backoffs[0] and abs(backoffs[2] - BACKOFF_START) <= 5.0, backoffs


def test_a_hang_is_killed_and_restarted(make, monkeypatch) -> None:
    runner = make(Attempt(lives=1e9), Attempt(lives=10.0))
    probes = {"n": 0}

    def hangs_after_the_first_answer(url: str, timeout: float) -> bool:
        probes["n"] += 1
        return runner.running and (len(runner.starts) > 1 or probes["n"] == 1)

    monkeypatch.setattr(supervisor, "healthy", hangs_after_the_first_answer)
    reasons: list[str] = []
    bump = units_store.bump_restarts
    monkeypatch.setattr(units_store, "bump_restarts", lambda unit_id, why: (reasons.append(why), bump(unit_id, why)))
    runner.owner.interval = 5.0
    runner.owner.run()
    assert runner.killed == 1 and len(runner.starts) == 3 and units_store.get(UNIT).restarts == 2
    assert reasons[0] == (f"gateway stopped answering /health ({HANG_AFTER_FAILURES} probes, 5 s apart) while still "
                          "running; it was killed and restarted")  # no log line: it did not end by itself
    # the first probe answered; the next HANG_AFTER_FAILURES failed, 5 s apart; then the backoff
    assert runner.starts[1] - runner.starts[0] == pytest.approx((HANG_AFTER_FAILURES - 1) * 5.0 + BACKOFF_START, abs=1)
