"""The supervisor of one unit on this machine (an engine replica, or a gateway): starts it, probes
readiness and liveness, restarts.

Run as `python -m llmnest.targets.local.supervisor UNIT_ID` ("NAME/0", "gateway/8080"), detached by the local
target, for a local process, a docker container and the gateway alike (`runners`). Before the unit has
ever answered, an exit is a failed start (no restart: a bad flag would loop). Once it has answered, a
crash, or a hang (it stops answering /health while still running), is restarted with exponential
backoff; the restart count and the reason go to the state store. SIGTERM stops it and exits.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

from ... import state
from ...logs import error_line, kv_cache_tokens
from ...probe import chat_once, healthy
from . import units_store
from .runners import Runner, runner_for

BACKOFF_START, BACKOFF_MAX = 2.0, 60.0
STABLE_AFTER = 600.0  # seconds of uptime after which the backoff starts over
LIVENESS_ENV = "LLMNEST_LIVENESS_SECONDS"  # between /health probes once ready
HANG_AFTER_FAILURES = 3  # consecutive failed /health probes that mean a hang
STOP_GRACE = 20.0


class Supervisor:
    def __init__(self, unit_id: str, runner: Runner) -> None:
        self.id = unit_id
        self.runner = runner
        self.stopping = False
        self.interval = float(os.environ.get(LIVENESS_ENV, "5"))

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.2)

    def _answers(self, unit: units_store.Unit) -> tuple[bool, str]:
        """An engine answers a real one-token chat (with the key it takes); a gateway answers /health."""
        if unit.kind == "gateway":
            return (True, "ok") if healthy(unit.base_url, timeout=5) else (False, "down")
        assert unit.deployment is not None
        dep = state.get(unit.deployment)
        result = chat_once(unit.base_url, dep.spec.served_model_name, units_store.engine_key(dep.name), timeout=10)
        return result.ok, result.stage

    def _watch_until_ready(self) -> bool:
        """Probe until it answers; False if it exits first (or we stop)."""
        unit = units_store.get(self.id)
        while self.runner.exit_reason() is None and not self.stopping:
            ok, stage = self._answers(unit)
            if ok:
                units_store.update(self.id, status="ready", ready_at=time.time(), stage=None)
                if unit.deployment is not None:
                    actual = kv_cache_tokens(self.runner.recent_log())
                    state.update(unit.deployment, info={"kv_cache_tokens_actual": actual})
                return True
            units_store.update(self.id, stage=stage)
            self._sleep(1.0)
        return False

    def _watch_alive(self) -> tuple[str | None, bool]:
        """Until the engine exits or hangs: the reason, and whether the engine ended by itself (so its log
        may say why); (None, False) when we were asked to stop."""
        url = units_store.get(self.id).base_url
        failures = 0
        while not self.stopping:
            if reason := self.runner.exit_reason():
                return reason, True
            failures = 0 if healthy(url, timeout=self.interval) else failures + 1
            if failures >= HANG_AFTER_FAILURES:
                self.runner.kill()
                return (f"{self.runner.what} stopped answering /health ({failures} probes, {self.interval:g} s apart) "
                        "while still running; it was killed and restarted"), False
            self._sleep(self.interval)
        return None, False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        units_store.update(self.id, supervisor_pid=os.getpid(), status="starting", last_error=None)
        attempt, ever_ready, backoff = 0, False, BACKOFF_START
        while not self.stopping:
            attempt += 1
            pid = self.runner.start(attempt)
            units_store.update(self.id, pid=pid, started_at=time.time(),
                               status="loading" if attempt == 1 else "restarting")
            ready = self._watch_until_ready()
            ever_ready = ever_ready or ready
            ready_since = time.monotonic()
            reason, exited = self._watch_alive() if ready else (self.runner.exit_reason(), True)
            if self.stopping:
                break
            if not ever_ready:
                self.runner.stop(0)
                why = error_line(self.runner.recent_log()) or "no error line in the log"
                units_store.update(self.id, status="failed", pid=None, last_error=f"{reason} during start-up: {why}")
                return 1
            if time.monotonic() - ready_since > STABLE_AFTER:
                backoff = BACKOFF_START
            detail = error_line(self.runner.recent_log()) if exited else None
            units_store.bump_restarts(self.id, f"{reason}: {detail}" if detail else str(reason))
            self._sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        self.runner.stop(STOP_GRACE)
        units_store.update(self.id, status="stopped", pid=None)
        return 0


if __name__ == "__main__":
    sys.exit(Supervisor(sys.argv[1], runner_for(sys.argv[1])).run())
