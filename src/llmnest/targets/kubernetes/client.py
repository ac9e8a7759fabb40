"""The thin edge between llmnest and a Kubernetes API server, over lightkube.

Why lightkube: it is small (built on httpx), maintained, typed per Kubernetes version, and does what
llmnest needs directly: server-side apply with a field manager (`apply(field_manager=, force=)`),
watch, pod logs (tail, follow), subresources (scale) and generic resources for CRDs
(LeaderWorkerSet, ScaledObject). The official `kubernetes` client is about 126 MB and applies
server-side only through its dynamic client; kr8s has no apply.

Everything here takes and returns plain dicts (the manifests of `manifests.render`) and one-line
strings, so the target's verbs stay free of lightkube types.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from lightkube import ApiError, Client
from lightkube.codecs import from_dict
from lightkube.config.kubeconfig import KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Event, Pod

from ...errors import Conflict, LlmnestError
from .events import event_line, pod_lines
from .names import COMPONENT_LABEL, DEPLOYMENT_LABEL, FIELD_MANAGER, ROLE_LABEL, name_of

LeaderWorkerSet = create_namespaced_resource("leaderworkerset.x-k8s.io", "v1", "LeaderWorkerSet", "leaderworkersets")
ScaledObject = create_namespaced_resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")
WORKLOADS = {"Deployment": Deployment, "LeaderWorkerSet": LeaderWorkerSet}
Say = Callable[[str], None]


def connect(context: str | None = None, namespace: str | None = None) -> Client:
    """A client for kubeconfig `context` as kubectl reads it ($KUBECONFIG, else ~/.kube/config, else in-cluster)."""
    try:
        config = KubeConfig.from_env().get(context) if context else None
        return Client(config=config, namespace=namespace, field_manager=FIELD_MANAGER)
    except Exception as exc:  # lightkube raises plain exceptions for missing or unreadable configs
        where = f"context {context!r}" if context else "the current context"
        raise Conflict(f"cannot use {where} of your kubeconfig ({exc}); check `kubectl config get-contexts`") from None


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

    def rollout_done(self, kind: str, name: str) -> bool:
        """Every replica updated to the newest generation and available, and no old pod left."""
        obj = self.client.get(WORKLOADS[kind], name, namespace=self.namespace).to_dict()
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
