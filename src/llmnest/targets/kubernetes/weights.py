"""The weights volume: where the engine pods read the model from, and the objects that provide it.

Three sources, all mounted read-only so any number of pods on any nodes can share them (a
ReadWriteOnce volume is what blocks a second replica in users' reports):
- `oss://BUCKET/PATH`: a static OSS volume through ACK's CSI driver `ossplugin.csi.alibabacloud.com`
  (PV + PVC bound by name, ReadOnlyMany), as ACK's "Mount a statically provisioned OSS volume" shows;
- `hub`: a ReadWriteMany claim filled once by a fetch Job (KubeAI's model loader pattern), the engine
  pods waiting in an init container until the Job's completion marker exists;
- `pvc:CLAIM`: a claim the user already filled, holding the model directory.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

from ...catalog import find_model
from ...runtimes.docker import CONTAINER_MODEL_ROOT, container_model_path
from ...spec import DeploymentSpec
from .names import meta, name_of
from .placement import KubernetesPlacement

OSS_DRIVER = "ossplugin.csi.alibabacloud.com"
VOLUME = "weights"
FETCHED_MARKER = ".llmnest-fetched"
# allow_other lets the engine's user read the FUSE mount; ro because nothing writes weights
OSS_MOUNT_OPTIONS = "-o ro -o allow_other -o max_stat_cache_size=0"


def model_dir(spec: DeploymentSpec) -> str:
    """Where the engine finds the weights: the docker runtime's /root/llm-model/<model id>."""
    return container_model_path(spec)


def objects(spec: DeploymentSpec, place: KubernetesPlacement, image: str) -> list[dict]:
    """PV/PVC (oss), PVC and fetch Job (hub), or nothing (an existing claim)."""
    kind = place.weights_kind
    if kind == "claim":
        return []
    size = {"storage": f"{place.weights_gib}Gi"}
    claim_meta = meta(spec.name, "weights", place.namespace)
    if kind == "oss":
        bucket, path = place.oss_bucket_path
        csi: dict = {"driver": OSS_DRIVER, "volumeHandle": name_of(spec.name, "weights"), "readOnly": True,
                     "volumeAttributes": {"bucket": bucket, "url": place.oss_endpoint or "", "path": path,
                                          "otherOpts": OSS_MOUNT_OPTIONS}}
        if place.oss_secret:
            csi["nodePublishSecretRef"] = {"name": place.oss_secret, "namespace": place.namespace}
        pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": meta(spec.name, "weights", None),
              "spec": {"capacity": size, "accessModes": ["ReadOnlyMany"], "persistentVolumeReclaimPolicy": "Retain",
                       "storageClassName": "", "csi": csi}}
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": claim_meta,
               "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "",
                        "volumeName": name_of(spec.name, "weights"), "resources": {"requests": size}}}
        return [pv, pvc]
    pvc_spec: dict = {"accessModes": ["ReadWriteMany"], "resources": {"requests": size}}
    if place.storage_class:
        pvc_spec["storageClassName"] = place.storage_class
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": claim_meta, "spec": pvc_spec}
    return [pvc, _fetch_job(spec, place, image)]


def _fetch_job(spec: DeploymentSpec, place: KubernetesPlacement, image: str) -> dict:
    """A one-off Job that downloads the model into the shared claim (resumable: a retry continues)."""
    target = model_dir(spec)
    script = (f"modelscope download --model {shlex.quote(_hub_id(spec))} --local_dir {shlex.quote(target)} "
              f"&& touch {shlex.quote(str(PurePosixPath(target) / FETCHED_MARKER))}")
    container = {"name": "fetch", "image": image, "command": ["sh", "-c", script],
                 "volumeMounts": [{"name": VOLUME, "mountPath": str(CONTAINER_MODEL_ROOT)}],
                 "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(spec.name, "fetch", place.namespace),
            "spec": {"backoffLimit": 4, "ttlSecondsAfterFinished": 86400,
                     "template": {"metadata": {"labels": meta(spec.name, "fetch", None)["labels"]},
                                  "spec": {"restartPolicy": "OnFailure", "containers": [container],
                                           "volumes": [_claim_volume(spec, place, read_only=False)]}}}}


def _hub_id(spec: DeploymentSpec) -> str:
    model = find_model(spec.model)
    return model.modelscope_id if model else spec.model


def _claim_volume(spec: DeploymentSpec, place: KubernetesPlacement, read_only: bool) -> dict:
    claim = place.claim if place.weights_kind == "claim" else name_of(spec.name, "weights")
    return {"name": VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}


def pod_volume(spec: DeploymentSpec, place: KubernetesPlacement) -> dict:
    return _claim_volume(spec, place, read_only=True)


def pod_mount(spec: DeploymentSpec, place: KubernetesPlacement) -> dict:
    """The hub claim holds /root/llm-model/<id>; an OSS path or a user's claim is the model directory itself."""
    where = str(CONTAINER_MODEL_ROOT) if place.weights_kind == "hub" else model_dir(spec)
    return {"name": VOLUME, "mountPath": where, "readOnly": True}


def wait_container(spec: DeploymentSpec, place: KubernetesPlacement, image: str) -> dict | None:
    """With hub weights: an init container that holds the engine until the fetch Job has finished."""
    if place.weights_kind != "hub":
        return None
    marker = str(PurePosixPath(model_dir(spec)) / FETCHED_MARKER)
    script = f"until [ -f {shlex.quote(marker)} ]; do echo waiting for the weights fetch job; sleep 10; done"
    return {"name": "wait-weights", "image": image, "command": ["sh", "-c", script],
            "volumeMounts": [pod_mount(spec, place)]}
