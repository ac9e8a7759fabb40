"""`llmnest plan MODEL --target kubernetes`: the cluster's GPU pools judged for one model. Pure.

Per pool (the GPU nodes whose label names one card): nodes, GPUs allocatable and free now, taints, whether the
model fits the card and with how many GPUs per pod (`sizing.sized`, exactly as `up` sizes it), the planner's KV
cache tokens and full-length requests at once, and how many replicas the GPUs free now hold. Then the pool `up`
would use, the cluster checks (LWS, OSS CSI, a ReadWriteMany class, the metrics API or KEDA, the Secrets) and
the one-line refusals `up` would give (`preflight.refusals`). Without a cluster, the card of --gpu-type alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ...catalog import CatalogModel
from ...errors import BadInput
from ...plan import plan_gpus
from ...spec import DeploymentSpec
from . import preflight
from .engine import gpus_per_pod
from .placement import KubernetesPlacement, placement_of
from .sizing import GPU_COUNTS, card_of, sized, with_place

COLUMNS = ["pool", "nodes x GPUs", "free", "taints", "GPUs/pod", "TP x PP", "KV tokens", "concurrent", "replicas now",
           "verdict"]
PICKED = "*"
UNLABELLED = "(unlabelled)"


@dataclass(frozen=True)
class PoolPlan:
    """One card's pool and the model on it; the cluster's figures are None when it was not read."""

    card: str
    nodes: int | None
    gpus_per_node: int | None
    allocatable: int | None
    free: int | None
    taints: list[str]
    gpus_per_pod: int | None  # None: the model is not sized for this card (does not fit, unknown, not asked)
    tensor_parallel_size: int | None
    pipeline_parallel_size: int | None
    kv_cache_tokens: int | None
    max_concurrent_requests: int | None
    replicas_now: int | None
    ok: bool  # a replica can be placed here now
    verdict: str  # a few words, for the table
    reason: str = ""  # why the model is not sized here, in full (sizing's line)
    picked: bool = False


def _taint(t: dict[str, Any]) -> str:
    return f"{t.get('key', '')}:{t.get('effect', '')}"


def _blocking(taints: list[dict[str, Any]], place: KubernetesPlacement) -> list[str]:
    """Taints an engine pod does not tolerate (it tolerates the GPU taint only)."""
    return [_taint(t) for t in taints if t.get("effect") in {"NoSchedule", "NoExecute"} and t.get("key") != place.gpu_taint]


def _sized_on(spec: DeploymentSpec, model: CatalogModel, card: str) -> tuple[DeploymentSpec | None, str, str]:
    """The spec sized for `card` as `up` sizes it, or None, a few words and `up`'s line why not."""
    label = placement_of(spec).gpu_label
    if card == UNLABELLED:
        return None, f"no {label} label", f"these GPU nodes have no {label} label: up cannot select them"
    try:
        return sized(with_place(spec, gpu_type=card), model), "", ""
    except BadInput as exc:
        nodes = placement_of(spec).nodes
        short = ("a card the planner does not know" if card_of(card) is None else
                 f"does not fit {nodes} x {GPU_COUNTS[-1]} GPUs" if nodes > 1 else f"does not fit {GPU_COUNTS[-1]} GPUs")
        return None, short, exc.message


def _figures(spec: DeploymentSpec, model: CatalogModel) -> tuple[int, int]:
    """KV cache tokens and full-length requests at once, from the planner, for the sized spec."""
    gpu = card_of(placement_of(spec).gpu_type or "")
    assert gpu is not None, "sized for a known card"
    plan = plan_gpus(model, gpu, spec.gpu_count, max_model_len=spec.max_model_len,
                     tensor_parallel_size=spec.tensor_parallel_size, pipeline_parallel_size=spec.pipeline_parallel_size,
                     gpu_memory_utilization=spec.gpu_memory_utilization)
    return plan.kv_cache_tokens, plan.max_concurrent_requests


def _pool_plan(pool: preflight.GpuPool | None, card: str, sized_spec: DeploymentSpec | None, why: str,
               model: CatalogModel, facts: preflight.ClusterFacts | None, reason: str = "") -> PoolPlan:
    gpus = gpus_per_pod(sized_spec, placement_of(sized_spec)) if sized_spec else None
    tokens, at_once = _figures(sized_spec, model) if sized_spec else (None, None)
    taints = sorted({_taint(t) for n in pool.nodes for t in n.taints}) if pool else []
    replicas, ok, verdict = None, False, why
    if sized_spec and pool and facts is not None and gpus:
        place = placement_of(sized_spec)
        in_pool = [n for n in preflight.fitting_nodes(facts, place, gpus) if n in pool.nodes]
        replicas = sum(n.free // gpus for n in in_pool) // place.nodes
        if not in_pool:
            blocked = sorted({b for n in pool.nodes if n.gpus >= gpus for b in _blocking(n.taints, place)})  # key:effect
            verdict = (f"taint {', '.join(b.split(':')[0] for b in blocked)} not tolerated" if blocked else
                       f"a pod needs {gpus} GPUs on one node, its nodes have {pool.per_node}")
        elif replicas == 0:
            verdict = (f"busy: fewer than {place.nodes} nodes have {gpus} free" if place.nodes > 1 else
                       f"busy: no node has {gpus} free")
        else:
            ok, verdict = True, "fits"
    elif sized_spec and facts is not None:
        verdict = f"no node carries {placement_of(sized_spec).gpu_label}={card}"
    elif sized_spec:
        verdict = "fits the card"
    return PoolPlan(card, len(pool.nodes) if pool else None, pool.per_node if pool else None,
                    sum(n.gpus for n in pool.nodes) if pool else None, pool.free if pool else None, taints, gpus,
                    sized_spec.tensor_parallel_size if sized_spec else None,
                    sized_spec.pipeline_parallel_size if sized_spec else None, tokens, at_once, replicas, ok, verdict,
                    reason)


def checks(facts: preflight.ClusterFacts, place: KubernetesPlacement) -> list[dict[str, Any]]:
    """What the cluster has that some deployments need: ok True (there), False (this one needs it and it is
    not there), None (not there, not needed by this one)."""
    def row(check: str, there: bool, needed: bool, detail: str) -> dict[str, Any]:
        return {"check": check, "ok": True if there else (False if needed else None), "needed": needed,
                "detail": detail}

    has_lws = preflight.LWS_CRD in facts.crds
    has_oss = preflight.OSS_DRIVER in facts.csi_drivers
    rwx = [n for n, c in facts.storage_classes.items()
           if any(p in c.get("provisioner", "") for p in preflight.RWX_PROVISIONERS)]
    default = next((n for n, c in facts.storage_classes.items() if c.get("default")), None)
    wanted = place.storage_class or default
    scaler = preflight.autoscaler_for(facts, place)
    has_keda = preflight.KEDA_CRD in facts.crds
    autoscales = bool(place.autoscale_max and place.autoscale_max > place.replicas)
    secrets = [s for s in (place.gateway_db_secret, place.gateway_redis_secret, place.oss_secret) if s]
    missing = [s for s in secrets if s not in facts.secrets]
    return [
        row("LeaderWorkerSet CRD", has_lws, place.nodes > 1,
            f"{'there' if has_lws else 'absent'}: --nodes 2 {'can' if has_lws else 'cannot'} run"),
        row("OSS CSI driver", has_oss, place.weights_kind == "oss",
            f"{preflight.OSS_DRIVER} {'there' if has_oss else 'absent'}: oss:// weights "
            f"{'can' if has_oss else 'cannot'} be mounted"),
        row("ReadWriteMany class", wanted in rwx, place.weights_kind == "hub",
            f"{wanted or 'no default class'}{' (ReadWriteMany)' if wanted in rwx else ''}; ReadWriteMany classes: "
            f"{', '.join(rwx) or 'none'} (hub weights need one)"),
        row("metrics API / KEDA", facts.custom_metrics if scaler == "hpa" else has_keda, autoscales,
            f"custom metrics API {'there' if facts.custom_metrics else 'absent'}, KEDA "
            f"{'there' if has_keda else 'absent'} (--autoscale-max would use {scaler or 'neither'})"),
        row("Secrets", not missing, True,
            f"missing in {place.namespace}: {', '.join(missing)}" if missing else f"{', '.join(secrets)} there"),
    ]


def plan(facts: preflight.ClusterFacts, spec: DeploymentSpec, model: CatalogModel) -> dict[str, Any]:
    """Every GPU pool of the cluster for `spec` (sized already when --gpu-type fixed the card), which `up` would
    use, the cluster checks and `up`'s refusals."""
    place = placement_of(spec)
    rows, sized_for = _pool_plans(facts, spec, model)
    picked = place.gpu_type or _choice(rows, facts, place)
    rows = [PoolPlan(**{**asdict(r), "picked": r.card == picked}) for r in rows]
    refusals = _refusals(facts, place, sized_for.get(picked), rows)
    notes = _notes(place, picked, refusals)
    return _result(spec, model, rows, checks(facts, place), refusals, notes, picked or None)


def _pool_plans(facts: preflight.ClusterFacts, spec: DeploymentSpec,
                model: CatalogModel) -> tuple[list[PoolPlan], dict[str, DeploymentSpec | None]]:
    """Each pool judged for the model, and the spec sized for each card (None where it is not)."""
    place = placement_of(spec)
    rows, sized_for = [], {}
    for pool in preflight.pools(facts, place.gpu_label):
        if place.gpu_type is None:
            sized_spec, why, reason = _sized_on(spec, model, pool.card)
        elif pool.card == place.gpu_type:
            sized_spec, why, reason = spec, "", ""
        else:
            sized_spec, why, reason = None, "not asked (--gpu-type)", ""
        sized_for[pool.card] = sized_spec
        rows.append(_pool_plan(pool, pool.card, sized_spec, why, model, facts, reason))
    if place.gpu_type and place.gpu_type not in sized_for:
        sized_for[place.gpu_type] = spec
        rows.append(_pool_plan(None, place.gpu_type, spec, "", model, facts))
    return rows, sized_for


def _choice(rows: list[PoolPlan], facts: preflight.ClusterFacts, place: KubernetesPlacement) -> str:
    """The labelled pool (most free GPUs first) where a replica fits now, else the first the model fits,
    else the one with most free GPUs (whose refusal then says why)."""
    labelled = [r for r in rows if r.card != UNLABELLED]
    fitting = [r for r in labelled if r.ok] or [r for r in labelled if r.gpus_per_pod]
    return fitting[0].card if fitting else preflight.pick_card(facts, place.gpu_label)


def card_for(facts: preflight.ClusterFacts, spec: DeploymentSpec,
             model: CatalogModel) -> tuple[str, DeploymentSpec | None]:
    """The card `up` uses when --gpu-type is left out ("" when no node is labelled), the same as `plan` picks,
    and the spec sized for it (None when the model does not fit it)."""
    rows, sized_for = _pool_plans(facts, spec, model)
    card = _choice(rows, facts, placement_of(spec))
    return card, sized_for.get(card)


def _refusals(facts: preflight.ClusterFacts, place: KubernetesPlacement, chosen: DeploymentSpec | None,
              rows: list[PoolPlan]) -> list[str]:
    """What `up` would refuse: no labelled pool, the model not sized for the picked card, or preflight's lines."""
    picked = next((r for r in rows if r.picked), None)
    if picked is None:
        return [preflight.unlabelled_line(facts, place.gpu_label)]
    if chosen is None:
        return [picked.reason]
    return preflight.refusals(facts, placement_of(chosen), gpus_per_pod(chosen, placement_of(chosen)))


def _notes(place: KubernetesPlacement, picked: str, refusals: list[str]) -> list[str]:
    out = []
    if picked:
        why = "--gpu-type" if place.gpu_type else "the labelled pool with the most free GPUs the model fits"
        out.append(f"{PICKED} up would use {picked} ({why})")
    out += [f"refused: {line}" for line in refusals]
    if not refusals:
        out.append("up would pass the cluster's preflight")
    return out


def offline(spec: DeploymentSpec, model: CatalogModel, why: str) -> dict[str, Any]:
    """The card of --gpu-type alone (the spec is sized for it), when no cluster could be read."""
    place = placement_of(spec)
    assert place.gpu_type, "the caller asks for --gpu-type first"
    row = _pool_plan(None, place.gpu_type, spec, "", model, None)
    return _result(spec, model, [PoolPlan(**{**asdict(row), "picked": True})], [],
                   [], [f"the cluster was not read ({why}): {place.gpu_type} alone is planned"], place.gpu_type,
                   read=False)


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _result(spec: DeploymentSpec, model: CatalogModel, rows: list[PoolPlan], checked: list[dict[str, Any]],
            refusals: list[str], notes: list[str], picked: str | None, read: bool = True) -> dict[str, Any]:
    place = placement_of(spec)
    pods = f"{place.replicas} replica(s) of {place.nodes} node(s)" if place.nodes > 1 else f"{place.replicas} replica(s)"
    table = [[f"{r.card} {PICKED}" if r.picked else r.card, "-" if r.nodes is None else f"{r.nodes} x {r.gpus_per_node}",
              "-" if r.free is None else f"{r.free} of {r.allocatable}",
              ", ".join(dict.fromkeys(t.split(":")[0] for t in r.taints)) or "-", _cell(r.gpus_per_pod),
              f"{r.tensor_parallel_size} x {r.pipeline_parallel_size}" if r.tensor_parallel_size else "-",
              _cell(r.kv_cache_tokens), _cell(r.max_concurrent_requests), _cell(r.replicas_now), r.verdict]
             for r in rows]
    return {"kind": "table", "spec": spec.name, "model": model.key,
            "title": f"{model.key} at max-model-len {spec.max_model_len:,}, {pods}: GPU pools of namespace "
                     f"{place.namespace}'s cluster" if read else
                     f"{model.key} at max-model-len {spec.max_model_len:,}, {pods}: {place.gpu_type}",
            "columns": COLUMNS, "rows": table, "checks": checked, "notes": notes,
            "cluster_read": read, "picked": picked, "fits": (not refusals) if read else None,
            "pools": [asdict(r) for r in rows], "refusals": refusals}
