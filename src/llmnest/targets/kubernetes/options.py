"""The options `llmnest up --target kubernetes` takes: placement field, flag, help and default.

Declared here so the CLI can be generated from them once targets declare their options (each flag
sets the `KubernetesPlacement` field of the same name; help and default come from the placement).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .placement import KubernetesPlacement

# placement field -> the `llmnest up` flag that sets it (the flags the issue names first)
FLAGS = {
    "context": "--context", "namespace": "--namespace", "replicas": "--replicas", "gpu_type": "--gpu-type",
    "nodes": "--nodes", "weights": "--weights-from", "storage_class": "--storage-class",
    "oss_endpoint": "--oss-endpoint", "oss_secret": "--oss-secret", "expose": "--expose",
    "autoscale_max": "--autoscale-max", "autoscaler": "--autoscaler", "load_timeout_s": "--load-timeout",
    "create_namespace": "--create-namespace", "gateway_image": "--gateway-image",
    "gateway_db_secret": "--gateway-db-secret", "gateway_redis_secret": "--gateway-redis-secret",
    "slb_spec": "--slb-spec",
}


@dataclass(frozen=True)
class Option:
    field: str
    flag: str
    help: str
    default: Any


def declared() -> list[Option]:
    """Every option with its help and default, from the placement's own fields."""
    fields = KubernetesPlacement.model_fields
    return [Option(name, flag, fields[name].description or name.replace("_", " "), fields[name].default)
            for name, flag in FLAGS.items()]


OPTIONS = FLAGS  # what `Target.options` takes today: field -> flag


def flag_of(field: str) -> str:
    return FLAGS.get(field, field)
