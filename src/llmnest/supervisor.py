"""The supervisor of a process deployment: starts the engine, probes readiness, restarts on crash.

Run as `python -m llmnest.supervisor NAME`, detached by the process runtime. Before the engine has
ever answered, an exit is a failed start (no restart: a bad flag would loop). After it has, a crash
is restarted with exponential backoff; the restart count and last error go to the state store.
SIGTERM stops the engine's whole process group and exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

from . import state
from .endpoints import local_base_url
from .home import log_path
from .logs import ATTEMPT_MARK, error_line, kv_cache_tokens, last_attempt
from .probe import chat_once
from .runtimes.process import engine_command, kill_group, wait_gone

BACKOFF_START, BACKOFF_MAX = 2.0, 60.0
STABLE_AFTER = 600.0  # seconds of uptime after which the backoff starts over


def exit_description(code: int | None) -> str:
    """'exited with code 1' or 'was killed by SIGKILL'."""
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = False
        self.proc: subprocess.Popen[bytes] | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.2)

    def _spawn(self, attempt: int) -> subprocess.Popen[bytes]:
        dep = state.get(self.name)
        argv, env = engine_command(dep.spec, state.api_key(self.name))
        log = log_path(self.name).open("ab")
        log.write(f"{ATTEMPT_MARK} starting engine (attempt {attempt}) at {time.ctime()}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **env}, start_new_session=True,
        )
        log.close()
        state.update(self.name, pid=proc.pid, started_at=time.time(), status="loading" if attempt == 1 else "restarting")
        return proc

    def _watch_until_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        dep = state.get(self.name)
        key = state.api_key(self.name)
        url = local_base_url(dep.spec)
        while proc.poll() is None and not self.stopping:
            result = chat_once(url, dep.spec.served_model_name, key, timeout=10)
            if result.ok:
                kv = kv_cache_tokens(last_attempt(log_path(self.name)))
                state.update(self.name, status="ready", ready_at=time.time(), info={"kv_cache_tokens_actual": kv})
                return True
            state.update(self.name, info={"stage": result.stage})
            self._sleep(1.0)
        return False

    def _stop_engine(self) -> None:
        if self.proc and self.proc.poll() is None:
            kill_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        if self.proc:
            kill_group(self.proc.pid, signal.SIGKILL)  # leftovers of the group (engine workers)
            wait_gone(self.proc.pid, 5)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        state.update(self.name, supervisor_pid=os.getpid(), status="starting", last_error=None)
        attempt, ever_ready, backoff = 0, False, BACKOFF_START
        while not self.stopping:
            attempt += 1
            self.proc = self._spawn(attempt)
            ever_ready = self._watch_until_ready(self.proc) or ever_ready
            ready_since = time.monotonic()
            while self.proc.poll() is None and not self.stopping:
                time.sleep(0.5)
            if self.stopping:
                break
            self._stop_engine()
            how = exit_description(self.proc.returncode)
            reason = error_line(last_attempt(log_path(self.name)))
            if not ever_ready:
                state.update(self.name, status="failed", pid=None,
                             last_error=f"engine {how} during start-up: {reason or 'no error line in the log'}")
                return 1
            if time.monotonic() - ready_since > STABLE_AFTER:
                backoff = BACKOFF_START
            state.bump_restarts(self.name, f"engine {how}" + (f": {reason}" if reason else ""))
            self._sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        self._stop_engine()
        state.update(self.name, status="stopped", pid=None)
        return 0


if __name__ == "__main__":
    sys.exit(Supervisor(sys.argv[1]).run())
