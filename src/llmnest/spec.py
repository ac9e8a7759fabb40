"""The deployment spec: one typed description that every renderer and runtime works from."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .errors import BadInput, LlmnestError
from .targets import registry

Engine = Literal["vllm", "sglang"]
Runtime = Literal["process", "docker"]
Device = Literal["cuda", "cpu"]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
DEFAULT_PORT = 8080


class DeploymentSpec(BaseModel):
    """Everything that decides what runs. The API key itself is a secret kept beside it, not in it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str = Field(description="catalog key, or a local model directory")
    served_model_name: str
    model_path: str | None = Field(default=None, description="local weights directory, once resolved")
    engine: Engine = "vllm"
    runtime: Runtime = "process"
    target: str = Field(default=registry.DEFAULT, description="a registered target (targets/registry.py)")
    device: Device = "cpu"
    gpu_count: int = Field(default=0, ge=0)
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    api_key_enabled: bool = True
    gateway: bool = Field(default=False, description="serve through llmnest's gateway on host:port (keys, usage,"
                          " limits, metrics); the engines then listen on loopback ports of their own")
    replicas: int = Field(default=1, ge=1, le=16, description="engine replicas behind the gateway")
    max_model_len: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float = Field(default=0.95, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    enable_chunked_prefill: bool = True
    trust_remote_code: bool = Field(default=False, description="run Python shipped with the weights")
    enforce_eager: bool = False
    cpu_kv_cache_gib: int = Field(default=2, ge=1, description="vLLM CPU build: KV cache size in GiB")
    reasoning_parser: str | None = None
    image: str | None = Field(default=None, description="container image for the docker runtime")
    engine_args: dict[str, str] = Field(default_factory=dict, description="pass-through engine flags")
    env: dict[str, str] = Field(default_factory=dict)
    placement: Any = Field(default=None, validate_default=True,
                           description="where the target puts it: its declared placement model, or None")

    @model_validator(mode="before")
    @classmethod
    def _placement_was_per_target(cls, data: Any) -> Any:
        """Specs stored before the placement was the target's kept it under the target's name (`NAME: {...}`,
        and `NAME: null` on every other target's spec)."""
        if isinstance(data, dict) and "placement" not in data and (old := set(registry.names()) & set(data)):
            place = data.get(data.get("target", registry.DEFAULT))
            data = {k: v for k, v in data.items() if k not in old} | {"placement": place}
        return data

    @field_validator("target")
    @classmethod
    def _registered(cls, value: str) -> str:
        try:
            registry.declaration(value)
        except LlmnestError:
            raise ValueError(f"unknown target {value!r}: use {registry.choices()}") from None
        return value

    @field_validator("placement")
    @classmethod
    def _placement_of_target(cls, value: Any, info: ValidationInfo) -> Any:
        if "target" not in info.data:
            return value  # the target is refused already
        target = registry.declaration(info.data["target"])
        if target.placement is None:
            if value is not None:
                raise ValueError(f"a {target.name} target takes no placement")
            return None
        if value is None:
            raise ValueError(f"a {target.name} target needs its placement (where on {target.place})")
        try:
            return target.placement.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError("use 1-63 lowercase letters, digits and dashes, starting with a letter or digit")
        return value

    @model_validator(mode="after")
    def _fits_host(self) -> DeploymentSpec:
        target = registry.declaration(self.target)
        if self.replicas > 1 and not (self.gateway or target.own_gateway):
            raise ValueError("several replicas need the gateway in front of them: drop --no-gateway and --no-api-key")
        if self.gateway and (not target.gateway or not self.api_key_enabled):
            raise ValueError("the gateway fronts keyed deployments on this machine only")
        if self.device == "cpu" and self.engine == "sglang":
            raise ValueError("SGLang needs an NVIDIA GPU; on this machine use --engine vllm")
        per_replica = self.tensor_parallel_size * self.pipeline_parallel_size
        sharing = 1 if target.own_gateway else self.replicas  # replicas that share the gpu_count GPUs
        if self.device == "cuda" and per_replica * sharing > max(self.gpu_count, 1):
            times = f" x replicas {self.replicas}" if sharing > 1 else ""
            raise ValueError(f"tensor_parallel_size x pipeline_parallel_size{times} = {per_replica * sharing} "
                             f"exceeds the {self.gpu_count} GPUs")
        return self

    def listening_on(self, host: str, port: int, replica: int = 0) -> DeploymentSpec:
        """The spec of one engine replica that listens on host:port (behind the gateway); with several
        replicas on GPUs (or a surge replica next to the one, in slot 1), each sees its own GPUs."""
        update: dict[str, Any] = {"host": host, "port": port}
        if self.device == "cuda" and (self.replicas > 1 or replica > 0):
            size = self.tensor_parallel_size * self.pipeline_parallel_size
            gpus = ",".join(str(g) for g in range(replica * size, (replica + 1) * size))
            update["env"] = {**self.env, "CUDA_VISIBLE_DEVICES": gpus}
        return self.model_copy(update=update)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> DeploymentSpec:
        return cls.model_validate_json(text)


SPEC_FIELDS = frozenset(DeploymentSpec.model_fields) - {"engine_args", "env", "placement"}
# A redeploy keeps its identity. The model too: its name, parser, context and weights follow from it.
LOCKED_FIELDS = frozenset({"name", "target", "model"})


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """`--set KEY=VALUE` pairs as a dict; a pair without '=' is bad input."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise BadInput(f"--set expects KEY=VALUE, got {pair!r} (for example --set max_model_len=8192)")
        out[key] = value.strip()
    return out


def apply_sets(spec: DeploymentSpec, sets: dict[str, str]) -> DeploymentSpec:
    """A new spec with `--set` values applied.

    Keys naming a spec field (dashes or underscores) set that field, typed and validated; `env.NAME`
    sets an environment variable; `placement.FIELD`, or a FIELD only the target's placement has, sets
    that placement field (the target's redeploy says which it cannot change in place); any other key
    becomes an engine flag (`enable-prefix-caching=true` gives `--enable-prefix-caching`). An empty
    value removes that variable or flag (`flag=`).
    """
    data: dict[str, Any] = spec.model_dump()
    placed = set(type(spec.placement).model_fields) if isinstance(spec.placement, BaseModel) else set()
    for raw_key, value in sets.items():
        key = raw_key.replace("-", "_")
        typed = None if value.lower() in {"", "none", "null"} else _scalar(value)
        if raw_key.startswith("env."):
            data["env"] = _with(data["env"], raw_key[4:], value)
        elif key in LOCKED_FIELDS:
            raise BadInput(f"--set cannot change {key!r}; create a new deployment instead (`llmnest up MODEL`)")
        elif key in SPEC_FIELDS:
            data[key] = typed
        elif key.startswith("placement."):
            if key[len("placement."):] not in placed:
                raise BadInput(f"--set {raw_key}: a {spec.target} deployment's placement has "
                               f"{', '.join(sorted(placed)) or 'no fields'}")
            data["placement"][key[len("placement."):]] = typed
        elif key in placed:
            data["placement"][key] = typed
        else:
            data["engine_args"] = _with(data["engine_args"], raw_key.replace("_", "-"), value)
    return validated(data)


def _with(mapping: dict[str, str], key: str, value: str) -> dict[str, str]:
    """`mapping` with key set to value, or without key when value is empty."""
    return {**{k: v for k, v in mapping.items() if k != key}, **({key: value} if value else {})}


def validated(data: dict[str, Any]) -> DeploymentSpec:
    """Build a spec, turning validation errors into one line of bad input."""
    try:
        return DeploymentSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        message = first["msg"].removeprefix("Value error, ")
        raise BadInput(f"invalid {where}: {message}") from exc


def _scalar(value: str) -> Any:
    """'8192' -> 8192, 'true' -> True, '0.9' -> 0.9, anything else stays a string."""
    try:
        return json.loads(value.lower() if value.lower() in {"true", "false"} else value)
    except json.JSONDecodeError:
        return value
