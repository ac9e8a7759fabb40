"""Kubernetes (ACK first): the engine as a Deployment or LeaderWorkerSet and llmnest's gateway in front of it,
in one namespace.

Pure renderers (manifests and the pieces it assembles: engine, weights, scaling, gateway, names, checks), the
cluster's facts read and judged (preflight), the spec from a request (sizing), a thin client over lightkube
(client), and `target` with the lifecycle's verbs. What the rest of llmnest knows without loading them is
`DECLARATION`.
"""

from ..declaration import Declaration
from .options import OPTIONS
from .placement import KubernetesPlacement
from .state import KubernetesState

DECLARATION = Declaration(
    name="kubernetes", place="Kubernetes", summary="a Kubernetes cluster, ACK first", state=KubernetesState,
    placement=KubernetesPlacement, options=OPTIONS, own_gateway=True, serves_on="a Kubernetes cluster",
    show_formats=("command", "k8s"), dry_run="manifests, cluster preflight", dry_run_shows=("k8s",),
    restart="new pods, as `kubectl rollout restart`",
    down="the workload first, until its GPUs are free, then the rest; the weights volume stays unless "
         "--delete-weights",
    extra="kubernetes", sdk_modules=("lightkube",),
)
