"""The thin edge between llmnest and a Kubernetes API server, over lightkube.

Why lightkube: it is small (built on httpx), maintained, typed per Kubernetes version, and does what
llmnest needs directly: server-side apply with a field manager (`apply(field_manager=, force=)`),
watch, pod logs (tail, follow), exec into a pod over WebSockets (`exec`, as `kubectl exec`),
subresources (scale) and generic resources for CRDs (LeaderWorkerSet, ScaledObject). The official
`kubernetes` client is about 126 MB and applies server-side only through its dynamic client; kr8s has no
apply.

Everything here takes and returns plain dicts (the manifests of `manifests.render`) and one-line
strings, so the target's verbs stay free of lightkube types.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
from httpx2.websockets import HTTPXWSException, WebSocketUpgradeError
from lightkube import ALL_NS, ApiError, Client
from lightkube.codecs import from_dict
from lightkube.config.kubeconfig import KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apiregistration_v1 import APIService
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview
from lightkube.resources.core_v1 import Event, Node, Pod, Secret, Service
from lightkube.resources.storage_v1 import CSIDriver, StorageClass

from ...errors import BadInput, Conflict, LlmnestError
from . import preflight
from .events import event_line, pod_lines
from .names import COMPONENT_LABEL, DEPLOYMENT_LABEL, FIELD_MANAGER, ROLE_LABEL, name_of

LeaderWorkerSet = create_namespaced_resource("leaderworkerset.x-k8s.io", "v1", "LeaderWorkerSet", "leaderworkersets")
ScaledObject = create_namespaced_resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")
WORKLOADS = {"Deployment": Deployment, "LeaderWorkerSet": LeaderWorkerSet}
Say = Callable[[str], None]


def connect(context: str | None = None, namespace: str | None = None) -> Client:
    """A client for kubeconfig `context` as kubectl reads it ($KUBECONFIG, else ~/.kube/config, else in-cluster)."""
    try:
        config = None
        if context:
            kubeconfig = KubeConfig.from_env()
            if context not in kubeconfig.contexts:
                raise BadInput(f"unknown --context {context!r}: your kubeconfig has "
                               f"{', '.join(sorted(kubeconfig.contexts)) or 'none'} (`kubectl config get-contexts`)")
            config = kubeconfig.get(context)
        return Client(config=config, namespace=namespace, field_manager=FIELD_MANAGER)
    except BadInput:
        raise
    except Exception as exc:  # lightkube raises plain exceptions for missing or unreadable configs
        where = f"context {context!r}" if context else "the current context"
        raise Conflict(f"cannot use {where} of your kubeconfig ({exc}); check `kubectl config get-contexts`") from None


class ExecFailed(Exception):
    """An exec that did not run the command to its end: the API server's HTTP code (0: no answer) and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Cluster:
    """One namespace of one cluster, as llmnest uses it."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def apply_all(self, objects: list[dict]) -> list[str]:
        """Server-side apply of every object, in order, under the one field manager `llmnest`
        (forced: llmnest owns these fields); returns "Kind/name" for each."""
        done = []
        for obj in objects:
            try:
                self.client.apply(from_dict(obj), field_manager=FIELD_MANAGER, force=True)
            except ApiError as exc:
                raise LlmnestError(f"applying {obj['kind']} {obj['metadata']['name']} failed: "
                                   f"{exc.status.message}") from None
            done.append(f"{obj['kind']}/{obj['metadata']['name']}")
        return done

    def _selector(self, deployment: str, component: str = "engine") -> dict[str, str]:
        return {DEPLOYMENT_LABEL: deployment, COMPONENT_LABEL: component}

    def pods(self, deployment: str, component: str = "engine") -> list[dict]:
        """The deployment's pods, leaders first (a LeaderWorkerSet's worker pods after), by name."""
        found = [p.to_dict() for p in self.client.list(Pod, namespace=self.namespace,
                                                      labels=self._selector(deployment, component))]
        return sorted(found, key=lambda p: (p["metadata"].get("labels", {}).get(ROLE_LABEL) == "worker",
                                            p["metadata"]["name"]))

    def workload(self, kind: str, deployment: str) -> dict | None:
        """The engine workload as the server has it (spec and status), or None when it is gone."""
        try:
            return self.client.get(WORKLOADS[kind], name_of(deployment, "engine"), namespace=self.namespace).to_dict()
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise LlmnestError(f"cannot read {kind} {name_of(deployment, 'engine')}: {exc.status.message}") from None

    def rollout_done(self, kind: str, name: str) -> bool:
        """Every replica updated to the newest generation and available, and no old pod left; a Deployment
        past its progress deadline raises (the controller gave up on the rollout)."""
        obj = self.client.get(WORKLOADS[kind], name, namespace=self.namespace).to_dict()
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
                raise LlmnestError(f"{kind} {name} made no progress within its deadline: {cond.get('message', '')}")
        want = obj["spec"].get("replicas", 1)
        status = obj.get("status") or {}
        current = status.get("observedGeneration", 0) >= obj["metadata"].get("generation", 1)
        ready = status.get("availableReplicas" if kind == "Deployment" else "readyReplicas", 0)
        return (kind != "Deployment" or current) and status.get("updatedReplicas", 0) == want \
            and ready == want and status.get("replicas", want) == want

    def wait_rollout(self, kind: str, deployment: str, timeout: float, say: Say, poll: float = 2.0) -> None:
        """Until the engine workload is rolled out; what goes wrong meanwhile is said once, as it happens."""
        name = name_of(deployment, "engine")
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while not self.rollout_done(kind, name):
            for line in self.problems(deployment):
                if line not in seen:
                    seen.add(line)
                    say(line)
            if time.monotonic() > deadline:
                raise LlmnestError(f"{kind} {name} did not roll out within {timeout:.0f} s"
                                   + (f"; last: {sorted(seen)[-1]}" if seen else "; see `llmnest status`"))
            time.sleep(poll)

    def problems(self, deployment: str) -> list[str]:
        """Lines for the deployment's Events that matter and its pods' OOMKills, now."""
        prefix = f"{deployment}-"
        lines = [event_line(e.to_dict()) for e in self.client.list(Event, namespace=self.namespace)
                 if (e.involvedObject.name or "").startswith(prefix)]
        return [line for line in lines if line] + [ln for p in self.pods(deployment) for ln in pod_lines(p)]

    def watch_events(self, deployment: str) -> Iterator[str]:
        """Lines for the deployment's Events that matter, as the server streams them (endless)."""
        prefix = f"{deployment}-"
        for _kind, event in self.client.watch(Event, namespace=self.namespace):
            if (event.involvedObject.name or "").startswith(prefix):
                line = event_line(event.to_dict())
                if line:
                    yield line

    def logs(self, pod: str, tail: int, follow: bool, container: str = "engine") -> Iterator[str]:
        try:
            yield from (line.rstrip("\n") for line in self.client.log(
                pod, namespace=self.namespace, container=container, tail_lines=tail, follow=follow))
        except ApiError as exc:
            raise LlmnestError(f"cannot read the log of pod {pod}: {exc.status.message}") from None

    def scale(self, kind: str, deployment: str, replicas: int) -> None:
        """Through the scale subresource (what `kubectl scale` and the HPA use)."""
        resource = WORKLOADS[kind]
        self.client.patch(resource.Scale, name_of(deployment, "engine"), {"spec": {"replicas": replicas}},
                          namespace=self.namespace)

    def delete(self, deployment: str, objects: list[dict], timeout: float, say: Say, keep_weights: bool = True,
               poll: float = 2.0) -> list[str]:
        """The engine workload (and its autoscaler) first, then wait until its pods are gone (their GPUs
        free), then the rest; the weights volume stays unless `keep_weights` is False. Returns what went."""
        def is_workload(o: dict) -> bool:
            return o["kind"] in {"HorizontalPodAutoscaler", "ScaledObject", *WORKLOADS}

        def is_weights(o: dict) -> bool:
            return o["metadata"].get("labels", {}).get(COMPONENT_LABEL) in {"weights", "fetch"}

        gone = [self._delete(o) for o in objects if is_workload(o)]
        deadline = time.monotonic() + timeout
        while pods := self.pods(deployment):
            if time.monotonic() > deadline:
                raise LlmnestError(f"{len(pods)} engine pod(s) of {deployment} still hold their GPUs after "
                                   f"{timeout:.0f} s; see `kubectl get pods -l {DEPLOYMENT_LABEL}={deployment}`")
            say(f"waiting for {len(pods)} engine pod(s) to stop and free their GPUs")
            time.sleep(poll)
        rest = [o for o in objects if not is_workload(o) and o["kind"] != "Namespace"
                and not (keep_weights and is_weights(o))]
        gone += [self._delete(o) for o in reversed(rest)]
        return [g for g in gone if g]

    def remove(self, objects: list[dict]) -> list[str]:
        """Delete `objects` (those already gone are skipped); "Kind/name" of each deleted."""
        return [g for g in (self._delete(o) for o in objects) if g]

    def facts(self, secrets: list[str]) -> preflight.ClusterFacts:
        """What preflight needs, read in one pass: nodes and the GPUs pods hold on them, the LWS and KEDA
        CRDs, CSI drivers, storage classes, the custom metrics API, and which of `secrets` exist here."""
        try:
            used: dict[str, int] = {}
            for pod in self.client.list(Pod, namespace=ALL_NS):
                data = pod.to_dict()
                node = (data.get("spec") or {}).get("nodeName")
                if node and (data.get("status") or {}).get("phase") not in {"Succeeded", "Failed"}:
                    used[node] = used.get(node, 0) + preflight.gpus_requested(data)
            nodes = [preflight.node_of(n.to_dict(), 0) for n in self.client.list(Node)]
            nodes = [preflight.Node(n.name, n.labels, n.taints, n.gpus, used.get(n.name, 0), n.schedulable)
                     for n in nodes]
            crds = {c for c in (preflight.LWS_CRD, preflight.KEDA_CRD) if self._exists(CustomResourceDefinition, c)}
            classes = {}
            for sc in self.client.list(StorageClass):
                data = sc.to_dict()
                classes[data["metadata"]["name"]] = {
                    "provisioner": data.get("provisioner", ""),
                    "default": (data["metadata"].get("annotations") or {}).get(preflight.DEFAULT_CLASS) == "true"}
            drivers = {d.metadata.name for d in self.client.list(CSIDriver)}
            metrics = self._available(preflight.CUSTOM_METRICS)
            present = {s for s in secrets if self._exists(Secret, s, self.namespace)}
        except ApiError as exc:
            raise Conflict(f"cannot read the cluster ({exc.status.message}); llmnest needs to list nodes, pods, "
                           "CRDs, storage classes and CSI drivers") from None
        except httpx2.TransportError as exc:
            server = self.client._client.config.cluster.server  # noqa: SLF001 - for the message only
            raise Conflict(f"cannot reach the cluster's API server at {server} ({exc}); check your kubeconfig "
                           "context and network") from None
        return preflight.ClusterFacts(nodes, crds, drivers, classes, metrics, present)

    def _exists(self, resource: Any, name: str, namespace: str | None = None) -> bool:
        try:
            self.client.get(resource, name, **({"namespace": namespace} if namespace else {}))
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise
        return True

    def _available(self, api_service: str) -> bool:
        try:
            found = self.client.get(APIService, api_service).to_dict()
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise
        return any(c.get("type") == "Available" and c.get("status") == "True"
                   for c in (found.get("status") or {}).get("conditions") or [])

    def gateway_address(self, deployment: str) -> str | None:
        """The gateway LoadBalancer's IP or host name, once the cloud has given one."""
        try:
            svc = self.client.get(Service, name_of(deployment, "gateway"), namespace=self.namespace).to_dict()
        except ApiError:
            return None
        for ingress in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            if ingress.get("ip") or ingress.get("hostname"):
                return ingress.get("ip") or ingress.get("hostname")
        return None

    def proxy_get(self, service: str, path: str) -> tuple[int, str]:
        """GET `path` on a Service's `http` port through the API server's service proxy (reaches a ClusterIP
        Service from outside the cluster; the API server keeps the caller's Authorization to itself, so
        only keyless routes answer). Uses the authenticated HTTP client lightkube built for this cluster
        (its `_client._client`: lightkube has no proxy call), so auth and TLS are lightkube's."""
        http = self.client._client._client  # noqa: SLF001 - lightkube's httpx client for this kubeconfig
        url = f"/api/v1/namespaces/{self.namespace}/services/{service}:http/proxy{path}"
        try:
            resp = http.get(url)
        except Exception as exc:  # noqa: BLE001 - any transport failure means "not answering yet"
            return 0, str(exc)
        return resp.status_code, resp.text

    def ready_pods(self, deployment: str, component: str) -> list[str]:
        """The names of the component's pods that are Running, Ready and not being deleted."""
        def ready(pod: dict) -> bool:
            status = pod.get("status") or {}
            return status.get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp") and any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])

        return [p["metadata"]["name"] for p in self.pods(deployment, component) if ready(p)]

    def allowed(self, verb: str, resource: str, subresource: str | None = None) -> bool | None:
        """Whether the kubeconfig user may `verb` RESOURCE/SUBRESOURCE in the namespace, as `kubectl auth can-i`
        asks (a SelfSubjectAccessReview); None when the API server does not say."""
        attributes = ResourceAttributes(namespace=self.namespace, verb=verb, resource=resource, subresource=subresource)
        try:
            review = self.client.create(SelfSubjectAccessReview(spec=SelfSubjectAccessReviewSpec(
                resourceAttributes=attributes)))
        except (ApiError, httpx2.HTTPError):  # HTTPError: also an answer that is no API Status at all
            return None
        return bool(review.status and review.status.allowed)

    def exec(self, pod: str, container: str, command: list[str], stdin: str | None = None,
             timeout: float = 60) -> tuple[int, str, str]:
        """Run `command` in a container of `pod` (`kubectl exec`: the pods/exec subresource over WebSockets,
        v5.channel.k8s.io); returns its exit code, stdout and stderr. Raises ExecFailed when the command could
        not be run to its end (refused, the pod gone, the runtime could not start it, the connection lost)."""
        try:
            done = self.client.exec(pod, namespace=self.namespace, container=container, command=command, stdin=stdin,
                                    stdout=True, stderr=True, timeout=timeout)
        except WebSocketUpgradeError as exc:  # refused before the upgrade: 403, 404, 400 (the body is gone by now)
            raise ExecFailed(exc.response.status_code, exc.response.reason_phrase) from None
        except ApiError as exc:  # a Failure status on the error channel other than an exit code
            raise ExecFailed(exc.status.code or 500, exc.status.message or "") from None
        except (httpx2.TransportError, HTTPXWSException, OSError) as exc:
            raise ExecFailed(0, str(exc) or type(exc).__name__) from None
        return done.exit_code, done.stdout or "", done.stderr or ""

    def _delete(self, obj: dict) -> str | None:
        resource = type(from_dict(obj))
        namespaced = "namespace" in obj["metadata"]
        try:
            kwargs: dict[str, Any] = {"namespace": self.namespace} if namespaced else {}
            self.client.delete(resource, obj["metadata"]["name"], **kwargs)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise LlmnestError(f"deleting {obj['kind']} {obj['metadata']['name']} failed: {exc.status.message}") from None
        return f"{obj['kind']}/{obj['metadata']['name']}"
