"""Kubernetes (ACK first): the engine as a Deployment or LeaderWorkerSet, the gateway in front, in one namespace.

The verbs read the cluster first (GPU pools, CRDs, drivers, storage, metrics API) and refuse what cannot
work in one line; they apply `manifests.render` with server-side apply under one field manager, say the
cluster's Events that matter as they happen, and wait until the engine and the gateway answer through
their Services; `up` then makes the user's key in the gateway's database through the gateway pod
(channel.py, user_key.py) and checks a chat with it through the gateway's Service. A rollout surges one
pod only when the GPUs free allow it, else replaces in place, and a redeploy whose pods do not come up
puts the last good spec back.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import state
from ...spec_builder import UpRequest, new_api_key
from ...errors import BadInput, Conflict, LlmnestError, NotFound
from ...endpoints import Endpoint
from ...gateway.remote_admin import GatewayChannel, RemoteAdmin
from ...gateway.upstreams import Upstream
from ...home import deployment_dir, write_secret
from ...spec import DeploymentSpec, validated
from ..base import Capability, Context, Created, Resolved, Target
from . import DECLARATION, cluster_plan, manifests, preflight, user_key
from .channel import PodExecChannel, chat_command, service_url
from .engine import engine_argv, gpus_per_pod
from .names import ROLE_LABEL, api_url, name_of
from .placement import KubernetesPlacement, placement_of
from .sizing import hub_model, parse_placement, request_spec, sized, with_place
from .state import KubernetesState

if TYPE_CHECKING:
    from .client import Cluster

LB_WAIT_S = 300.0  # a cloud LoadBalancer usually gets its address within a minute or two
CHAT_WAIT_S = 120.0  # the gateway and the engine answer /health already: a chat follows within seconds
POLL_S = 2.0
RESTARTED_AT = "llmnest.io/restarted-at"
# Placement fields a rolling update cannot change: they name another cluster, namespace, workload kind or volume.
LOCKED_PLACEMENT = ("context", "namespace", "create_namespace", "nodes", "weights", "oss_endpoint", "oss_secret",
                    "storage_class", "weights_gib")


def _key_path(name: str) -> Path:
    """The deployment's internal engine key (0600), which its Secrets carry into the cluster."""
    return deployment_dir(name) / "engine_key"


def _engine_key(name: str) -> str:
    path = _key_path(name)
    return path.read_text() if path.exists() else ""


def _metrics_path(name: str) -> Path:
    """The token that reads the gateway's /metrics (0600), which its Secret carries into the cluster."""
    return deployment_dir(name) / "metrics_token"


def _metrics_key(name: str) -> str:
    """The deployment's /metrics token; made on first use (deployments from before it existed get one)."""
    path = _metrics_path(name)
    if not path.exists():
        write_secret(path, new_api_key())
    return path.read_text()


def _kind(place: KubernetesPlacement) -> str:
    return "Deployment" if place.nodes == 1 else "LeaderWorkerSet"


def _unpublished_image(place: KubernetesPlacement) -> str | None:
    """What to do when the gateway image is llmnest's default tag, which no public registry holds yet."""
    if place.gateway_image != KubernetesPlacement.model_fields["gateway_image"].default:
        return None
    return (f"the gateway image {place.gateway_image} is in no public registry yet: build it with `make "
            "gateway-image`, push it where the cluster pulls from and pass --gateway-image REF (or load it into "
            "the nodes)")


def _autoscaler(facts: preflight.ClusterFacts, place: KubernetesPlacement) -> str | None:
    """The autoscaler the spec records: the one asked for, else (with --autoscale-max) the one the cluster has."""
    return preflight.autoscaler_for(facts, place) if place.autoscale_max else place.autoscaler


def _secrets(place: KubernetesPlacement) -> list[str]:
    return [s for s in (place.gateway_db_secret, place.gateway_redis_secret, place.oss_secret) if s]


class KubernetesTarget(Target):
    declaration = DECLARATION
    unsupported = {Capability.FORCE_PLAN: "in a cluster the GPU type must fit the model (pick one with --gpu-type)"}
    offers = frozenset({Capability.SCALE, Capability.DELETE_WEIGHTS})

    # ---- up -------------------------------------------------------------------------------------
    def resolve(self, req: UpRequest) -> Resolved:
        place = parse_placement(req.options)
        spec, model = request_spec(req, place)
        if place.gpu_type:
            spec = sized(spec, model)
        return Resolved(spec, req.api_key, model)

    def cluster(self, spec: DeploymentSpec) -> Cluster:
        try:
            from .client import Cluster, connect  # lightkube loads only when a cluster is used
        except ImportError:
            raise BadInput("--target kubernetes needs lightkube: pip install 'llmnest[kubernetes]'") from None
        place = placement_of(spec)
        return Cluster(connect(place.context, place.namespace), place.namespace)

    def _prepare(self, spec: DeploymentSpec, cluster: Cluster) -> tuple[DeploymentSpec, list[str], str]:
        """The spec sized for the cluster's card, what cannot work there, and how rollouts will go."""
        place = placement_of(spec)
        facts = cluster.facts(_secrets(place))
        if place.gpu_type is None:
            model = hub_model(spec)
            card, fitted = cluster_plan.card_for(facts, spec, model)
            if not card:
                raise Conflict(preflight.unlabelled_line(facts, place.gpu_label))
            spec = fitted or sized(with_place(spec, gpu_type=card), model)  # sized again only to say why not
            place = placement_of(spec)
        gpus = gpus_per_pod(spec, place)
        problems = preflight.refusals(facts, place, gpus)
        spare = preflight.pods_fitting_now(facts, place, gpus) - place.replicas * place.nodes
        surge = bool(gpus) and spare >= place.nodes
        return (with_place(spec, gpu_headroom=surge, autoscaler=_autoscaler(facts, place)), problems,
                preflight.rollout_line(surge, place, gpus))

    def plan(self, resolved: Resolved, ctx: Context) -> dict[str, Any]:
        """The cluster's GPU pools for the model (a "table"); without a cluster, the card of --gpu-type alone."""
        spec, model = resolved.spec, hub_model(resolved.spec)
        try:
            facts = self.cluster(spec).facts(_secrets(placement_of(spec)))
        except Conflict as exc:  # no kubeconfig or no cluster
            if placement_of(spec).gpu_type is None:
                raise BadInput(f"{exc}; without a cluster to read, pass --gpu-type (e.g. NVIDIA-A10)") from None
            return cluster_plan.offline(spec, model, str(exc))
        return cluster_plan.plan(facts, spec, model)

    def render(self, resolved: Resolved, ctx: Context) -> dict[str, Any]:
        spec, checks = resolved.spec, []
        try:
            spec, problems, rollout = self._prepare(spec, self.cluster(spec))
            checks = [{"check": "cluster", "ok": not problems, "detail": "; ".join(problems) or "fits"},
                      {"check": "rollout", "ok": True, "detail": rollout}]
        except Conflict as exc:  # no kubeconfig or no cluster: render from the options alone
            if placement_of(spec).gpu_type is None:
                raise BadInput(f"{exc}; without a cluster to read, pass --gpu-type (e.g. NVIDIA-A10)") from None
            checks = [{"check": "cluster", "ok": None, "detail": f"not read: {exc}"}]
        if image := _unpublished_image(placement_of(spec)):
            checks.append({"check": "image", "ok": None, "detail": image})
        objects = manifests.render(spec, placement_of(spec), manifests.KEY_PLACEHOLDER)
        return {"manifests": objects, "yaml": manifests.to_yaml(objects), "preflight": checks,
                "spec": spec.model_dump(mode="json")}

    def dry_run_text(self, result: dict[str, Any]) -> str:
        """The manifests (as `kubectl apply -f -` takes them, the internal key a placeholder) and the preflight."""
        marks = {True: "ok  ", False: "FAIL", None: "skip"}
        checks = [f"  [{marks[c['ok']]}] {c['check']:<8} {c['detail']}" for c in result["preflight"]]
        return "\n".join([
            "# Manifests", result["yaml"].rstrip(), "",
            "# Preflight", *checks, "",
            "Nothing was created. Add --json for the manifests, the preflight and the spec as one JSON object.",
        ])

    def create(self, resolved: Resolved, ctx: Context) -> Created:
        t0 = time.monotonic()
        if resolved.spec.name in state.names():
            raise Conflict(f"a deployment named {resolved.spec.name!r} exists; pick another --name, or "
                           f"`llmnest down {resolved.spec.name}` first")
        cluster = self.cluster(resolved.spec)
        ctx.on_phase("reading the cluster", "")
        spec, problems, rollout = self._prepare(resolved.spec, cluster)
        if problems:
            more = f" (and {len(problems) - 1} more: `--dry-run` lists them)" if len(problems) > 1 else ""
            raise Conflict(problems[0] + more)
        place = placement_of(spec)
        if refused := [verb for verb in ("get", "create") if cluster.allowed(verb, "pods", "exec") is False]:
            raise Conflict(f"your kubeconfig user may not {' or '.join(refused)} pods/exec in namespace "
                           f"{place.namespace}, through which `up` makes the deployment's key in its gateway pod: "
                           "ask for RBAC `get` and `create` on pods/exec there (docs/kubernetes.md, Keys)")
        if image := _unpublished_image(place):
            ctx.say(image)
        state.create(spec, None)
        engine_key = new_api_key()
        write_secret(_key_path(spec.name), engine_key)
        server = cluster.client._client.config.cluster.server  # noqa: SLF001 - where, for `ls`/`status`
        state.update(spec.name, target_state={"context": place.context, "cluster": server, "workload": _kind(place),
                                      "gpus_per_pod": gpus_per_pod(spec, place), "rollout": rollout})
        objects = manifests.render(spec, place, engine_key, _metrics_key(spec.name))
        channel = PodExecChannel(state.get(spec.name), cluster)
        key: user_key.UserKey | None = None
        try:
            ctx.on_phase("applying", f"{len(objects)} objects in namespace {place.namespace}")
            cluster.apply_all(objects)
            self._wait(cluster, spec, ctx)
            ctx.on_phase("checking", "making the API key in the gateway's database, through the gateway pod")
            key = user_key.make(RemoteAdmin(channel, spec.name), spec.name, spec.served_model_name, resolved.api_key)
            self._chat(channel, spec, key.secret, ctx)
        except BaseException as exc:
            ctx.say(f"{'interrupted' if isinstance(exc, KeyboardInterrupt) else 'failed'}: removing what {spec.name} "
                    "applied (the weights volume stays for a retry)")
            try:
                if key is not None and key.owned:
                    _revoke(channel, spec.name, ctx)
                cluster.delete(spec.name, objects, ctx.timeout, ctx.say, keep_weights=True, poll=POLL_S)
            finally:
                state.delete(spec.name)
                _key_path(spec.name).unlink(missing_ok=True)
                _metrics_path(spec.name).unlink(missing_ok=True)
            raise
        write_secret(state.key_path(spec.name), key.secret)
        state.update(spec.name, status="ready", ready_at=time.time(),
                     target_state={"key_label": key.label, "key_owned": key.owned})
        dep = state.get(spec.name)
        return Created(dep, key.secret, time.monotonic() - t0,
                       {"namespace": place.namespace, "rollout": rollout,
                        "key": f"{key.label} (in the gateway's database, Secret {place.gateway_db_secret}"
                               f"{'' if key.owned else '; an existing key: `down` leaves it'})",
                        "keys": f"`llmnest keys create NAME --deployment {spec.name}` | keys ls | usage "
                                f"--deployment {spec.name}"})

    def _wait(self, cluster: Cluster, spec: DeploymentSpec, ctx: Context) -> None:
        """Until the engine rolled out, the gateway did, and both answer through their Services; then the
        LoadBalancer's address (recorded) when there is one."""
        place = placement_of(spec)
        deadline = time.monotonic() + ctx.timeout

        def say(line: str) -> None:
            ctx.say(line)
            ctx.on_phase("loading", line)

        ctx.on_phase("loading", f"waiting for {_kind(place)} {name_of(spec.name, 'engine')}")
        cluster.wait_rollout(_kind(place), spec.name, ctx.timeout, say, poll=POLL_S)
        engine, gateway = name_of(spec.name, "engine"), name_of(spec.name, "gateway")
        ctx.on_phase("starting gateway", f"waiting for Deployment {gateway}")
        while True:
            answers = (cluster.rollout_done("Deployment", gateway), cluster.proxy_get(engine, "/health")[0] == 200,
                       cluster.proxy_get(gateway, "/health")[0] == 200,
                       cluster.proxy_get(gateway, "/v1/models")[0] == 401)  # the gateway itself, asking for a key
            if all(answers):
                break
            if time.monotonic() > deadline:
                what = ["the gateway did not roll out", "the engine Service does not answer /health",
                        "the gateway Service does not answer /health", "the gateway does not check keys on /v1/models"]
                raise LlmnestError(f"{spec.name}: {'; '.join(w for w, ok in zip(what, answers) if not ok)} "
                                   f"within {ctx.timeout:.0f} s; see `llmnest status {spec.name}`")
            time.sleep(POLL_S)
        if place.expose == "cluster":
            return
        ctx.on_phase("starting gateway", "waiting for the LoadBalancer's address")
        lb_deadline = min(deadline, time.monotonic() + LB_WAIT_S)
        while (address := cluster.gateway_address(spec.name)) is None and time.monotonic() < lb_deadline:
            time.sleep(POLL_S)
        if address:
            state.update(spec.name, target_state={"address": address})
        else:
            ctx.say(f"the LoadBalancer of {gateway} has no address yet; `llmnest status {spec.name}` shows it later")

    def _chat(self, channel: PodExecChannel, spec: DeploymentSpec, secret: str, ctx: Context) -> None:
        """Until a chat with the user's key, sent from the gateway pod to the gateway's Service, is answered."""
        command = chat_command(spec.name, placement_of(spec).namespace, spec.port, spec.served_model_name)
        ctx.on_phase("checking", "a chat through the gateway's Service with the key")
        deadline = time.monotonic() + min(ctx.timeout, CHAT_WAIT_S)
        while True:
            result = channel.execute(command, stdin=secret)
            status, _, body = result.stdout.partition("\n")
            if result.exit_code == 0 and status.strip() == "200" and '"choices"' in body:
                return
            if time.monotonic() > deadline:
                last = (f"exit {result.exit_code}: {result.stderr.strip()[-200:]}" if result.exit_code else
                        f"HTTP {status.strip()}: {body.strip()[:200]}" if status.strip() != "0" else body.strip()[:200])
                raise LlmnestError(f"{spec.name}: a chat through the gateway's Service with the key was not answered "
                                   f"within {min(ctx.timeout, CHAT_WAIT_S):.0f} s (last: {last}); see "
                                   f"`llmnest logs {spec.name} --gateway`")
            time.sleep(POLL_S)

    # ---- reading --------------------------------------------------------------------------------
    def _info(self, dep: state.Deployment) -> KubernetesState:
        assert isinstance(dep.target_state, KubernetesState)
        return dep.target_state

    def short_where(self, dep: state.Deployment) -> str:
        return f"k8s/{placement_of(dep.spec).namespace}"

    def where(self, dep: state.Deployment) -> str:
        place, info = placement_of(dep.spec), self._info(dep)
        pods = f"{place.replicas} x {place.nodes} pods" if place.nodes > 1 else f"{place.replicas} pod(s)"
        return (f"{pods} x {info.gpus_per_pod} {place.gpu_type or 'GPU'}, "
                f"{place.context or 'current context'} ({info.cluster or '?'}) namespace {place.namespace}")

    def status(self, dep: state.Deployment) -> dict[str, Any]:
        place, info = placement_of(dep.spec), self._info(dep)
        cluster = self.cluster(dep.spec)
        workload = cluster.workload(info.workload, dep.name)
        pods = cluster.pods(dep.name)
        problems = cluster.problems(dep.name)
        address = cluster.gateway_address(dep.name) if place.expose != "cluster" else None
        if workload is None:
            now = "stopped"
        else:
            want = workload["spec"].get("replicas", place.replicas)
            ready = (workload.get("status") or {}).get("readyReplicas", 0)
            now = "ready" if ready >= want else "failed" if problems else "loading"  # old Events do not unready it
        updates: dict[str, Any] = {"status": now}
        if address and address != info.address:
            updates["info"] = {"address": address}
        state.update(dep.name, **updates)
        status = (workload or {}).get("status") or {}
        return {"status": now, "namespace": place.namespace, "workload": f"{info.workload}/{name_of(dep.name, 'engine')}",
                "desired_replicas": (workload or {}).get("spec", {}).get("replicas"),
                "ready_replicas": status.get("readyReplicas", 0), "updated_replicas": status.get("updatedReplicas", 0),
                "pods": [_pod_row(p) for p in pods], "problems": problems, "gateway_address": address,
                "rollout": info.rollout}

    def endpoints(self, dep: state.Deployment, api_key: str | None) -> list[Endpoint]:
        place, info = placement_of(dep.spec), self._info(dep)
        out = [Endpoint(service_url(dep.name, place.namespace, dep.spec.port), api_key, dep.spec.served_model_name,
                        "in the cluster")]
        if info.address:
            out.insert(0, Endpoint(api_url(info.address, dep.spec.port), api_key, dep.spec.served_model_name,
                                   f"{place.expose} LoadBalancer"))
        return out

    def upstreams(self, dep: state.Deployment) -> list[Upstream]:
        return []  # the cluster has its own gateway, with its own keys: no gateway here routes to it

    def _pod(self, dep: state.Deployment, cluster: Cluster, replica: int, component: str) -> str:
        pods = [p for p in cluster.pods(dep.name, component)
                if p["metadata"].get("labels", {}).get(ROLE_LABEL) != "worker"]
        if not pods:
            raise LlmnestError(f"{dep.name} has no {component} pod now; `llmnest status {dep.name}` says why")
        if replica >= len(pods):
            raise BadInput(f"{dep.name} has {len(pods)} {component} pod(s): use --replica 0 to {len(pods) - 1}")
        return pods[replica]["metadata"]["name"]

    def logs(self, dep: state.Deployment, tail: int, follow: bool, replica: int = 0) -> Iterator[str]:
        """The engine pod's log (a LeaderWorkerSet's leader: the one that serves)."""
        cluster = self.cluster(dep.spec)
        yield from cluster.logs(self._pod(dep, cluster, replica, "engine"), tail, follow)

    def gateway_logs(self, dep: state.Deployment, tail: int, follow: bool) -> Iterator[str]:
        cluster = self.cluster(dep.spec)
        yield from cluster.logs(self._pod(dep, cluster, 0, "gateway"), tail, follow, container="gateway")

    def gateway_channel(self, dep: state.Deployment) -> GatewayChannel:
        """`llmnest keys/usage` in a Ready gateway pod, through pods/exec."""
        return PodExecChannel(dep, self.cluster(dep.spec))

    def key_name(self, dep: state.Deployment, api_key: str | None) -> str | None:
        return self._info(dep).key_label if api_key else None

    def show(self, dep: state.Deployment, fmt: str) -> str:
        if fmt == "k8s":
            objects = manifests.render(dep.spec, placement_of(dep.spec), manifests.KEY_PLACEHOLDER)
            return (f"# {dep.name}: `kubectl apply --server-side --field-manager=llmnest -f -`; replace "
                    f"{manifests.KEY_PLACEHOLDER} (twice) with a random internal key and "
                    f"{manifests.METRICS_PLACEHOLDER} with a random token first\n"
                    + manifests.to_yaml(objects).rstrip())
        return shlex.join(engine_argv(dep.spec)[0])

    # ---- changing -------------------------------------------------------------------------------
    def _apply(self, cluster: Cluster, spec: DeploymentSpec, ctx: Context, restarted: str | None = None) -> None:
        key = _engine_key(spec.name)
        objects = manifests.render(spec, placement_of(spec), key, _metrics_key(spec.name))
        if restarted:
            for obj in (o for o in objects if o["metadata"]["name"] == name_of(spec.name, "engine")):
                for template in _templates(obj):
                    template.setdefault("metadata", {}).setdefault("annotations", {})[RESTARTED_AT] = restarted
        cluster.apply_all(objects)
        self._wait(cluster, spec, ctx)

    def restart(self, dep: state.Deployment, ctx: Context) -> None:
        """New pods for the same spec (as `kubectl rollout restart`: a pod-template annotation changes)."""
        cluster = self.cluster(dep.spec)
        self._apply(cluster, dep.spec, ctx, restarted=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        state.update(dep.name, status="ready", ready_at=time.time(), restarts=dep.restarts + 1)

    def _strategy(self, cluster: Cluster, spec: DeploymentSpec) -> tuple[DeploymentSpec, str]:
        """The spec with the rollout the GPUs free now allow: surge one pod with headroom, else in place."""
        place = placement_of(spec)
        gpus = gpus_per_pod(spec, place)
        facts = cluster.facts(_secrets(place))
        problems = preflight.refusals(facts, place, gpus, running=place.replicas * place.nodes)
        if problems:
            raise Conflict(problems[0])
        surge = preflight.headroom(facts, place, gpus)
        return (with_place(spec, gpu_headroom=surge, autoscaler=_autoscaler(facts, place)),
                preflight.rollout_line(surge, place, gpus))

    def redeploy(self, dep: state.Deployment, new: DeploymentSpec, ctx: Context) -> str:
        """Roll `new` out; when its pods do not come up, apply the last good spec (the stored one) again.
        Objects the new spec no longer renders (a PDB at one replica, the other autoscaler) go once it is up."""
        new = _redeployable(dep.spec, new)
        cluster = self.cluster(dep.spec)
        new, how = self._strategy(cluster, new)
        ctx.say(how)
        try:
            self._apply(cluster, new, ctx)
        except LlmnestError as exc:
            ctx.say(f"the new spec did not come up ({exc}); rolling back to the last good spec")
            try:
                self._apply(cluster, dep.spec, ctx)
                _prune(cluster, new, dep.spec)
            except LlmnestError as again:
                raise LlmnestError(f"redeploy of {dep.name} failed ({exc}) and the rollback did too ({again}); "
                                   f"see `llmnest status {dep.name}`") from None
            raise LlmnestError(f"redeploy of {dep.name} failed: {exc}; the previous spec is back and answers") from None
        _prune(cluster, dep.spec, new)
        state.update(dep.name, spec=new, status="ready", ready_at=time.time(), target_state={"rollout": how})
        return how

    def scale(self, dep: state.Deployment, replicas: int, ctx: Context) -> str:
        """Engine replicas through the scale subresource; more only when the GPUs free hold them."""
        place, info = placement_of(dep.spec), self._info(dep)
        if place.autoscale_max and place.autoscale_max > place.replicas:
            raise BadInput(f"{dep.name} autoscales between {place.replicas} and {place.autoscale_max} replicas: "
                           "change those with `llmnest redeploy`")
        scaled = with_place(dep.spec, replicas=replicas)  # refused before the cluster is touched
        cluster = self.cluster(dep.spec)
        workload = cluster.workload(info.workload, dep.name)
        if workload is None:
            raise Conflict(f"{info.workload} {name_of(dep.name, 'engine')} is not in the cluster; "
                           f"`llmnest status {dep.name}`")
        now = workload["spec"].get("replicas", place.replicas)
        if replicas > now:
            facts = cluster.facts([])
            fit = preflight.pods_fitting_now(facts, place, info.gpus_per_pod) // place.nodes
            if fit < replicas - now:
                raise Conflict(f"{replicas - now} more replica(s) need {info.gpus_per_pod} free GPU(s) per pod; only "
                               f"{fit} fit now: free GPUs or grow the GPU pool")
        cluster.scale(info.workload, dep.name, replicas)
        state.update(dep.name, spec=scaled)
        cluster.wait_rollout(info.workload, dep.name, ctx.timeout, ctx.say, poll=POLL_S)
        return f"{dep.name}: {now} -> {replicas} replica(s)"

    def down(self, dep: state.Deployment, ctx: Context) -> str:
        """The workload first, until its pods are gone (their GPUs free), then the rest; the weights volume stays
        unless ctx.delete_weights."""
        keep_weights = not ctx.delete_weights
        cluster = self.cluster(dep.spec)
        place = placement_of(dep.spec)
        # the deployment's own key first, while a gateway pod still runs to revoke it through
        revoked = self._info(dep).key_owned and _revoke(PodExecChannel(dep, cluster), dep.name, ctx)
        objects = manifests.render(dep.spec, place, manifests.KEY_PLACEHOLDER)
        gone = cluster.delete(dep.name, objects, ctx.timeout, ctx.say, keep_weights=keep_weights, poll=POLL_S)
        state.delete(dep.name)
        _key_path(dep.name).unlink(missing_ok=True)
        _metrics_path(dep.name).unlink(missing_ok=True)
        kept = (f"; the weights volume {name_of(dep.name, 'weights')} stays for the next up of {dep.name} "
                f"(`down --delete-weights` removes it too)" if keep_weights and place.weights_kind != "claim" else "")
        key = f"; its key {dep.name} is revoked" if revoked else ""
        return f"deleted {len(gone)} objects of {dep.name} from namespace {place.namespace} and forgot it{key}{kept}"


def _revoke(channel: PodExecChannel, name: str, ctx: Context) -> bool:
    """Revoke the deployment's own key (named after it) in the shared database; what stops it is said, not raised.
    True when it is revoked now."""
    try:
        RemoteAdmin(channel, name).revoke_key(name)
    except NotFound:
        return False
    except LlmnestError as exc:
        ctx.say(f"could not revoke {name}'s own key {name} ({exc}); revoke it with "
                f"`llmnest keys revoke {name} --db URL`")
        return False
    return True


def _redeployable(old: DeploymentSpec, new: DeploymentSpec) -> DeploymentSpec:
    """`new` as a rolling update of `old` can make it: placement fields that name other objects (the
    cluster, the namespace, the workload's kind, the weights volume) refused in one line; `--set
    replicas=N` carried into the placement; a new GPU type sized again (unless the parallel sizes were set)."""
    before, after = placement_of(old), placement_of(new)
    changed = [f for f in LOCKED_PLACEMENT if getattr(before, f) != getattr(after, f)]
    if changed:
        raise BadInput(f"redeploy changes {old.name} in place, so {', '.join(changed)} cannot change (they name "
                       f"other objects): `llmnest down {old.name}` and `llmnest up` again")
    if new.replicas != old.replicas:
        new = with_place(new, replicas=new.replicas)
    elif after.replicas != before.replicas:
        new = with_place(new, replicas=after.replicas)
    if after.gpu_type != before.gpu_type:
        kept = (new.tensor_parallel_size, new.pipeline_parallel_size) == (old.tensor_parallel_size,
                                                                          old.pipeline_parallel_size)
        if kept:
            new = validated({**new.model_dump(), "tensor_parallel_size": 1, "pipeline_parallel_size": 1})
        new = sized(new, hub_model(new))
    return new


def _prune(cluster: Cluster, was: DeploymentSpec, now: DeploymentSpec) -> None:
    """Delete the objects `was` rendered that `now` does not (the weights excepted: they are locked)."""
    keep = {(o["kind"], o["metadata"]["name"]) for o in manifests.render(now, placement_of(now), manifests.KEY_PLACEHOLDER)}
    gone = [o for o in manifests.render(was, placement_of(was), manifests.KEY_PLACEHOLDER)
            if (o["kind"], o["metadata"]["name"]) not in keep and o["kind"] != "Namespace"]
    if gone:
        cluster.remove(gone)


def _templates(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    if obj["kind"] not in {"Deployment", "LeaderWorkerSet"}:
        return []
    if "template" in spec:
        return [spec["template"]]
    lwt = spec["leaderWorkerTemplate"]
    return [lwt["leaderTemplate"], lwt["workerTemplate"]]


def _pod_row(pod: dict) -> dict[str, Any]:
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    return {"name": pod["metadata"]["name"], "phase": status.get("phase"), "node": (pod.get("spec") or {}).get("nodeName"),
            "ready": bool(containers) and all(c.get("ready") for c in containers),
            "restarts": sum(c.get("restartCount", 0) for c in containers)}

