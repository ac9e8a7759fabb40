"""PNG charts of a run (matplotlib, headless): latency and throughput against QPS, latency against
throughput, and per stage the TTFT / E2EL distributions with requests in flight over time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report import qps_label, stage_file

LATENCY_PANELS = (("ttft", "TTFT"), ("tpot", "TPOT (excl. 1st token)"), ("e2el", "E2EL"))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_charts(results: Sequence[dict[str, Any]], records: Sequence[Sequence[dict[str, Any]]], out: Path) -> list[Path]:
    """All charts of one run into `out`; `records` are each stage's request records (as dicts)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [latency_vs_qps(results, out / "latency_vs_qps.png"),
             throughput_vs_qps(results, out / "throughput_vs_qps.png"),
             latency_vs_throughput(results, out / "latency_vs_throughput.png")]
    for result, recs in zip(results, records):
        paths.append(distributions(result, recs, out / f"{stage_file(result['request_rate'])}.png"))
    return paths


def _xaxis(ax: Any, groups: Sequence[Sequence[dict[str, Any]]]) -> Any:
    """Stages evenly spaced and labelled by offered QPS (works for 'inf' and for runs with other QPS sets)."""
    def key(label: str) -> float:
        return float("inf") if label == "inf" else float(label)

    labels = sorted({qps_label(r["request_rate"]) for rs in groups for r in rs}, key=key)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("offered QPS")
    return lambda rs: [labels.index(qps_label(r["request_rate"])) for r in rs]



def _median_and_p99(ax: Any, xs: Sequence[float], rs: Sequence[dict[str, Any]], key: str, label: str) -> None:
    """Two lines on `ax`: the median and the P99 of metric `key` (ttft, tpot, e2el ...)."""
    prefix = f"{label} " if label else ""
    ax.plot(xs, [r[f"median_{key}_ms"] for r in rs], marker="o", label=f"{prefix}median")
    ax.plot(xs, [r[f"p99_{key}_ms"] for r in rs], marker="^", linestyle="--", label=f"{prefix}P99")


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

def latency_vs_qps(results: Sequence[dict[str, Any]], path: Path, labels: Sequence[str] | None = None,
                   groups: Sequence[Sequence[dict[str, Any]]] | None = None) -> Path:
    """TTFT / TPOT / E2EL, median and P99, against offered QPS (one line pair per run when comparing)."""
    plt = _pyplot()
    groups = groups or [results]
    labels = labels or [""]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (key, title) in zip(axes, LATENCY_PANELS):
        pos = _xaxis(ax, groups)
        for label, rs in zip(labels, groups):
            xs = pos(rs)
            _median_and_p99(ax, xs, rs, key, label)
        ax.set_title(title)
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def throughput_vs_qps(results: Sequence[dict[str, Any]], path: Path, labels: Sequence[str] | None = None,
                      groups: Sequence[Sequence[dict[str, Any]]] | None = None) -> Path:
    """Request throughput (with the offered rate) and output token throughput against QPS."""
    plt = _pyplot()
    groups = groups or [results]
    labels = labels or [""]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    pos = _xaxis(left, groups)
    _xaxis(right, groups)
    for label, rs in zip(labels, groups):
        xs = pos(rs)
        left.plot(xs, [r["request_throughput"] for r in rs], marker="o", label=label or "completed req/s")
        right.plot(xs, [r["output_throughput"] for r in rs], marker="o", label=label or "output tok/s")
    finite = [r for r in groups[0] if r["request_rate"] != "inf"]
    left.plot(pos(finite), [float(r["request_rate"]) for r in finite], color="grey", linestyle=":", label="offered")
    left.set_title("Request throughput")
    left.set_ylabel("req/s")
    right.set_title("Output token throughput")
    right.set_ylabel("tok/s")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def latency_vs_throughput(results: Sequence[dict[str, Any]], path: Path, labels: Sequence[str] | None = None,
                          groups: Sequence[Sequence[dict[str, Any]]] | None = None) -> Path:
    """Median and P99 TTFT and TPOT against output token throughput, points labelled by QPS (the knee)."""
    plt = _pyplot()
    groups = groups or [results]
    labels = labels or [""]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (key, title) in zip(axes, LATENCY_PANELS[:2]):
        for label, rs in zip(labels, groups):
            xs = [r["output_throughput"] for r in rs]
            _median_and_p99(ax, xs, rs, key, label)
            for x, r in zip(xs, rs):
                ax.annotate(f"QPS {qps_label(r['request_rate'])}", (x, r[f"median_{key}_ms"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
        ax.set_title(f"{title} against throughput")
        ax.set_xlabel("output tok/s")
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def distributions(result: dict[str, Any], records: Sequence[dict[str, Any]], path: Path) -> Path:
    """One stage: CDFs of TTFT and E2EL (successful requests) and requests in flight over time."""
    import numpy as np

    plt = _pyplot()
    ok = [r for r in records if r["ok"] and r["chunks"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (name, values) in zip(axes[:2], (("TTFT", [r["chunks"][0] for r in ok]),
                                              ("E2EL", [r["chunks"][-1] for r in ok]))):
        if values:
            ms = np.sort(np.asarray(values) * 1000.0)
            ax.plot(ms, np.arange(1, len(ms) + 1) / len(ms), drawstyle="steps-post")
        ax.set_title(f"{name} distribution (CDF), QPS {qps_label(result['request_rate'])}")
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    series = result.get("in_flight") or []
    if series:
        axes[2].step([t for t, _ in series], [n for _, n in series], where="post")
    axes[2].set_title("Requests in flight")
    axes[2].set_xlabel("s since stage start")
    axes[2].grid(alpha=0.3)
    return _save(plt, fig, path)
