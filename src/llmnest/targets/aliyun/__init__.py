"""Alibaba Cloud: one ROS stack per deployment (network, GPU instances, bootstrap, wait condition).

Pure renderers (sizing, template, bootstrap, validate) are separate from the SDK edge (client) and
the orchestration (preflight, service); `target` gives them the lifecycle's verbs. What the rest of
llmnest knows without loading them is `DECLARATION`.
"""

from ..declaration import Declaration
from .options import OPTIONS
from .placement import AliyunPlacement
from .records import AliyunState

DECLARATION = Declaration(
    name="aliyun", place="Alibaba Cloud", summary="an ECS GPU instance", state=AliyunState, placement=AliyunPlacement,
    options=OPTIONS, serves_on="an Alibaba Cloud instance", paid=True,
    show_formats=("command", "script", "ros"), dry_run="template, parameters, preflight",
    dry_run_shows=("ros", "script"),
    restart="the bootstrap again", down="delete the stack",
    instances=True, extra="aliyun", sdk_modules=("alibabacloud_", "Tea"),
)
