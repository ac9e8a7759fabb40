"""How long each step of a stack may take, from the weights and the bandwidth. Pure.

Every wait (a RunCommand's Timeout, a wait condition's Timeout, the script's own deadlines and the
stack's timeout) comes from these figures, so no outer wait is shorter than an inner one:

- prepare: driver, docker and toolkit install, image pull and the weights' download through the
  public bandwidth (`sizing.ready_timeout_s`: 1-12 hours);
- load: the weights read from the ESSD disk at a conservative rate, then the engine's own start
  (CUDA graphs, NCCL); the same on every node, so it holds for the two-node editions too;
- ray: the Ray head up and the worker joined (vLLM two-node only); start: a container started from
  an image already on the host.
"""

from __future__ import annotations

from ...spec import DeploymentSpec
from .sizing import GIB, MAX_WAIT_S, catalog_model, ready_timeout_s, resolve, weights_gib

DISK_READ_BYTES_S = 150e6  # an ESSD read, below PL0's 180 MB/s cap, so any ESSD level reads faster
ENGINE_START_S = 1200  # after the weights: CUDA graph capture, NCCL set-up, the first answer
RAY_WAIT_S = 900  # a Ray node joins within this (the image is already on the host)
START_S = 600  # `docker rm` + `docker run` of an image the host already has


def load_s(spec: DeploymentSpec) -> int:
    """From `docker run` to the first answer: the weights off the disk, then the engine's start."""
    return int(weights_gib(catalog_model(spec)) * GIB / DISK_READ_BYTES_S) + ENGINE_START_S


def prepare_s(spec: DeploymentSpec) -> int:
    """From boot to a prepared host: installs, image pull, the weights' download (capped at ROS's 12 h)."""
    return ready_timeout_s(spec)


def two_node(spec: DeploymentSpec) -> bool:
    place = resolve(spec).placement
    assert place is not None
    return place.nodes == 2


def ready_wait_s(spec: DeploymentSpec) -> int:
    """The Ready wait condition: single node, the whole bootstrap; two nodes, from the serving role's
    start (the hosts are prepared, Ray is up) to the answer."""
    spec = resolve(spec)
    if not two_node(spec):
        return min(MAX_WAIT_S, prepare_s(spec) + load_s(spec))
    ray = RAY_WAIT_S if spec.engine == "vllm" else 0
    return min(MAX_WAIT_S, START_S + ray + load_s(spec))


def role_timeout_s(spec: DeploymentSpec, role: str) -> int:
    """A RunCommand's Timeout: at least every wait the role's script makes (Cloud Assistant stops it after)."""
    spec = resolve(spec)
    if role in ("single", "prepare"):
        return ready_wait_s(spec) if role == "single" else prepare_s(spec)
    if role in ("ray-head", "ray-worker"):
        return START_S + RAY_WAIT_S
    if role == "sglang-worker":
        return START_S
    return ready_wait_s(spec)  # serve, sglang-head


def stack_minutes(spec: DeploymentSpec) -> int:
    """CreateStack's TimeoutInMinutes: every wait of the edition one after the other, plus half an hour
    for the network and the instances."""
    spec = resolve(spec)
    if not two_node(spec):
        total = ready_wait_s(spec)
    else:
        steps = ("ray-head", "ray-worker") if spec.engine == "vllm" else ("sglang-worker",)
        total = prepare_s(spec) + sum(role_timeout_s(spec, r) for r in steps) + ready_wait_s(spec)
    return total // 60 + 30
