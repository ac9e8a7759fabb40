"""Live figures of a deployment from the Prometheus text its engines (vLLM) and its gateway export:
requests/s and output tokens/s (counter deltas between two reads), requests running and waiting, KV
cache use. Rates need two reads; the first answer has the gauges only."""

from __future__ import annotations

import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .. import state

# vLLM's names over versions (the KV cache gauge was renamed from gpu_ to kv_ in 0.10).
ENGINE_COUNTERS = {"requests": ("vllm:request_success",), "tokens": ("vllm:generation_tokens",)}
ENGINE_GAUGES = {"running": ("vllm:num_requests_running",), "waiting": ("vllm:num_requests_waiting",),
                 "kv_cache": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")}
GATEWAY_COUNTERS = {"requests": ("llmnest_requests",), "tokens": ("llmnest_completion_tokens",)}

_previous: dict[str, tuple[float, dict[str, float]]] = {}


def totals(text: str, names: dict[str, tuple[str, ...]], model: str | None = None) -> dict[str, float]:
    """The sum over samples of each named metric (counters' `_total` samples), for `model` when labelled."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for key, wanted in names.items():
            if family.name not in wanted:
                continue
            for sample in family.samples:
                if sample.name.endswith(("_created", "_bucket", "_sum", "_count")):
                    continue
                if model is not None and sample.labels.get("model", model) != model:
                    continue
                out[key] = out.get(key, 0.0) + sample.value
    return out


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _read(url: str) -> str | None:
    try:
        resp = httpx.get(url, timeout=2)
        return resp.text if resp.status_code == 200 else None
    except httpx.HTTPError:
        return None


def sample(dep: state.Deployment) -> dict[str, float]:
    """Counters and gauges summed over the replicas; counters from the gateway when there is one
    (what clients get), else from the engines. KV cache use: the fullest replica."""
    spec = dep.spec
    units = [(u.host, u.port) for u in dep.replicas] or [(spec.host, spec.port)]
    figures: dict[str, float] = {}
    kv: list[float] = []
    for host, port in units:
        text = _read(f"http://{_local(host)}:{port}/metrics")
        if text is None:
            continue
        found = totals(text, {**ENGINE_GAUGES, **({} if spec.gateway else ENGINE_COUNTERS)})
        if "kv_cache" in found:
            kv.append(found.pop("kv_cache"))
        for k, v in found.items():
            figures[k] = figures.get(k, 0.0) + v
    if kv:
        figures["kv_cache"] = max(kv)
    if spec.gateway and (text := _read(f"http://{_local(spec.host)}:{spec.port}/metrics")) is not None:
        figures.update(totals(text, GATEWAY_COUNTERS, spec.served_model_name))
    return figures


def rates(name: str, now: float, figures: dict[str, float]) -> dict[str, Any]:
    """The figures with requests/s and tokens/s since this deployment's previous read."""
    out: dict[str, Any] = {"running": figures.get("running"), "waiting": figures.get("waiting"),
                           "kv_cache_pct": round(figures["kv_cache"] * 100, 1) if "kv_cache" in figures else None,
                           "req_per_s": None, "tok_per_s": None}
    before = _previous.get(name)
    _previous[name] = (now, figures)
    if before is not None and now > before[0]:
        dt = now - before[0]
        for key, rate in (("requests", "req_per_s"), ("tokens", "tok_per_s")):
            if key in figures and key in before[1]:
                out[rate] = round(max(0.0, figures[key] - before[1][key]) / dt, 2)
    return out


def live(name: str) -> dict[str, Any]:
    dep = state.get(name)
    return rates(dep.name, time.monotonic(), sample(dep))
