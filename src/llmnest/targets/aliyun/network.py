"""The stack's network addresses, shared by the template (security group) and the bootstrap (who may read
the gateway's /metrics without a key). Pure."""

from __future__ import annotations

from ...spec import DeploymentSpec

NEW_VPC_CIDR = "192.168.0.0/16"
NEW_VSWITCH_CIDR = "192.168.1.0/24"
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")  # an existing VPC's CIDR is one of these


def vpc_ranges(spec: DeploymentSpec) -> tuple[str, ...]:
    """The addresses inside the deployment's VPC: the CIDR of the VPC the stack makes, or, in the user's
    VPC (whose CIDR the template does not know), every private range."""
    assert spec.placement is not None
    return (NEW_VPC_CIDR,) if spec.placement.vpc_id is None else PRIVATE_RANGES
