"""Replacing an engine behind the gateway without a gap: whether this machine has room for one more engine
of the new spec (a surge replica), and the gateway's own word (its /metrics, read from loopback) on which
replicas it routes to, so that a replica is put in rotation and drained out of it on what the gateway says."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from ...catalog import CatalogModel
from ...endpoints import reach_url
from ...errors import LlmnestError
from ...host import host_facts, host_memory_bytes
from ...spec import DeploymentSpec
from . import units_store
from .runners import CPU_BIND, cpu_bind

log = logging.getLogger(__name__)

GPU_PIN = "CUDA_VISIBLE_DEVICES"
ROTATION = "llmnest_replica_in_rotation"
ROTATION_TIMEOUT = 30.0  # the gateway reads the store every health interval (2 s for the one `up` starts)
IDLE_TIMEOUT = 60.0  # requests an engine out of rotation still answers get this long to end
OLD_GATEWAY_WAIT = 6.0  # a gateway started before it exported ROTATION: three of its health intervals
# what an engine reports running or queued on its /metrics (vLLM, SGLang)
BUSY_METRICS = {"vllm:num_requests_running", "vllm:num_requests_waiting", "sglang:num_running_reqs",
                "sglang:num_queue_reqs"}


@dataclass(frozen=True)
class Choice:
    """Surge (start the new engine next to the old one) or replace in place, and why, in one line."""

    surge: bool
    reason: str

    @property
    def line(self) -> str:
        how = ("surge: the old engine serves until the new one answers" if self.surge else
               "replace in place: the old engine stops first, a new spec that fails puts the old one back")
        return f"{how} ({self.reason})"


def choose(old: DeploymentSpec, new: DeploymentSpec, model: CatalogModel | None, units: int, *,
           available: int | None = None, cores: int | None = None, gpus: int | None = None) -> Choice:
    """Whether this machine has room for one more engine of `new` while `old`'s engines run: the same gateway in
    front, and on CPUs cores of its own for vLLM's threads and free memory for its weights and KV space, on
    GPUs GPUs no replica uses (the planner has checked that one engine of `new` fits on them)."""
    if not (old.gateway and new.gateway and (old.host, old.port) == (new.host, new.port)):
        return Choice(False, "no gateway in front of both specs to move traffic from one engine to the other")
    if old.replicas != new.replicas:
        return Choice(False, "the number of replicas changes")
    if units != old.replicas:
        return Choice(False, f"{units} of its {old.replicas} replica(s) run")
    if old.served_model_name != new.served_model_name:
        return Choice(False, "the served model name changes")
    if old.device != new.device:
        return Choice(False, "the device changes")
    if new.device == "cpu":
        return _cpu_room(old, new, model, available, cores if cores is not None else os.cpu_count() or 1)
    return _gpu_room(old, new, gpus if gpus is not None else len(host_facts().gpus))


def _cpu_room(old: DeploymentSpec, new: DeploymentSpec, model: CatalogModel | None, available: int | None,
              cores: int) -> Choice:
    if CPU_BIND in old.env or CPU_BIND in new.env:
        return Choice(False, f"the spec pins its engines' cores ({CPU_BIND})")
    bind = cpu_bind(old.replicas, old.replicas, cores, alone=False)
    if bind is None:
        return Choice(False, f"no CPU core left for one more engine ({cores} cores, {old.replicas} engine(s))")
    memory = _memory_room(new, model, 1, available)
    if not memory.fits:
        return Choice(False, memory.reason)
    return Choice(True, f"{memory.reason}, cores {bind} for it")


def _gpu_room(old: DeploymentSpec, new: DeploymentSpec, gpus: int) -> Choice:
    if GPU_PIN in old.env or GPU_PIN in new.env:
        return Choice(False, f"the spec pins its engines' GPUs ({GPU_PIN})")
    size = new.tensor_parallel_size * new.pipeline_parallel_size
    if size != old.tensor_parallel_size * old.pipeline_parallel_size:
        return Choice(False, "the GPUs per engine change")
    if gpus < (old.replicas + 1) * size:
        return Choice(False, f"no free GPUs for one more engine ({gpus} GPUs, {old.replicas} x {size} in use)")
    return Choice(True, f"{size} of {gpus} GPUs free")


@dataclass(frozen=True)
class Room:
    """Whether this machine holds more engines of a deployment, why (what is short), and how many of them
    it holds in all (`most`: the running ones and those there is room for)."""

    fits: bool
    reason: str
    most: int


def _memory_room(spec: DeploymentSpec, model: CatalogModel | None, more: int, available: int | None,
                 running: int = 0) -> Room:
    """Free memory for the weights and KV space of `more` engines of `spec` next to `running` ones."""
    need = _memory_needed(spec, model)
    if need is None:
        return Room(False, "no architecture figures to plan one more engine's memory", running)
    available = available if available is not None else host_memory_bytes("MemAvailable")
    engines = "one more engine needs" if more == 1 else f"{more} more engines need"
    if available is None or need * more > available:
        free = f"{available / 2**30:.1f} GiB" if available is not None else "an unknown amount"
        return Room(False, f"{engines} {need * more / 2**30:.1f} GiB of memory, {free} is free",
                    running + (available or 0) // max(need, 1))
    return Room(True, f"{need * more / 2**30:.1f} GiB of {available / 2**30:.1f} GiB free memory",
                running + available // max(need, 1))


def scale_room(spec: DeploymentSpec, model: CatalogModel | None, running: int, total: int, *,
               available: int | None = None, cores: int | None = None, gpus: int | None = None) -> Room:
    """Whether this machine holds `total` engines of `spec` where `running` run now: on CPUs a share of the
    cores for each of the `total` (the new ones take theirs, the running ones keep theirs until their next
    restart) and free memory for the new ones' weights and KV space; on GPUs `tensor x pipeline` GPUs each."""
    more = total - running
    if spec.device == "cpu":
        if CPU_BIND in spec.env:
            return Room(False, f"the spec pins its engines' cores ({CPU_BIND}), so new replicas would share them",
                        running)
        cores = cores if cores is not None else os.cpu_count() or 1
        memory = _memory_room(spec, model, more, available, running)
        most = max(min(memory.most, cores), running)
        if cores < total:
            return Room(False, f"{total} engines need a core each, this machine has {cores}", most)
        return Room(memory.fits, memory.reason, most)
    if GPU_PIN in spec.env:
        return Room(False, f"the spec pins its engines' GPUs ({GPU_PIN}), so new replicas would share them", running)
    size = spec.tensor_parallel_size * spec.pipeline_parallel_size
    gpus = gpus if gpus is not None else len(host_facts().gpus)
    if gpus < total * size:
        return Room(False, f"{total} engines need {total * size} GPUs ({size} each), this machine has {gpus}",
                    max(gpus // size, running))
    return Room(True, f"{more * size} of {gpus} GPUs for them", gpus // size)


def _memory_needed(spec: DeploymentSpec, model: CatalogModel | None) -> int | None:
    """The weights and KV space one engine of `spec` holds in RAM, as the planner figures them."""
    from ...plan import plan_for_spec
    from ...plan.architecture import model_from_dir

    try:
        model = model or model_from_dir(Path(spec.model_path or spec.model))
        plan = plan_for_spec(spec.model_copy(update={"replicas": 1}), model, host_facts().gpus)
    except LlmnestError:
        return None
    return plan.weights_bytes + plan.kv_cache_bytes


def _metrics(url: str, names: Collection[str]) -> list[Metric] | None:
    """The named metric families a /metrics URL exports; None when it cannot be read or parsed."""
    try:
        text = httpx.get(url, timeout=5).text
        return [f for f in text_string_to_metric_families(text) if f.name in names]
    except (httpx.HTTPError, ValueError):
        return None


def gateway_metrics(spec: DeploymentSpec, name: str) -> list[Metric] | None:
    """A metric family of the gateway in front of `spec`, read from this machine (loopback, no key needed)."""
    return _metrics(reach_url(spec.host, spec.port).removesuffix("/v1") + "/metrics", {name})


def rotation(spec: DeploymentSpec) -> dict[str, bool] | None:
    """The gateway's replicas of the deployment's model: id -> takes new requests; None when the gateway
    does not say (not reachable, or started before it exported its rotation)."""
    families = gateway_metrics(spec, ROTATION)
    if not families:
        return None
    return {s.labels["replica"]: s.value == 1 for f in families for s in f.samples
            if s.labels.get("model") == spec.served_model_name}


def wait_rotation(spec: DeploymentSpec, unit_id: str, taking: bool, on_wait: Callable[[str], None],
                  timeout: float = ROTATION_TIMEOUT) -> bool:
    """Until the gateway says replica `unit_id` takes new requests (`taking`) or no longer does; False when
    it did not say so in time. A gateway that cannot say (started by an llmnest from before it exported its
    rotation, or not answering) gets three of its health intervals instead."""
    deadline = time.monotonic() + timeout
    while True:
        seen = rotation(spec)
        if seen is None:
            log.warning("the gateway on port %s does not export %s: waiting %.0f s instead", spec.port, ROTATION,
                        OLD_GATEWAY_WAIT)
            time.sleep(OLD_GATEWAY_WAIT)
            return True
        if seen.get(unit_id, False) == taking:
            return True
        if time.monotonic() > deadline:
            return False
        on_wait(f"gateway: waiting for it to {'route to' if taking else 'stop routing to'} {unit_id}")
        time.sleep(0.5)


def drain(spec: DeploymentSpec, unit: units_store.Unit, on_wait: Callable[[str], None]) -> None:
    """`unit` (marked draining in the store) out of the gateway's rotation, on the gateway's word, then until
    its engine has nothing running or queued (bounded: a stuck request does not hold a redeploy for ever)."""
    if not wait_rotation(spec, unit.id, False, on_wait):
        log.warning("the gateway on port %s still routes to %s after %.0f s", spec.port, unit.id, ROTATION_TIMEOUT)
    deadline = time.monotonic() + IDLE_TIMEOUT
    while (busy := engine_busy(unit)) and time.monotonic() < deadline:
        on_wait(f"draining {unit.id}: {busy:.0f} request(s) still running")
        time.sleep(0.5)


def engine_busy(unit: units_store.Unit) -> float:
    """Requests the engine reports running or queued on its /metrics (0 when it cannot say)."""
    families = _metrics(unit.base_url.removesuffix("/v1") + "/metrics", BUSY_METRICS) or []
    return sum(s.value for f in families for s in f.samples)


def free_index(units: list[units_store.Unit], replicas: int) -> int:
    """The replica slot a surge replica takes: the lowest of 0..replicas no unit holds (its cores are free)."""
    held = {u.index for u in units}
    return next(i for i in range(replicas + 1) if i not in held)
