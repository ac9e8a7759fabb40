"""The options of `llmnest up --target aliyun`: the placement's fields, the instance password and --validate."""

from __future__ import annotations

from ..declaration import Option

OPTIONS = (
    Option("region", "--region", "Region, e.g. cn-hangzhou.", required=True, label="Region",
           placeholder="cn-hangzhou"),
    Option("zone", "--zone", "Zone (default: one that offers the type).", label="Zone",
           placeholder="one that offers the type"),
    Option("instance_type", "--instance-type", "ECS type (default: cheapest that fits).", label="Instance type",
           placeholder="cheapest that fits"),
    Option("nodes", "--nodes", "1, or 2 for the two-instance Ray edition.", kind=int, default=1, min=1, max=2),
    Option("public", "--public", "Public IP and access, or VPC only.", kind=bool, default=False, negative="--private",
           label="public IP"),
    Option("bandwidth_mbps", "--bandwidth",
           "Public bandwidth cap in Mbps, pay by traffic (default: 100, or 200 when the weights need it; "
           "0: no public IP, needs --vpc-id with a NAT gateway).", kind=int, min=0, max=200, param="bandwidth"),
    Option("allow_cidr", "--allow-cidr", "CIDR allowed to reach the port and SSH.", label="Allowed CIDR"),
    Option("vpc_id", "--vpc-id", "Existing VPC (with --vswitch-id)."),
    Option("vswitch_id", "--vswitch-id", "Existing vSwitch."),
    Option("pay", "--pay", "postpaid (pay-as-you-go) or prepaid.", default="postpaid"),
    Option("period_months", "--period", "Months, for --pay prepaid.", kind=int, min=1, max=9, param="period"),
    Option("key_pair", "--key-pair", "SSH key pair name."),
    Option("image_id", "--image-id", "GPU image with the NVIDIA driver, docker and container toolkit (default: newest "
           "public Ubuntu 22.04, completed by the bootstrap)."),
    Option("llmnest_package", "--llmnest-package", "What pip installs on the instance for its gateway: a wheel URL "
           "(e.g. on OSS) or a requirement (default: llmnest==this version, from PyPI)."),
    Option("password", "--password-stdin", "Read the instance password from stdin.", kind=bool, default=False,
           param="password_stdin", from_stdin=True),
    Option("validate", "--validate", "With --dry-run: have ROS validate the template and preview the stack "
           "(needs credentials, creates nothing).", kind=bool, default=False),
)
# Options that are not placement fields: the adapter hands them to its verbs, they are not in the spec.
SETTINGS = frozenset({"password", "validate"})
