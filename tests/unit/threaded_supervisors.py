"""Local units' supervisors run in threads of the test instead of detached processes, for tests that go
through the real supervisor loop with runners of their own (test_local_rollback.py, test_local_scale.py)."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from llmnest.targets.local import supervised, supervisor, units_store
from llmnest.targets.local.supervisor import Supervisor


class ThreadedSupervisors:
    """Each unit's supervisor started in a thread and stopped by asking it to; a subclass gives the runner."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.supervisors: dict[str, tuple[Supervisor, threading.Thread]] = {}
        monkeypatch.setattr(supervised, "start_supervisor", self.start_supervisor)
        monkeypatch.setattr(supervised, "stop", self.stop)
        # signal handlers are the main thread's; a supervisor here stops when asked to (`stop` below)
        monkeypatch.setattr(supervisor, "signal", SimpleNamespace(signal=lambda *a: None, SIGTERM=15, SIGINT=2))

    def runner(self, unit_id: str) -> Any:
        """What the supervisor of `unit_id` runs (a runner of runners.py's shape)."""
        raise NotImplementedError

    def start_supervisor(self, unit_id: str, log: object) -> int:
        sup = Supervisor(unit_id, self.runner(unit_id))
        thread = threading.Thread(target=sup.run, daemon=True)
        self.supervisors[unit_id] = (sup, thread)
        thread.start()
        return os.getpid()

    def stop(self, unit: units_store.Unit, grace: float = 30, child_process: bool = True) -> None:
        sup, thread = self.supervisors.pop(unit.id)
        sup.stopping = True
        thread.join(30)
        assert not thread.is_alive()
