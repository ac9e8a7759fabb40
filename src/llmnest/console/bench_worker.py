"""`python -m llmnest.console.bench_worker BENCH-ARGS...`: `llmnest bench run` exactly, with its progress
as JSON lines on stderr (`@progress {...}`) for the console instead of rich bars.

The benchmark runs in its own process because the runner owns an event loop and SIGINT, which only the
main thread of a process may have, and so its client load stays apart from the console's."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

PREFIX = "@progress "


class JsonProgress:
    """The runner's Progress as JSON lines: stage started, counts as requests end, stage done."""

    def __init__(self, show_blocks: bool) -> None:
        self.stage = 0
        self.state: dict[str, Any] = {}

    def _emit(self, **data: Any) -> None:
        self.state.update(data)
        sys.stderr.write(PREFIX + json.dumps(self.state) + "\n")
        sys.stderr.flush()

    def stage_started(self, qps: float, total: int) -> None:
        self.stage += 1
        self._emit(stage=self.stage, qps="inf" if math.isinf(qps) else qps, total=total, done=0, failed=0,
                   in_flight=0)

    def request_done(self, record: Any, in_flight: int) -> None:
        key = "done" if record.ok else "failed"
        self._emit(**{key: self.state.get(key, 0) + 1, "in_flight": in_flight})

    def counts(self, done: int, failed: int, in_flight: int) -> None:
        self._emit(done=done, failed=failed, in_flight=in_flight)

    def stage_done(self, result: Any) -> None:
        self._emit(stage_done=self.stage, in_flight=0)


def main(argv: list[str]) -> None:
    from ..cli import bench_cmd
    from ..cli.main import app

    bench_cmd.RichProgress = JsonProgress  # type: ignore[misc, assignment]
    app(["bench", "run", *argv], prog_name="llmnest")


if __name__ == "__main__":
    main(sys.argv[1:])
