"""The metric names a Grafana dashboard's queries use, to check them against real /metrics output."""

from __future__ import annotations

import json
import re
from pathlib import Path

METRIC = re.compile(r"\b((?:llmnest_|vllm:)[A-Za-z0-9_:]+)")


def query_metrics(dashboard: Path) -> set[str]:
    """Every llmnest_ / vllm: metric named in the dashboard's queries."""
    panels = json.loads(dashboard.read_text())["panels"]
    return {m for p in panels for t in p.get("targets", []) for m in METRIC.findall(t.get("expr", ""))}


def exposed_metrics(text: str) -> set[str]:
    """The sample names in Prometheus text exposition."""
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
