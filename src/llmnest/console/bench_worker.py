"""`python -m llmnest.console.bench_worker REQUEST-JSON`: one `bench.run` of a console form, its progress
as JSON lines on stderr (`@progress {...}`), its notes as plain lines, its result as JSON on stdout.

The benchmark runs in its own process because the runner owns an event loop and SIGINT, which only the
main thread of a process may have, and so its client load stays apart from the console's."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from .. import bench
from ..bench.report import plain
from ..errors import LlmnestError

PREFIX = "@progress "
KEY_ENV = "LLMNEST_BENCH_API_KEY"  # the key, when the request names none (kept off the command line)


class JsonProgress(bench.Progress):
    """The runner's Progress as JSON lines: stage started, counts as requests end, stage done."""

    def __init__(self) -> None:
        self.stage = 0
        self.state: dict[str, Any] = {}

    def _emit(self, **data: Any) -> None:
        self.state.update(data)
        sys.stderr.write(PREFIX + json.dumps(self.state) + "\n")
        sys.stderr.flush()

    def note(self, text: str) -> None:
        sys.stderr.write(text + "\n")
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


def request_of(text: str) -> bench.BenchRequest:
    """The request the console wrote as JSON (its `out` a path; its key from the environment)."""
    fields = json.loads(text)
    return bench.BenchRequest(**{**fields, "out": Path(fields["out"]) if fields.get("out") else None,
                                 "api_key": fields.get("api_key") or os.environ.get(KEY_ENV)})


def main(argv: list[str]) -> int:
    try:
        done = bench.run(request_of(argv[0]), JsonProgress())
    except LlmnestError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return int(exc.exit_code)
    print(json.dumps(plain({**done.config, "stages": [{**r.result, "interrupted": r.interrupted}
                                                      for r in done.stages]})))
    if not done.completed:
        sys.stderr.write("error: no request succeeded; see the failures above\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
