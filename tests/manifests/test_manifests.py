"""Every manifest validates offline against the Kubernetes schemas, and says what we rely on.

kubernetes-validate ships the JSON schemas of each Kubernetes release inside the package; the
sockets are blocked while it runs, to prove no schema is fetched.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import yaml

from ml_cache.validation.manifest import DEFAULT_TEMPLATE, validation_pod_manifest
from tests.conftest import REPO

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -r requirements-dev.txt")

MANIFESTS = REPO / "manifests"
# 1.33 is the cluster version the config and terraform/ default to; the newest the package knows too.
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
EXPECTED = {"pod-cached.yaml", "pod-uncached.yaml", "nvidia-device-plugin.yaml"}
# the validation pod template is code's data: it ships inside the package (plugins/ml_cache/defaults/)
PATHS = {**{name: MANIFESTS / name for name in EXPECTED}, "validation-pod.yaml": Path(str(DEFAULT_TEMPLATE))}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def load(name: str) -> dict:
    (doc,) = documents(PATHS[name])
    return doc


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("manifest validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def assert_valid(doc: dict, version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{doc['kind']} {doc['metadata'].get('name')} invalid for {version}: "
                    f"{str(error).splitlines()[0]}")


def test_the_expected_manifests_exist():
    assert {path.name for path in MANIFESTS.glob("*.yaml")} == EXPECTED


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", sorted(PATHS))
def test_manifest_validates_offline(name, version, offline):
    for doc in documents(PATHS[name]):
        assert_valid(doc, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_validation_pod_validates_offline(version, offline):
    pod = validation_pod_manifest(namespace="ml-cache", image="nvcr.io/nvidia/pytorch:24.08-py3",
                                  node_name="ip-10-0-12-34.us-west-2.compute.internal",
                                  active_deadline_seconds=600, run_id="manual__2026-11-29T02:36:21+00:00",
                                  command=["/bin/sh", "-c", "echo ready"])
    assert_valid(pod, version)


def test_strict_validation_catches_a_misspelt_field(offline):
    pod = load("validation-pod.yaml")
    pod["spec"]["containers"][0]["imagePullPolicyy"] = "IfNotPresent"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolicyy"):
        kubernetes_validate.validate(pod, KUBERNETES_VERSIONS[0], strict=True)


def node_affinity(pod: dict) -> dict[str, list[str]]:
    (term,) = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert all(expr["operator"] == "In" for expr in term["matchExpressions"])
    return {expr["key"]: expr["values"] for expr in term["matchExpressions"]}


def test_cached_and_uncached_differ_only_in_the_cache():
    cached, uncached = load("pod-cached.yaml"), load("pod-uncached.yaml")
    (cached_container,), (uncached_container,) = cached["spec"]["containers"], uncached["spec"]["containers"]
    assert cached_container["image"] == uncached_container["image"] == "nvcr.io/nvidia/pytorch:24.08-py3"
    assert cached_container["imagePullPolicy"] == uncached_container["imagePullPolicy"] == "IfNotPresent"
    assert (cached_container["command"], cached_container["args"]) == (uncached_container["command"],
                                                                         uncached_container["args"])
    assert cached_container["resources"] == uncached_container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    cached_nodes, uncached_nodes = node_affinity(cached), node_affinity(uncached)
    # the same instance type: the reference's baseline ran on another node type
    assert cached_nodes["node.kubernetes.io/instance-type"] == ["g6e.xlarge"]
    assert uncached_nodes["node.kubernetes.io/instance-type"] == ["g6e.xlarge"]
    assert cached_nodes["ml-cache/enabled"] == ["true"] and uncached_nodes["ml-cache/enabled"] == ["false"]
    assert cached["spec"]["tolerations"] == uncached["spec"]["tolerations"] == [GPU_TOLERATION]
    assert {k: v for k, v in cached_nodes.items() if k != "ml-cache/enabled"} == \
        {k: v for k, v in uncached_nodes.items() if k != "ml-cache/enabled"}


def test_cache_label_matches_what_terraform_puts_on_gpu_nodes():
    node_groups = (REPO / "terraform" / "node_groups.tf")
    if not node_groups.exists():
        pytest.skip("terraform/node_groups.tf not present")
    assert re.search(r'"ml-cache/enabled"\s*=\s*"true"', node_groups.read_text())


def test_validation_pod_template_is_what_the_proof_needs():
    pod = load("validation-pod.yaml")
    spec = pod["spec"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ml-container-cache"
    assert "nodeName" in spec and "nodeSelector" not in spec and "affinity" not in spec
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["tolerations"] == [GPU_TOLERATION]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] > 0
    (container,) = spec["containers"]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})  # proving the cache needs no GPU
    assert container["resources"]["limits"]["memory"] == "128Mi"


def test_device_plugin_runs_on_gpu_nodes_only():
    daemonset = load("nvidia-device-plugin.yaml")
    assert daemonset["kind"] == "DaemonSet" and daemonset["metadata"]["namespace"] == "kube-system"
    template = daemonset["spec"]["template"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    spec = template["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert GPU_TOLERATION in spec["tolerations"]
    (container,) = spec["containers"]
    assert container["image"].startswith("nvcr.io/nvidia/k8s-device-plugin:v0.17.")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    assert mounts["device-plugin"] == volumes["device-plugin"] == "/var/lib/kubelet/device-plugins"
