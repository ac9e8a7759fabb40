"""Long verbs (up, restart, redeploy, down, bench) run in the background; a page follows each one live.

A job keeps its phases and latest log line as the lifecycle reports them (`Context.on_phase`), then its
result or its one-line error. Results that carry a secret hand it out once (`take_secret`).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import LlmnestError
from ..logs import tail


@dataclass
class Job:
    id: str
    kind: str  # up, restart, redeploy, down, bench
    deployment: str | None
    started: float = field(default_factory=time.time)
    phases: list[tuple[float, str]] = field(default_factory=list)
    line: str = ""
    state: str = "running"  # running, done, failed
    error: str | None = None
    detail: str | None = None  # the engine's last log lines when it failed
    result: dict[str, Any] = field(default_factory=dict)
    secret: str | None = None  # the new API key, handed out once
    progress: dict[str, Any] = field(default_factory=dict)  # bench: stage, done, failed, in flight
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_phase(self, phase: str, line: str) -> None:
        with self.lock:
            if not self.phases or self.phases[-1][1] != phase:
                self.phases.append((round(time.time() - self.started, 1), phase))
            self.line = line.strip()[-300:]

    def say(self, line: str) -> None:
        with self.lock:
            self.line = line.strip()[-300:]

    def take_secret(self) -> str | None:
        with self.lock:
            secret, self.secret = self.secret, None
            return secret

    def view(self) -> dict[str, Any]:
        """What the page shows (never the secret)."""
        with self.lock:
            return {"id": self.id, "kind": self.kind, "deployment": self.deployment, "state": self.state,
                    "elapsed": round(time.time() - self.started, 1), "phases": list(self.phases),
                    "line": self.line, "error": self.error, "detail": self.detail, "result": self.result,
                    "progress": dict(self.progress)}


class Jobs:
    """The jobs of this console process (they end with it, as the CLI's would with Ctrl-C)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def recent(self, kind: str | None = None) -> list[Job]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if kind is None or j.kind == kind]
        return sorted(jobs, key=lambda j: j.started, reverse=True)

    def running_for(self, deployment: str) -> Job | None:
        return next((j for j in self.recent() if j.deployment == deployment and j.state == "running"
                     and j.kind != "bench"), None)

    def start(self, kind: str, deployment: str | None, work: Callable[[Job], None]) -> Job:
        job = Job(secrets.token_hex(6), kind, deployment)
        with self._lock:
            self._jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, work), daemon=True, name=f"console-{kind}").start()
        return job

    @staticmethod
    def _run(job: Job, work: Callable[[Job], None]) -> None:
        try:
            work(job)
            state, error, detail = "done", None, None
        except LlmnestError as exc:
            state, error, detail = "failed", exc.message, exc.detail
        except Exception as exc:  # a bug must still end the job visibly, not hang the page
            state, error, detail = "failed", f"{type(exc).__name__}: {exc}", None
        if state == "failed" and not detail and job.deployment:
            detail = _engine_tail(job.deployment)
        with job.lock:
            job.state, job.error, job.detail = state, error, detail


def _engine_tail(name: str) -> str | None:
    from ..home import home

    path = home() / "deployments" / name / "engine.log"
    return "\n".join(tail(path, 15)) if path.is_file() else None
