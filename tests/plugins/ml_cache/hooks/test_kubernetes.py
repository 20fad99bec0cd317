"""CacheKubernetesHook against the local cloud's Kubernetes API stand-in, whose kubelet runs real pods.

Access through a kubernetes connection, and through the EKS path (a generated kubeconfig that is
gone once the client is built). The cluster fixtures are the devstack tests' own.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import volumes
from ml_cache.hooks.kubernetes import CacheKubernetesHook
from ml_cache.validation.manifest import run_selector, validation_pod_manifest
from ml_cache.validation.pods import nodegroup_selector
from tests.devstack.conftest import cloud, wait_for  # noqa: F401 - the session's local cloud
from tests.devstack.test_k8s_api import GROUP, cluster, image  # noqa: F401 - two GPU nodes, the small image

MISSING = volumes.data_plane_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
CONN_ID = "kubernetes_hook_test"


@pytest.fixture
def kubeconfig(cloud, monkeypatch) -> str:  # noqa: F811
    with urllib.request.urlopen(cloud.endpoint + "/_devstack/state", timeout=10) as answer:  # noqa: S310
        path = json.load(answer)["kubernetes"]["kubeconfig"]
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}",
                       json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": path}}))
    return path


def test_validation_pod_round_trip_through_a_connection(kubeconfig, cluster, image) -> None:  # noqa: F811
    hook = CacheKubernetesHook(conn_id=CONN_ID)
    nodes = [n for n in hook.list_nodes(nodegroup_selector(GROUP)) if n["metadata"]["name"].endswith(".internal")]
    assert nodes and all(n["spec"]["providerID"].startswith("aws:///") for n in nodes)  # plain camelCase dicts
    assert hook.list_nodes(nodegroup_selector("nope")) == []

    run_id = "manual__hook-test"
    manifest = validation_pod_manifest(namespace="default", image=image, node_name=nodes[0]["metadata"]["name"],
                                       active_deadline_seconds=120, run_id=run_id)
    name = manifest["metadata"]["name"]
    try:
        assert hook.create_pod(manifest) is True
        assert hook.create_pod(manifest) is False  # already there: an earlier poke's
        pod = wait_for(lambda: (p := hook.read_pod(name))["status"].get("phase") in ("Succeeded", "Failed") and p,
                       120, "validation pod finished")
        assert pod["status"]["phase"] == "Succeeded" and pod["metadata"]["creationTimestamp"]
        reasons = [event["reason"] for event in hook.list_pod_events(name)]
        assert "Pulled" in reasons and "Started" in reasons
        assert [p["metadata"]["name"] for p in hook.list_pods(run_selector(run_id))] == [name]
        assert hook.list_pods(run_selector("another-run")) == []
    finally:
        assert hook.delete_pods(run_selector(run_id)) == [name]
    assert hook.list_pods(run_selector(run_id)) == []
    assert hook.delete_pods(run_selector(run_id)) == []  # nothing left is fine


def test_eks_kubeconfig_is_needed_only_to_connect(kubeconfig, cluster, monkeypatch, tmp_path) -> None:  # noqa: F811
    from airflow.providers.amazon.aws.hooks.eks import EksHook

    asked = []

    @contextlib.contextmanager
    def generate_config_file(self, eks_cluster_name: str, pod_namespace: str | None) -> Iterator[str]:
        asked.append((self.aws_conn_id, eks_cluster_name, pod_namespace))
        copy = Path(shutil.copy(kubeconfig, tmp_path / "generated-kubeconfig"))
        try:
            yield str(copy)
        finally:
            copy.unlink()  # as the provider does: the file is temporary

    monkeypatch.setattr(EksHook, "generate_config_file", generate_config_file)
    hook = CacheKubernetesHook(eks_cluster=cluster, aws_conn_id="aws_default", namespace="default")
    assert hook.list_nodes(nodegroup_selector(GROUP))
    assert asked == [("aws_default", cluster, "default")]
    assert not (tmp_path / "generated-kubeconfig").exists() and hook.list_pods("app=none") == []
    assert len(asked) == 1  # one client per hook


def test_a_hook_needs_a_connection_or_a_cluster() -> None:
    with pytest.raises(ValueError, match="conn_id or an eks_cluster"):
        CacheKubernetesHook()
