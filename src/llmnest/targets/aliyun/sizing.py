"""Which GPU instance serves a model, and the cloud spec that follows from it. Pure.

Instance shapes, prices and the fit verdict come from the planner (`llmnest.plan`).
"""

from __future__ import annotations

import ipaddress
import math

from ...catalog import DTYPE_BYTES, CatalogModel, find_model
from ...errors import BadInput
from ...plan import Plan
from .catalog import InstanceType, instance
from .picker import InstanceFit, plan_instance, rank_instances
from ...plan.memory import EngineSettings
from ...plan.on_host import engine_settings
from ...spec import DeploymentSpec, validated
from .placement import AliyunPlacement
from ...suggest import did_you_mean
from .images import engine_image

GIB = 2**30
MAX_SYSTEM_DISK_GIB = 500  # ROS ALIYUN::ECS::InstanceGroup SystemDiskSize: 20-500 GiB
SYSTEM_BASE_GIB = 60  # OS, docker and an engine image (the CUDA images are 20-30 GB)
MAX_DATA_DISK_GIB = 32768  # one ESSD data disk (ECS block storage limits)
NVSWITCH_GPUS = ("A100-40G", "A100-80G", "H20")  # SXM GPUs: their 8-GPU types join them through NVSwitch
# Types with eRDMA network cards: Alibaba Cloud PAI docs, "eRDMA: Use high-performance networks for
# distributed training" (help/en/pai/user-guide/erdma-distributed-training-with-high-performance-networks).
# llmnest does not use eRDMA (docs/aliyun.md says why): NCCL runs over TCP on eth0 on every type.
ERDMA_FAMILIES = ("ebmgn7v", "ebmgn8v", "ebmgn8is", "ebmgn8i", "gn8is")
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


def needs_fabric_manager(t: InstanceType) -> bool:
    """8 SXM GPUs joined by NVSwitch: CUDA needs nvidia-fabricmanager running (NVIDIA's driver docs)."""
    return t.gpus == 8 and t.gpu.key in NVSWITCH_GPUS


def has_erdma(t: InstanceType) -> bool:
    return t.family in ERDMA_FAMILIES


def same_shape(a: InstanceType, b: InstanceType) -> bool:
    """Types the same rendered engine command and bootstrap serve: GPUs per node, NVSwitch, eRDMA."""
    return (a.gpus, needs_fabric_manager(a), has_erdma(a)) == (b.gpus, needs_fabric_manager(b), has_erdma(b))


def _engine(spec: DeploymentSpec) -> EngineSettings | None:
    """The vLLM the instances will run: the spec's image or the one its region pulls, its flags and env."""
    if spec.engine != "vllm" or spec.placement is None:
        return None
    return engine_settings(spec, spec.image or engine_image(spec.engine, spec.placement.region))


def _fits(model: CatalogModel, nodes: int, spec: DeploymentSpec) -> list[InstanceFit]:
    return rank_instances(model, spec.max_model_len, nodes=nodes, gpu_memory_utilization=spec.gpu_memory_utilization,
                          engine=_engine(spec))


def fitting_types(spec: DeploymentSpec) -> list[str]:
    """The instance types a resolved spec's template may offer: those that serve the model with the
    same engine command (same GPUs per node and tensor parallel) and the same bootstrap, cheapest first."""
    place = spec.placement
    assert place is not None and place.instance_type is not None
    chosen = gpu_type(place.instance_type)
    model = catalog_model(spec)
    return [f.instance.name for f in _fits(model, place.nodes, spec)
            if same_shape(f.instance, chosen) and f.plan.tensor_parallel_size == _planned_tp(spec)]


def _planned_tp(spec: DeploymentSpec) -> int:
    """Tensor parallel per pipeline stage as the planner sizes it (SGLang spans both nodes with it)."""
    assert spec.placement is not None
    if spec.engine == "sglang" and spec.placement.nodes > 1:
        return spec.tensor_parallel_size // spec.placement.nodes
    return spec.tensor_parallel_size


def cheapest_fit(model: CatalogModel, nodes: int, spec: DeploymentSpec) -> InstanceFit:
    fits = _fits(model, nodes, spec)
    if not fits:
        more = "" if nodes == 2 else "; try --nodes 2"
        raise BadInput(f"no instance type in the catalog serves {model.key} on {nodes} node(s){more} "
                       "(`llmnest plan MODEL` shows why)")
    return fits[0]


def check_fits(model: CatalogModel, t: InstanceType, nodes: int, spec: DeploymentSpec) -> Plan:
    plan = plan_instance(model, t, spec.max_model_len, nodes=nodes, gpu_memory_utilization=spec.gpu_memory_utilization,
                         engine=_engine(spec))
    if plan.fits:
        return plan
    others = [f.instance.name for f in _fits(model, nodes, spec)][:3]
    hint = f"use --instance-type {' or '.join(others)}" if others else "use --nodes 2"
    raise BadInput(
        f"{model.key} does not fit {nodes} x {t.name} ({t.gpus}x {t.gpu.display_name}): {plan.reason.rstrip('.')}; "
        f"{hint}"
    )


def disks_gib(model: CatalogModel) -> tuple[int, int]:
    """(system disk, data disk) in GiB: the OS, docker and the engine image on the system disk, the
    weights with it while they fit ROS's 500 GiB system disk, else on a data disk of their own (0: none)."""
    weights = int(math.ceil(weights_gib(model) * 1.2 / 10) * 10)
    together = weights + SYSTEM_BASE_GIB
    if together <= MAX_SYSTEM_DISK_GIB:
        return together, 0
    if weights > MAX_DATA_DISK_GIB:
        raise BadInput(f"{model.key}'s weights need a {weights:,} GiB disk, more than ECS's {MAX_DATA_DISK_GIB:,} GiB "
                       "for one disk; pick a smaller model or a quantized variant")
    return SYSTEM_BASE_GIB, weights


def ready_wait_s(model: CatalogModel, mbps: int) -> float:
    """Seconds from boot to an answer: the weights through a public bandwidth cap of `mbps` (at
    least the 10 Mbps inbound ECS gives any public IP, a fifth more for overhead and retries), plus
    the host preparation, the image pull and the load."""
    download = weights_gib(model) * GIB * 8 / (max(mbps, 10) * 1e6) * 1.2
    return download + PREPARE_AND_LOAD_S


def ready_timeout_s(spec: DeploymentSpec) -> int:
    """How long the stack waits for the model to answer: 1 to 12 hours. With `--bandwidth 0` the
    download goes through the VPC's NAT gateway, whose bandwidth is unknown: as much as it may."""
    place = spec.placement
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
    place = spec.placement
    if place is None:
        raise BadInput("this deployment is not on Alibaba Cloud (no aliyun placement in its spec)")
    check_placement(place)
    model = catalog_model(spec)
    if place.instance_type:
        t = gpu_type(place.instance_type)
        plan = check_fits(model, t, place.nodes, spec)
    else:
        fit = cheapest_fit(model, place.nodes, spec)
        t, plan = fit.instance, fit.plan
    disks_gib(model)  # refuses weights no disk holds, before any call
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
        placement={**place.model_dump(), "instance_type": t.name, "bandwidth_mbps": pick_bandwidth(place, model),
                   "allow_cidr": allowed_cidr(place.allow_cidr)},
    )
    return validated(data)
