"""`llmnest bench compare`: several run directories side by side (a table and charts)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import BadInput
from .report import SWEEP_COLUMNS, load_run


def load_runs(dirs: Sequence[Path]) -> dict[str, list[dict[str, Any]]]:
    """Run label (the directory name, made unique) -> its stage results."""
    if not dirs:
        raise BadInput("give at least one run directory: llmnest bench compare RUN_DIR [RUN_DIR ...]")
    runs: dict[str, list[dict[str, Any]]] = {}
    for d in dirs:
        label = d.name or str(d)
        while label in runs:
            label += "'"
        runs[label] = load_run(d)
    return runs


def compare_table(runs: dict[str, list[dict[str, Any]]]) -> Any:
    from rich.table import Table

    table = Table("run", *(name for name, _ in SWEEP_COLUMNS), title="Runs compared")
    for label, stages in runs.items():
        for r in stages:
            table.add_row(label, *(cell(r) for _, cell in SWEEP_COLUMNS))
    return table


def compare_charts(runs: dict[str, list[dict[str, Any]]], out: Path) -> list[Path]:
    """Latency and throughput against QPS, and latency against throughput, one line per run."""
    from .charts import latency_vs_qps, latency_vs_throughput, throughput_vs_qps

    out.mkdir(parents=True, exist_ok=True)
    labels, groups = list(runs), list(runs.values())
    return [
        latency_vs_qps(groups[0], out / "compare_latency_vs_qps.png", labels, groups),
        throughput_vs_qps(groups[0], out / "compare_throughput_vs_qps.png", labels, groups),
        latency_vs_throughput(groups[0], out / "compare_latency_vs_throughput.png", labels, groups),
    ]
