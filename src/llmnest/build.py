"""From what the user asked (`llmnest up ...`) and this host's facts to a DeploymentSpec. Pure."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import CatalogModel
from .errors import BadInput
from .host import HostFacts
from .parallel import default_tp
from .spec import DeploymentSpec, apply_sets, validated
from .targets import registry

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class UpRequest:
    """The options of `llmnest up`, before defaults are filled in."""

    model: str
    name: str | None = None
    engine: str | None = None
    runtime: str | None = None
    host: str | None = None
    port: int | None = None
    api_key: str | None = None
    no_api_key: bool = False
    insecure: bool = False
    max_model_len: int | None = None
    sets: dict[str, str] = field(default_factory=dict)
    weights: str | None = None  # a folder with the catalog model's weights, fetched by hand
    target: str = registry.DEFAULT
    options: dict[str, Any] = field(default_factory=dict)  # the target's own options, only those given


def new_api_key() -> str:
    return "sk-" + secrets.token_urlsafe(24)


def _name_from(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63]
    return name or "model"


def build_spec(req: UpRequest, model: CatalogModel | None, facts: HostFacts | None,
               placement: Any = None) -> tuple[DeploymentSpec, str | None]:
    """The spec for `req` on its target: this host (`facts`), or where `placement` says on a target that
    serves elsewhere (facts None); and the API key it will use (None when disabled).

    `model` is the catalog entry, or None when req.model is a local directory.
    """
    target = registry.declaration(req.target)
    remote = target.serves_on is not None
    gpus = facts.gpus if facts else ()
    device = "cuda" if remote or gpus else "cpu"
    gpu_count = 0 if remote else len(gpus)
    host = req.host or ("0.0.0.0" if remote else "127.0.0.1")
    if req.no_api_key and req.api_key:
        raise BadInput("--api-key and --no-api-key contradict each other; pass one")
    if req.no_api_key and host not in LOOPBACK and not req.insecure:
        where = target.serves_on or host
        fix = "" if remote else ", bind --host 127.0.0.1"
        raise BadInput(
            f"refusing to serve on {where} without an API key: anyone who reaches this port could use it. "
            f"Drop --no-api-key{fix}, or pass --insecure"
        )
    if req.api_key is not None and len(req.api_key) < 8:
        raise BadInput("--api-key is too short: use at least 8 characters (or leave it out to get a generated one)")

    if model is not None:
        name = req.name or model.short_name
        served = model.key
        path = str(Path(req.weights).expanduser().resolve()) if req.weights else None
    else:
        local = Path(req.model).expanduser().resolve()
        name = req.name or _name_from(local.name)
        served = local.name
        path = str(local)

    replicas = req.options.get("replicas") or 1
    docker_here = facts is not None and facts.has_docker_engine and device == "cuda"
    runtime = req.runtime or ("docker" if remote or docker_here else "process")
    data: dict[str, object] = {
        "name": name,
        "model": model.key if model else path,  # a catalog key, or the folder of an uncatalogued model
        "served_model_name": served,
        "model_path": path,
        "engine": req.engine or "vllm",
        "runtime": runtime,
        "target": req.target,
        "device": device,
        "gpu_count": gpu_count,
        "host": host,
        "port": req.port or 8080,
        "api_key_enabled": not req.no_api_key,
        "gateway": target.gateway and not (req.no_api_key or req.options.get("no_gateway")),
        "replicas": replicas,
        "max_model_len": req.max_model_len or (model.max_model_len if model else None),
        "gpu_memory_utilization": model.gpu_memory_utilization if model else 0.9,
        "tensor_parallel_size": default_tp(model, max(gpu_count // replicas, 1)) if device == "cuda" else 1,
        "enforce_eager": device == "cpu",  # CPU: 27 s to ready instead of 137 s with torch.compile
        "reasoning_parser": model.reasoning if model else None,
        "trust_remote_code": model.trust_remote_code if model else False,
        "placement": placement,
    }
    spec = validated(data)
    if req.sets:
        spec = apply_sets(spec, req.sets)
    if model is not None and spec.max_model_len and spec.max_model_len > model.context_length:
        raise BadInput(
            f"max_model_len {spec.max_model_len} exceeds {model.key}'s context of {model.context_length} tokens"
        )
    key = None if req.no_api_key else (req.api_key or new_api_key())
    return spec, key
