"""`llmnest up MODEL --target kubernetes` -> the DeploymentSpec: GPUs per pod from the card. Pure.

The card is the value of the GPU node label (ACK: `aliyun.accelerator/nvidia_name`, e.g. NVIDIA-A10,
which is nvidia-smi's name with dashes); the planner's GPU catalog gives its memory, and tensor
parallel is the smallest GPU count per node (1, 2, 4, 8) that the planner says the model fits.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from ...spec_builder import UpRequest, build_spec
from ...catalog import CatalogModel, demo_model, find_model, get_model
from ...errors import BadInput
from ...plan import GpuModel, gpu_models, plan_gpus
from ...engines import default_image
from ...spec import DeploymentSpec, validated
from . import DECLARATION
from .placement import KubernetesPlacement, placement_of

GPU_COUNTS = (1, 2, 4, 8)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def card_of(label_value: str) -> GpuModel | None:
    """The catalog GPU a node label value names ('NVIDIA-A10', 'Tesla-V100-SXM2-16GB', or a key 'A10')."""
    wanted = _norm(label_value)
    for gpu in gpu_models().values():
        if wanted in {_norm(gpu.key), *(_norm(n) for n in gpu.names)}:
            return gpu
    return None


def flag_of(field: str) -> str:
    option = DECLARATION.option(field)
    return option.flag if option else field


def parse_placement(options: dict[str, Any]) -> KubernetesPlacement:
    """The target's options as a placement; a bad value is one line naming its flag."""
    return placement_from({k: v for k, v in options.items() if DECLARATION.option(k)})


def placement_from(data: dict[str, Any]) -> KubernetesPlacement:
    """A placement from its fields; a bad value is one line naming its flag (or field)."""
    try:
        return KubernetesPlacement(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        where = f"invalid {flag_of(field)}: " if field else ""
        raise BadInput(f"{where}{first['msg'].removeprefix('Value error, ')}") from None


def with_place(spec: DeploymentSpec, **changes: Any) -> DeploymentSpec:
    """The spec with placement fields changed (validated); its replicas follow the placement's."""
    place = placement_from({**placement_of(spec).model_dump(), **changes})
    return validated({**spec.model_dump(), "placement": place, "replicas": place.replicas})


def catalog_model(name: str | None) -> CatalogModel:
    model = get_model(name) if name else demo_model()
    return model


def request_spec(req: UpRequest, place: KubernetesPlacement) -> tuple[DeploymentSpec, CatalogModel]:
    """The spec before sizing: the catalog model on CUDA in the engine's image, placement attached."""
    if req.weights:
        raise BadInput(f"--weights is a folder on this machine: in a cluster use {flag_of('weights')} oss://BUCKET/PATH or "
                       "pvc:CLAIM (or leave it out: a Job downloads them once into a shared volume)")
    for flag, given in (("--runtime", req.runtime), ("--host", req.host)):
        if given is not None:
            raise BadInput(f"{flag} is for this machine: in a cluster the engine runs in its image and the gateway's "
                           f"Service takes the traffic (--expose internet|intranet|cluster, --port for its port)")
    if req.no_api_key:
        raise BadInput("the cluster's gateway always checks keys: drop --no-api-key (`up` makes a key for the "
                       "deployment, or takes yours with --api-key)")
    if req.api_key is not None and not re.fullmatch(r"[\x21-\x7e]{8,256}", req.api_key):
        raise BadInput("--api-key must be 8 to 256 printable characters without spaces (it travels as a bearer token)")
    model = catalog_model(req.model)
    engine = req.engine or "vllm"
    base, _ = build_spec(replace(req, options={}), model, None, placement=place)
    data = base.model_dump()
    data.update(target=DECLARATION.name, device="cuda", runtime="docker", host="0.0.0.0", gateway=False,
                replicas=place.replicas, engine=engine, enforce_eager=False, image=base.image or default_image(engine),
                placement=place)
    return validated(data), model


def sized(spec: DeploymentSpec, model: CatalogModel) -> DeploymentSpec:
    """Tensor (and pipeline) parallel for the placement's card and nodes, unless `--set` fixed them."""
    place = placement_of(spec)
    if place.gpu_type is None:
        raise BadInput("which GPU? pass --gpu-type with the node label value (e.g. NVIDIA-A10)")
    gpu = card_of(place.gpu_type)
    if gpu is None:
        raise BadInput(f"--gpu-type {place.gpu_type!r} is no GPU llmnest knows; known: "
                       f"{', '.join(g.names[0].replace(' ', '-') for g in gpu_models().values() if g.names)}")
    fixed = spec.tensor_parallel_size > 1 or spec.pipeline_parallel_size > 1
    per_node = spec.tensor_parallel_size * spec.pipeline_parallel_size // place.nodes if fixed else None
    for count in ([per_node] if per_node else GPU_COUNTS):
        total = count * place.nodes
        tp, pp = (total, 1) if place.nodes == 1 or spec.engine == "sglang" else (count, place.nodes)
        plan = plan_gpus(model, gpu, total, max_model_len=spec.max_model_len, tensor_parallel_size=tp,
                         pipeline_parallel_size=pp, gpu_memory_utilization=spec.gpu_memory_utilization)
        if plan.fits or fixed:
            data = spec.model_dump()
            data.update(gpu_count=total, tensor_parallel_size=tp, pipeline_parallel_size=pp)
            return validated(data)
    more = "" if place.nodes == 2 else "; try --nodes 2 (a LeaderWorkerSet over two GPU nodes)"
    raise BadInput(f"{model.key} does not fit {GPU_COUNTS[-1] * place.nodes} x {gpu.display_name} "
                   f"({plan.reason}){more}")


def hub_model(spec: DeploymentSpec) -> CatalogModel:
    model = find_model(spec.model)
    if model is None:
        raise BadInput(f"{spec.model!r} is not a catalog model; pick one from `llmnest models`")
    return model
