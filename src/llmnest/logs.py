"""Reading engine logs: tails, the line that explains a failure, the KV cache size vLLM reports."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

ERROR_RE = re.compile(r"(error|exception|traceback|killed|out of memory|unrecognized)", re.IGNORECASE)
NOT_ERROR_RE = re.compile(r"\b(INFO|WARNING|DEBUG)\b|^\s*File ")
KV_TOKENS_RE = re.compile(r"KV cache size:\s*([\d,]+)\s*tokens")
ATTEMPT_MARK = "=== llmnest:"


def tail(path: Path, n: int = 20) -> list[str]:
    if not path.exists():
        return []
    with path.open(errors="replace") as fh:
        return [line.rstrip("\n") for line in deque(fh, maxlen=n)]


def last_attempt(path: Path, max_lines: int = 5000) -> list[str]:
    """The log lines written since the supervisor's last 'starting engine' mark."""
    lines = tail(path, max_lines)
    marks = [i for i, line in enumerate(lines) if line.startswith(ATTEMPT_MARK)]
    return lines[marks[-1] + 1:] if marks else lines


def error_line(lines: list[str]) -> str | None:
    """The last line that reads like an error (argparse, Python exception), stripped of log prefixes."""
    for line in reversed(lines):
        if ERROR_RE.search(line) and not NOT_ERROR_RE.search(line):
            return re.sub(r"^\(\w+ pid=\d+\)\s*", "", line).strip()
    return None


def kv_cache_tokens(lines: list[str]) -> int | None:
    """The KV cache capacity in tokens that vLLM logged at start-up, if it did."""
    for line in reversed(lines):
        if m := KV_TOKENS_RE.search(line):
            return int(m.group(1).replace(",", ""))
    return None


def follow(path: Path, n: int, poll: float = 0.5) -> Iterator[str]:
    """The last n lines, then every line appended, until interrupted."""
    yield from tail(path, n)
    with path.open(errors="replace") as fh:
        fh.seek(0, 2)
        while True:
            line = fh.readline()
            if line:
                yield line.rstrip("\n")
            else:
                time.sleep(poll)
