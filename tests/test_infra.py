"""infra/ manifests against their published schemas: Kubernetes' own (kubernetes-validate, strict:
an unknown field is an error) and KubeRay's RayCluster CRD (its openAPIV3Schema, vendored in
infra/schemas/). Validation only: no Kubernetes cluster runs here."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

INFRA = Path(__file__).resolve().parents[1] / "infra"
KUBERNETES = "1.33.0"
MANIFESTS = ["kuberay-cluster.yaml", "prefect-worker-k8s.yaml"]


def documents() -> list[tuple[str, dict]]:
    return [
        (f"{name}#{i}", doc)
        for name in MANIFESTS
        for i, doc in enumerate(yaml.safe_load_all((INFRA / name).read_text()))
        if doc
    ]


def raycluster_schema() -> dict:
    (path,) = (INFRA / "schemas").glob("raycluster-v1-*.schema.json.gz")
    return json.loads(gzip.decompress(path.read_bytes()))


@pytest.mark.parametrize("name,doc", documents(), ids=[n for n, _ in documents()])
def test_every_manifest_matches_its_published_schema(name, doc):
    if doc["apiVersion"] == "ray.io/v1":
        jsonschema.validate(doc, raycluster_schema())
    else:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_validators_catch_mistakes():
    """The checks above can fail: a misspelled field and a wrong type are refused by each."""
    (ray,) = [doc for _, doc in documents() if doc["kind"] == "RayCluster"]
    broken = json.loads(json.dumps(ray))
    broken["spec"]["workerGroupSpecs"][0]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, raycluster_schema())
    (deployment,) = [doc for _, doc in documents() if doc["kind"] == "Deployment"]
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_worker_and_the_cluster_agree():
    """The Prefect worker points at the cluster's head service and serves the deployments' pool."""
    by_kind = {doc["kind"]: doc for _, doc in documents()}
    env = {e["name"]: e["value"] for e in by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    ray = by_kind["RayCluster"]["metadata"]
    assert env["MMETL_RAY_ADDRESS"].startswith(f"ray://{ray['name']}-head-svc.{ray['namespace']}.svc:")
    pool = yaml.safe_load((INFRA.parent / "deployments" / "prefect.yaml").read_text())["definitions"]["work_pool"][
        "name"
    ]
    assert by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]["command"][-3] == pool
