"""Every manifest rendered for the seed's models is valid for Kubernetes 1.30-1.34 (ACK's versions).

Built-in kinds: kubernetes-validate's strict schemas (unknown fields fail) through its Python API; a
kind or version it has no schema for fails (its CLI would only warn). Custom resources
(LeaderWorkerSet, KEDA ScaledObject): jsonschema against the openAPIV3Schema of their published CRDs,
vendored in tests/data/kubernetes/ (source and version in each file's header), made strict the way the
API server's strict field validation is: an unknown field fails unless the schema preserves unknowns.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from llmnest.targets.kubernetes import manifests
from tests.unit.kubernetes.cases import ENGINE_KEY, PLACEMENTS, gpu_spec, placement, seed_cases

VERSIONS = ["1.30", "1.31", "1.32", "1.33", "1.34"]
CRD_DIR = Path(__file__).parents[2] / "data" / "kubernetes"
CRDS = {("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): "lws-leaderworkersets-crd.yaml",
        ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobjects-crd.yaml"}


@cache
def rendered(model: str, nodes: int, engine: str, kind: str) -> tuple[dict, ...]:
    return tuple(manifests.render(gpu_spec(model, nodes, engine), placement(kind, nodes), ENGINE_KEY))


def _strict(schema: dict) -> dict:
    """additionalProperties: false wherever properties are listed and unknown fields are not preserved."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Validator:
    crd = yaml.safe_load((CRD_DIR / CRDS[(api_version, kind)]).read_text())
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version and v["served"])
    schema = _strict(served["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is the API server's, checked below
    return jsonschema.Draft7Validator(schema)


def validate(obj: dict, version: str) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in CRDS:
        crd_validator(*key).validate(obj)
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]},
                                     version, strict=True)  # the metadata, against ObjectMeta
        return
    used = kubernetes_validate.validate(obj, version, strict=True)  # SchemaNotFoundError fails the test
    assert used == version, f"{obj['kind']}: schema of {used} used for {version}"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("model", "nodes", "engine"), seed_cases())
def test_every_manifest_of_the_seed_models_is_schema_valid(model: str, nodes: int, engine: str, version: str):
    kinds = set()
    for kind in PLACEMENTS:
        for obj in rendered(model, nodes, engine, kind):
            validate(obj, version)
            kinds.add(obj["kind"])
    expected = {"Namespace", "Secret", "PersistentVolume", "PersistentVolumeClaim", "Job", "Service",
                "PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject", "Deployment"}
    assert expected | ({"LeaderWorkerSet"} if nodes == 2 else set()) <= kinds


@pytest.mark.parametrize("version", VERSIONS)
def test_the_validation_catches_injected_errors(version: str):
    objs = {o["kind"]: o for o in rendered("Qwen/QwQ-32B", 1, "vllm", "hub-hpa") if "gateway" not in o["metadata"]["name"]}
    lws = {o["kind"]: o for o in rendered("deepseek-ai/DeepSeek-R1", 2, "vllm", "hub-hpa")}["LeaderWorkerSet"]
    keda = {o["kind"]: o for o in rendered("Qwen/QwQ-32B", 1, "vllm", "oss-keda")}["ScaledObject"]
    bad = []
    d = copy.deepcopy(objs["Deployment"])
    d["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["httpGet"]["paht"] = "/health"
    bad.append(d)
    d = copy.deepcopy(objs["Deployment"])
    d["spec"]["replicas"] = "two"
    bad.append(d)
    h = copy.deepcopy(objs["HorizontalPodAutoscaler"])
    h["apiVersion"] = "autoscaling/v2beta2"  # removed in 1.26: no schema is a failure, not a warning
    bad.append(h)
    w = copy.deepcopy(lws)
    w["spec"]["leaderWorkerTemplate"]["sizee"] = 2
    bad.append(w)
    w = copy.deepcopy(lws)
    w["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "Always"
    bad.append(w)
    k = copy.deepcopy(keda)
    k["spec"]["triggers"][0]["metadata"]["threshold"] = 5  # a map of strings
    bad.append(k)
    for obj in bad:
        with pytest.raises((kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError,
                            jsonschema.ValidationError)):
            validate(obj, version)


def test_the_vendored_crds_name_their_source():
    for path in CRD_DIR.glob("*-crd.yaml"):
        header = path.read_text().splitlines()[:2]
        assert header[0].startswith("# Source: https://github.com/") and header[1].startswith("# Version: ")
