"""Which GPU instance serves a model, and the cloud spec that follows from it. Pure.

Instance shapes, prices and the fit verdict come from the planner (`llmnest.plan`).
"""

from __future__ import annotations

import ipaddress
import math

from ...catalog import DTYPE_BYTES, CatalogModel, find_model
from ...errors import BadInput
from ...plan import InstanceType, Plan, instance, instance_types, plan_gpus
from ...spec import AliyunPlacement, DeploymentSpec, validated
from ...suggest import did_you_mean
from .images import engine_image

GIB = 2**30
MAX_SYSTEM_DISK_GIB = 2048
DEFAULT_BANDWIDTH_MBPS = 100  # pay by traffic: the cap costs nothing, outbound gigabytes do; inbound is free
MAX_BANDWIDTH_MBPS = 200
MAX_WAIT_S = 43200  # the longest a ROS WaitCondition waits
PREPARE_AND_LOAD_S = 2700  # driver/docker/toolkit install, engine image pull, weights load
CLOUD_ENV = {"GLOO_SOCKET_IFNAME": "eth0", "NCCL_SOCKET_IFNAME": "eth0"}  # VPC networking, as the seed sets

# Public regions of Alibaba Cloud (ECS), for a clear error before any API call.
REGIONS = (
    "cn-qingdao", "cn-beijing", "cn-zhangjiakou", "cn-huhehaote", "cn-wulanchabu", "cn-hangzhou", "cn-shanghai",
    "cn-nanjing", "cn-fuzhou", "cn-shenzhen", "cn-heyuan", "cn-guangzhou", "cn-chengdu", "cn-wuhan-lr",
    "cn-hongkong", "ap-northeast-1", "ap-northeast-2", "ap-southeast-1", "ap-southeast-3", "ap-southeast-5",
    "ap-southeast-6", "ap-southeast-7", "us-east-1", "us-west-1", "eu-west-1", "eu-central-1", "me-east-1",
    "me-central-1", "na-south-1",
)


def gpu_type(name: str) -> InstanceType:
    """The shape and price of instance type `name` (the planner's catalog); unknown is bad input."""
    return instance(name)


def weights_gib(model: CatalogModel) -> float:
    return model.params * DTYPE_BYTES[model.dtype] / GIB


def plan_on(model: CatalogModel, t: InstanceType, nodes: int, spec: DeploymentSpec) -> Plan:
    """The planner's verdict for `model` on `nodes` instances of `t` (pipeline parallel across nodes)."""
    return plan_gpus(
        model, t.gpu, t.gpus * nodes, max_model_len=spec.max_model_len,
        gpu_memory_utilization=spec.gpu_memory_utilization, pipeline_parallel_size=nodes, target=t.name,
    )


def fitting_types(model: CatalogModel, nodes: int, spec: DeploymentSpec) -> list[tuple[InstanceType, Plan]]:
    """Every catalog type that serves the model on `nodes` instances, cheapest first."""
    out = []
    for t in instance_types():
        try:
            plan = plan_on(model, t, nodes, spec)
        except BadInput:  # the GPU cannot run the model's precision
            continue
        if plan.fits:
            out.append((t, plan))
    return out


def cheapest_fit(model: CatalogModel, nodes: int, spec: DeploymentSpec) -> tuple[InstanceType, Plan]:
    fits = fitting_types(model, nodes, spec)
    if not fits:
        more = "" if nodes == 2 else "; try --nodes 2"
        raise BadInput(f"no instance type in the catalog serves {model.key} on {nodes} node(s){more} "
                       "(`llmnest plan MODEL` shows why)")
    return fits[0]


def check_fits(model: CatalogModel, t: InstanceType, nodes: int, spec: DeploymentSpec) -> Plan:
    plan = plan_on(model, t, nodes, spec)
    if plan.fits:
        return plan
    others = [o.name for o, _ in fitting_types(model, nodes, spec)][:3]
    hint = f"use --instance-type {' or '.join(others)}" if others else "use --nodes 2"
    raise BadInput(
        f"{model.key} does not fit {nodes} x {t.name} ({t.gpus}x {t.gpu.display_name}): {plan.reason.rstrip('.')}; "
        f"{hint}"
    )


def system_disk_gib(model: CatalogModel) -> int:
    """Room for the OS, the engine image and the weights, rounded up to 10 GiB (80 GiB for a 7B)."""
    return min(MAX_SYSTEM_DISK_GIB, int(math.ceil((weights_gib(model) * 1.2 + 60) / 10) * 10))


def ready_wait_s(model: CatalogModel, mbps: int) -> float:
    """Seconds from boot to an answer: the weights through a public bandwidth cap of `mbps` (at
    least the 10 Mbps inbound ECS gives any public IP, a fifth more for overhead and retries), plus
    the host preparation, the image pull and the load."""
    download = weights_gib(model) * GIB * 8 / (max(mbps, 10) * 1e6) * 1.2
    return download + PREPARE_AND_LOAD_S


def ready_timeout_s(spec: DeploymentSpec) -> int:
    """How long the stack waits for the model to answer: 1 to 12 hours. With `--bandwidth 0` the
    download goes through the VPC's NAT gateway, whose bandwidth is unknown: as much as it may."""
    place = spec.aliyun
    assert place is not None
    if place.bandwidth_mbps == 0:
        return MAX_WAIT_S
    mbps = place.bandwidth_mbps or DEFAULT_BANDWIDTH_MBPS
    return min(MAX_WAIT_S, max(3600, int(ready_wait_s(catalog_model(spec), mbps))))


def pick_bandwidth(place: AliyunPlacement, model: CatalogModel) -> int:
    """The given bandwidth, checked; or the default, raised to the maximum when the weights need it."""
    if place.bandwidth_mbps == 0:
        if place.public:
            raise BadInput("a public endpoint needs a public IP: give --bandwidth above 0, or drop --public")
        if place.vpc_id is None:
            raise BadInput("--bandwidth 0 leaves the instance no way to download the weights and the engine; "
                           "keep a bandwidth, or use --vpc-id/--vswitch-id of a VPC with a NAT gateway")
        return 0
    mbps = place.bandwidth_mbps
    if mbps is None:
        fast_enough = ready_wait_s(model, DEFAULT_BANDWIDTH_MBPS) <= MAX_WAIT_S
        mbps = DEFAULT_BANDWIDTH_MBPS if fast_enough else MAX_BANDWIDTH_MBPS
    wait = ready_wait_s(model, mbps)
    if wait > MAX_WAIT_S:
        raise BadInput(f"at {mbps} Mbps the {weights_gib(model):,.0f} GiB of weights need ~{wait / 3600:.0f} h, longer "
                       f"than the stack waits ({MAX_WAIT_S // 3600} h); raise --bandwidth (up to {MAX_BANDWIDTH_MBPS})")
    return mbps


def check_placement(place: AliyunPlacement) -> None:
    """Refuse a placement the cloud would reject, before any call: region, network, billing."""
    if place.region not in REGIONS:
        raise BadInput(f"unknown Alibaba Cloud region {place.region!r}.{did_you_mean(place.region, REGIONS)} "
                       "Regions with the most GPU stock: cn-beijing, cn-shanghai, cn-hangzhou")
    if place.zone and not place.zone.startswith(place.region):
        raise BadInput(f"zone {place.zone!r} is not in region {place.region} (its zones start with "
                       f"{place.region}); drop --zone to use one with stock")
    if (place.vpc_id is None) != (place.vswitch_id is None):
        raise BadInput("an existing network needs both --vpc-id and --vswitch-id")
    if place.pay == "prepaid" and not place.period_months:
        raise BadInput("--pay prepaid needs --period MONTHS (1-9)")
    if place.pay == "postpaid" and place.period_months:
        raise BadInput("--period is for --pay prepaid; pay-as-you-go (the default) has no period")


def allowed_cidr(text: str | None) -> str | None:
    """--allow-cidr as the security group takes it: an address becomes its /32."""
    if text is None:
        return None
    try:
        return str(ipaddress.IPv4Network(text, strict=False))
    except ValueError:
        raise BadInput(f"--allow-cidr {text!r} is not an IPv4 address or CIDR block "
                       "(for example 203.0.113.7/32, or 0.0.0.0/0 for anyone)") from None


def catalog_model(spec: DeploymentSpec) -> CatalogModel:
    model = find_model(spec.model)
    if model is None:
        raise BadInput(
            f"{spec.model!r} is not a catalog model: a cloud deployment downloads its weights from ModelScope "
            "on the instance, so pick a model from `llmnest models`"
        )
    return model


def resolve(spec: DeploymentSpec) -> DeploymentSpec:
    """The cloud spec: instance type chosen (cheapest that fits) or checked, GPUs and parallelism set.

    Idempotent: a resolved spec resolves to itself.
    """
    place = spec.aliyun
    if place is None:
        raise BadInput("this deployment is not on Alibaba Cloud (no aliyun placement in its spec)")
    check_placement(place)
    model = catalog_model(spec)
    if place.instance_type:
        t = gpu_type(place.instance_type)
        plan = check_fits(model, t, place.nodes, spec)
    else:
        t, plan = cheapest_fit(model, place.nodes, spec)
    tp = spec.tensor_parallel_size if spec.tensor_parallel_size > 1 else plan.tensor_parallel_size
    pp = place.nodes
    if spec.engine == "sglang" and place.nodes > 1:  # SGLang spans nodes with tensor parallel, as the seed does
        pp = 1
        tp = tp if spec.tensor_parallel_size > 1 else tp * place.nodes
    data = spec.model_dump()
    data.update(
        runtime="docker",
        device="cuda",
        image=spec.image or engine_image(spec.engine, place.region),
        host="0.0.0.0",
        gpu_count=t.gpus * place.nodes,
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        env={**CLOUD_ENV, **spec.env},
        aliyun={**place.model_dump(), "instance_type": t.name, "bandwidth_mbps": pick_bandwidth(place, model),
                "allow_cidr": allowed_cidr(place.allow_cidr)},
    )
    return validated(data)
